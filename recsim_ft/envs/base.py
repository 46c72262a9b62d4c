"""The shared contract of every recsim-ft environment: the vectorized API that the collector,
the trainer and the evaluator use, described in the vocabulary of ``recsim_ft.schema``.

Every environment is a contextual bandit: ``reset()`` draws a user, ``step(action)`` recommends
item ``action`` to that user and returns the reward. The Gymnasium methods are thin wrappers
over the vectorized methods below, so one code path serves a single ``step`` and a sample of
160,000 users.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from recsim_ft import schema
from recsim_ft._deprecation import moved_names
from recsim_ft.checks import check_action, check_actions, check_choice, check_int
from recsim_ft.protocol import SPLITS

#: The feature vocabulary lived here before version 0.2; it is ``recsim_ft.schema`` now.
__getattr__ = moved_names(
    __name__,
    {name: f"recsim_ft.schema.{name}" for name in ("Batch", "Feature", "FeatureKind", "Schema")},
)

#: spawn key of the validation users' random stream (independent of the test users' stream)
VALIDATION_STREAM = 0x7A11D


class RecEnv(gym.Env):
    """Base class of the recsim-ft contextual-bandit environments.

    Subclasses set ``user_schema``, ``item_schema`` and ``n_items`` in ``__init__`` (then call
    ``self._init_spaces(horizon)``) and implement ``sample_users``, ``item_table``,
    ``expected_reward`` and ``relevant``; they may override ``sample_reward`` (default: Bernoulli
    of the expected reward), ``test_users`` and ``sample_log``.
    """

    metadata = {"render_modes": []}
    #: (low, high) of a single reward
    reward_bounds: tuple[float, float] = (0.0, 1.0)

    user_schema: schema.Schema
    item_schema: schema.Schema
    n_items: int

    # -- vectorized API -------------------------------------------------------------------------
    def sample_users(self, n: int, rng: np.random.Generator) -> schema.Batch:
        """Draw ``n`` users (with replacement from the env's population)."""
        raise NotImplementedError

    def item_table(self) -> schema.Batch:
        """Features of every item, row ``i`` = action ``i``; ``ids`` = ``arange(n_items)``."""
        raise NotImplementedError

    def expected_reward(self, users: schema.Batch) -> np.ndarray:
        """(n_users, n_items) float64 mean reward of recommending each item to each user."""
        raise NotImplementedError

    def relevant(self, users: schema.Batch) -> np.ndarray:
        """(n_users, n_items) bool: the items that count as hits in evaluation."""
        raise NotImplementedError

    def sample_reward(
        self, users: schema.Batch, items: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Reward of recommending ``items[i]`` to user ``i``; default Bernoulli(expected)."""
        items = check_actions(items, self.n_items, len(users))
        p = self.expected_reward(users)[np.arange(len(users)), items]
        return (rng.random(len(users)) < p).astype(np.float32)

    def test_users(self, n: int = 100, seed: int = 0) -> schema.Batch:
        """The held-out evaluation users; default: ``n`` fresh users drawn with ``seed``."""
        return self.sample_users(n, np.random.default_rng(seed))

    def validation_users(self, n: int = 100, seed: int = 0) -> schema.Batch:
        """Users for choosing hyperparameters (``recsim-ft tune``), so that the choice never sees
        the test users; default: ``n`` fresh users from a stream independent of the test users'."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VALIDATION_STREAM,)))
        return self.sample_users(n, rng)

    def eval_users(self, split: str, n: int = 100, seed: int = 0) -> schema.Batch:
        """``test_users`` or ``validation_users`` by name, with a clear error for anything else."""
        check_choice("split", split, SPLITS)
        return self.test_users(n, seed) if split == "test" else self.validation_users(n, seed)

    def sample_log(
        self, n: int, rng: np.random.Generator
    ) -> tuple[schema.Batch, np.ndarray, np.ndarray]:
        """The default behaviour policy: users, actions and propensities of ``n`` logged events.

        Default: fresh users, uniform actions (propensity 1 / n_items).
        """
        users = self.sample_users(n, rng)
        actions = rng.integers(0, self.n_items, size=n)
        return users, actions, np.full(n, 1.0 / self.n_items)

    # -- Gymnasium API --------------------------------------------------------------------------
    def _init_spaces(self, horizon: int = 1) -> None:
        self.horizon = check_int("horizon", horizon, low=1)
        self.observation_space = self.user_schema.space()
        self.action_space = spaces.Discrete(self.n_items)
        self.reward_range = self.reward_bounds
        self._user: schema.Batch | None = None
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._user = self.sample_users(1, self.np_random)
        self._t = 0
        return self._user.observation(0, self.user_schema), {"user_id": int(self._user.ids[0])}

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._user is None:
            raise RuntimeError("call reset() before step()")
        action = check_action(action, self.n_items)
        expected = float(self.expected_reward(self._user)[0, action])
        reward = float(self.sample_reward(self._user, np.array([action]), self.np_random)[0])
        self._t += 1
        terminated = self._t >= self.horizon
        info = {"user_id": int(self._user.ids[0]), "expected_reward": expected}
        return self._user.observation(0, self.user_schema), reward, terminated, False, info

    @property
    def spec_kwargs(self) -> dict[str, Any]:
        """The ``gym.make`` kwargs that rebuild this env (for logs and saved models)."""
        return dict(self.spec.kwargs) if self.spec is not None else {}
