"""The running episodes of an env, one per slot: one slot behind ``RecEnv.step``, N behind the
native vector env (``recsim_ft.envs.vector``), so both step by the same vectorized code.

A slot holds its user, the step count and, in session mode, the hidden session state and the
recent history that the observation shows. Every step is one call of ``env.respond`` on all
stepping slots at once, then (sessions) one call of ``env.session_advance`` and one uniform draw
per slot for leaving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recsim_ft.schema import Batch

if TYPE_CHECKING:  # for the annotations: base imports this module
    from recsim_ft.envs.base import RecEnv


@dataclass
class StepResult:
    """One step of every slot; slots that did not step hold 0 / False / -1."""

    rewards: np.ndarray  # (n,) float64
    expected: np.ndarray  # (n,) float64, the expected reward of the action shown
    terminated: np.ndarray  # (n,) bool
    truncated: np.ndarray  # (n,) bool
    consumed: np.ndarray  # (n,) int64, the item taken (-1: none)
    positions: np.ndarray | None  # (n,) int64 chosen slate position (-1: none); slates only


class Episodes:
    """``n`` independent episodes of ``env``, stepped together."""

    def __init__(self, env: RecEnv, n: int) -> None:
        self.env, self.n = env, n
        self.users: Batch | None = None
        self.t = np.zeros(n, np.int64)
        self.state: dict[str, np.ndarray] = {}
        self.terminated = np.zeros(n, bool)
        self.truncated = np.zeros(n, bool)
        history = (n, env.history_length if env.session else 0)
        self.recent_items = np.full(history, env.n_items, np.int64)  # n_items: "none"
        self.recent_rewards = np.zeros(history, np.float32)

    @property
    def ended(self) -> np.ndarray:
        """(n,) bool: the slots whose episode has terminated or been truncated."""
        return self.terminated | self.truncated

    def start(self, mask: np.ndarray, rng: np.random.Generator) -> None:
        """New users (and sessions) for the slots in ``mask``."""
        fresh = self.env.sample_users(int(mask.sum()), rng)
        everything = self.users is None or mask.all()
        if everything:  # own copies: slots are overwritten in place later
            self.users = Batch(fresh.numeric.copy(), fresh.categorical.copy(), fresh.ids.copy())
        else:
            for name in ("numeric", "categorical", "ids"):
                getattr(self.users, name)[mask] = getattr(fresh, name)
        if self.env.session:
            state = self.env.session_start(fresh)
            if everything:
                self.state = {key: value.copy() for key, value in state.items()}
            else:
                for key, value in state.items():
                    self.state[key][mask] = value
            self.recent_items[mask] = self.env.n_items
            self.recent_rewards[mask] = 0.0
        self.t[mask] = 0
        self.terminated[mask] = False
        self.truncated[mask] = False

    def step(
        self, actions: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None
    ) -> StepResult:
        """Show ``actions[i]`` to the user of every slot in ``mask`` (default: all) and advance
        those episodes; ``actions`` are checked items (n,) or slates (n, k)."""
        env, n = self.env, self.n
        every = mask is None or mask.all()
        mask = np.ones(n, bool) if mask is None else mask
        result = StepResult(
            np.zeros(n),
            np.zeros(n),
            np.zeros(n, bool),
            np.zeros(n, bool),
            np.full(n, -1, np.int64),
            None if env.slate_size is None else np.full(n, -1, np.int64),
        )
        if not mask.any():
            return result
        users = self.users if every else self.users[mask]
        state = {key: value[mask] for key, value in self.state.items()} if env.session else None
        response = env.respond(users, actions if every else actions[mask], rng, state)
        result.rewards[mask] = response.rewards
        result.expected[mask] = response.expected
        result.consumed[mask] = response.consumed
        if response.positions is not None:
            result.positions[mask] = response.positions
        self.t[mask] += 1
        if env.session:
            state, leaving = env.session_advance(users, state, response.consumed, response.rewards)
            for key, value in state.items():
                self.state[key][mask] = value
            left = rng.random(len(users)) < leaving
            self._remember(mask, response.consumed, response.rewards)
            result.terminated[mask] = left
            result.truncated[mask] = ~left & (self.t[mask] >= env.session_length)
        else:
            result.terminated[mask] = self.t[mask] >= env.horizon
        self.terminated[mask] = result.terminated[mask]
        self.truncated[mask] = result.truncated[mask]
        return result

    def _remember(self, mask: np.ndarray, items: np.ndarray, rewards: np.ndarray) -> None:
        """Push the consumed items and their rewards onto the slots' recent history."""
        if self.recent_items.shape[1] == 0:
            return
        self.recent_items[mask] = np.column_stack(
            [np.where(items >= 0, items, self.env.n_items), self.recent_items[mask][:, :-1]]
        )
        self.recent_rewards[mask] = np.column_stack(
            [rewards.astype(np.float32), self.recent_rewards[mask][:, :-1]]
        )

    def _observation_rows(self) -> Batch:
        if not self.env.session:
            return self.users
        numeric = np.column_stack(
            [self.users.numeric, self.recent_rewards, self.t.astype(np.float32)]
        )
        categorical = np.column_stack([self.users.categorical, self.recent_items])
        return Batch(numeric, categorical, self.users.ids)

    def observations(self) -> dict[str, np.ndarray]:
        """Every slot's observation, batched (fresh arrays)."""
        return self._observation_rows().observations(self.env.observation_schema)

    def observation(self, i: int) -> dict[str, np.ndarray]:
        """Slot ``i``'s observation (fresh arrays)."""
        return self._observation_rows().observation(i, self.env.observation_schema)

    def outlook(self) -> tuple[np.ndarray, np.ndarray]:
        """(n, n_items) expected reward of each item now, and probability that the episode goes
        on after it: the hidden-state view of oracles and planners."""
        env = self.env
        if env.session:
            return (
                env.session_expected_reward(self.users, self.state),
                env.session_continue_probability(self.users, self.state),
            )
        going_on = (self.t + 1 < env.horizon).astype(np.float64)
        return env.expected_reward(self.users), np.repeat(going_on[:, None], env.n_items, axis=1)
