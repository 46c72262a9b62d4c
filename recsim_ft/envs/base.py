"""The shared contract of every recsim-ft environment: the vectorized API that the collector,
the trainer and the evaluator use, described in the vocabulary of ``recsim_ft.schema``, and the
two opt-in modes every env has (slates and sessions; see ``RecEnv``).

By default every environment is a contextual bandit: ``reset()`` draws a user, ``step(action)``
recommends item ``action`` to that user and returns the reward. The Gymnasium methods are thin
wrappers over the vectorized methods below (through ``recsim_ft.envs.episodes``), so one code
path serves a single ``step``, the native vector env and a sample of 160,000 users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from recsim_ft import schema
from recsim_ft._deprecation import moved_names
from recsim_ft.checks import (
    check_action,
    check_actions,
    check_choice,
    check_float,
    check_int,
    check_slates,
)
from recsim_ft.memory import check_fits
from recsim_ft.protocol import SPLITS

#: The feature vocabulary lived here before version 0.2; it is ``recsim_ft.schema`` now.
__getattr__ = moved_names(
    __name__,
    {name: f"recsim_ft.schema.{name}" for name in ("Batch", "Feature", "FeatureKind", "Schema")},
)

#: spawn key of the validation users' random stream (independent of the test users' stream)
VALIDATION_STREAM = 0x7A11D
#: Memory a draw of users takes, as a multiple of their features' bytes (the temporaries of
#: generating them)
USER_DRAW_OVERHEAD = 8

#: The slate and session arguments every env takes, with their defaults (see ``RecEnv``).
MODE_DEFAULTS: dict[str, Any] = {
    "slate_size": None,
    "choice_scale": 3.0,
    "no_choice_utility": 0.0,
    "session": False,
    "session_length": 50,
    "history_length": 5,
    "dynamics": None,
}


@dataclass
class Response:
    """What ``n`` users did when shown one action each (``RecEnv.respond``).

    ``consumed`` is the item each user took (the recommended one; in slate mode the chosen one,
    -1 when they chose nothing), ``positions`` the chosen slate position (-1: none; None outside
    slate mode), ``rewards`` the reward of the consumed item (0 for nothing) and ``expected``
    the expected reward of the action shown (of a slate: ``sum_j P(j) q_j``).
    """

    rewards: np.ndarray
    expected: np.ndarray
    consumed: np.ndarray
    positions: np.ndarray | None


class RecEnv(gym.Env):
    """Base class of the recsim-ft environments.

    Subclasses set ``user_schema``, ``item_schema`` and ``n_items`` in ``__init__`` (then call
    ``self._init_spaces(horizon, **modes)``) and implement ``sample_users``, ``item_table``,
    ``expected_reward`` and ``relevant``; they may override ``sample_reward`` (default: Bernoulli
    of the expected reward), ``test_users`` and ``sample_log``. An env with a session mode also
    sets ``session_parameters`` and implements the four ``session_*`` methods.

    ## Modes

    Every env is a contextual bandit by default, exactly as in the paper. Two keyword arguments
    of ``gym.make`` turn on, separately or together, what a bandit cannot show. They are kwargs
    of the existing ids rather than new ids, as Gymnasium does for variants of one problem
    (``LunarLander-v3``'s ``continuous``, ``FrozenLake-v1``'s ``is_slippery``): the users, items
    and reward rule stay those of the id, the two modes combine freely (new ids would need three
    more per env), and a log or model records them in its env kwargs like any other argument.

    **Slates** (``slate_size=k``): the action is a slate of ``k`` items,
    ``MultiDiscrete([n_items] * k)``, position 0 first. The user chooses at most one item by a
    multinomial logit with a no-choice option. With ``q_i`` the expected reward of item ``i``
    for this user (in a session: in the current state), ``tau = choice_scale`` and
    ``q_0 = no_choice_utility``::

        P(position j) = exp(tau q_{s_j}) / (exp(tau q_0) + sum_l exp(tau q_{s_l}))
        P(nothing)    = exp(tau q_0)     / (exp(tau q_0) + sum_l exp(tau q_{s_l}))

    The reward is that of the chosen item, drawn by the env's reward rule (``sample_reward``),
    and 0 when nothing is chosen. An item repeated in a slate is shown once, at its first
    position (the later one is an empty slot): every element of the action space is a valid
    action, so random actions (``action_space.sample()``, a fresh RL policy) work. ``info``
    adds ``chosen_position`` and ``chosen_item`` (-1: nothing); ``info["expected_reward"]`` is
    the slate's ``sum_j P(j) q_{s_j}``. ``sample_slate_log`` is the slate behaviour policy of
    ``collect``: uniformly random slates of distinct items, whose propensities are exact.

    **Sessions** (``session=True``): the user stays and changes with what they consume; each
    env's docstring gives its equations ("Sessions"). The observation adds what a recommender
    could know, never the hidden state: the ``history_length`` items the user last consumed
    (categorical features ``recent_item_1`` (most recent) ..., with one more category
    ``"none"``), their rewards (numeric ``recent_reward_1`` ..., 0 for none) and ``step``, the
    number of steps taken (see ``observation_schema``). The episode is ``terminated`` when the
    user leaves (the dynamics decide) and ``truncated`` after ``session_length`` steps.
    ``horizon`` belongs to the bandit mode and must stay 1. The hidden state is for oracles and
    planners only: ``session_outlook()`` gives, per item, the expected reward now and the
    probability that the session goes on after it.

    Arguments (every env): ``slate_size`` (None: one item per step; else an int in
    ``[1, n_items]``), ``choice_scale`` (tau >= 0, default 3) and ``no_choice_utility`` (q_0,
    default 0), only with ``slate_size``; ``session`` (False), ``session_length`` (50),
    ``history_length`` (5, >= 0) and ``dynamics`` (a dict overriding some of the env's
    ``session_parameters``, by name), only with ``session=True``. All randomness comes from
    ``self.np_random``, so ``reset(seed=s)`` replays a session exactly.

    ## Episode End

    Bandit mode (slates or not): ``terminated`` after ``horizon`` steps (default 1). Session
    mode: ``terminated`` when the user leaves, ``truncated`` after ``session_length`` steps.
    Calling ``step`` again after either, without ``reset()``, is an error.
    """

    metadata = {"render_modes": []}
    #: (low, high) of a single reward
    reward_bounds: tuple[float, float] = (0.0, 1.0)
    #: The parameters of the env's session dynamics: name -> (default, low, high); an int
    #: default means an integer parameter. Empty: the env has no session mode.
    session_parameters: dict[str, tuple[float, float | None, float | None]] = {}

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
        return self.sample_users(check_int("n", n, low=0), np.random.default_rng(seed))

    def validation_users(self, n: int = 100, seed: int = 0) -> schema.Batch:
        """Users for choosing hyperparameters (``recsim-ft tune``), so that the choice never sees
        the test users; default: ``n`` fresh users from a stream independent of the test users'."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VALIDATION_STREAM,)))
        return self.sample_users(check_int("n", n, low=0), rng)

    def selection_users(
        self, n: int, seed: int, split: str, eval_n: int, eval_seed: int
    ) -> schema.Batch:
        """Validation users that choose a run's weights (early stopping): never one of the users
        that score the run, ``eval_users(split, eval_n, eval_seed)``. Default:
        ``validation_users(n, seed)``, fresh users, so never the same people; an env with a
        finite pool of users (H&M's customers) draws them from the pool without those."""
        check_choice("split", split, SPLITS)
        return self.validation_users(n, seed)

    def eval_users(self, split: str, n: int = 100, seed: int = 0) -> schema.Batch:
        """``test_users`` or ``validation_users`` by name, with a clear error for anything else
        (and for more users than this machine's memory holds, before any is drawn)."""
        check_choice("split", split, SPLITS)
        per_user = 4 * self.user_schema.n_numeric + 8 * self.user_schema.n_categorical + 8
        # drawing users takes several times their features' bytes in temporaries
        check_fits(f"{check_int('n', n, low=0):,} {split} users", USER_DRAW_OVERHEAD * n * per_user)
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

    def sample_dated_log(
        self, n: int, rng: np.random.Generator
    ) -> tuple[schema.Batch, np.ndarray, np.ndarray, np.ndarray | None]:
        """``sample_log`` and the day of each event (datetime64[D]), for an env whose events
        have dates (HMFashion-v0); default: ``sample_log``'s events and None (no dates)."""
        return *self.sample_log(n, rng), None

    # -- slates: the choice model and the slate behaviour policy --------------------------------
    def choice_probabilities(self, values: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(n, k) multinomial-logit probability that user ``i`` chooses position ``j`` of slate
        ``slates[i]``, given ``values`` (n, n_items), the users' expected rewards; the rest,
        ``1 - sum_j``, is the probability of choosing nothing. Repeats of an item get 0."""
        n, k = slates.shape
        utilities = self.choice_scale * values[np.arange(n)[:, None], slates]
        shown = first_occurrences(slates)
        utilities = np.where(shown, utilities, -np.inf)
        top = np.maximum(utilities.max(axis=1), self.choice_scale * self.no_choice_utility)
        weights = np.exp(utilities - top[:, None])
        nothing = np.exp(self.choice_scale * self.no_choice_utility - top)
        return weights / (weights.sum(axis=1) + nothing)[:, None]

    def slate_expected_reward(self, users: schema.Batch, slates: np.ndarray) -> np.ndarray:
        """(n,) expected reward of showing ``slates[i]`` (n, k) to user ``i`` outside a session:
        ``sum_j P(j) q_{s_j}``, the exact value of a slate (for off-policy ground truth)."""
        slates = check_slates(slates, self.n_items, (len(users), self._slate_size_or(slates)))
        values = self.expected_reward(users)
        chosen = self.choice_probabilities(values, slates)
        return (chosen * values[np.arange(len(users))[:, None], slates]).sum(axis=1)

    def sample_slate_log(
        self, n: int, rng: np.random.Generator
    ) -> tuple[schema.Batch, np.ndarray, np.ndarray, np.ndarray]:
        """The slate behaviour policy: users, slates and propensities of ``n`` logged slates.

        Fresh users and uniformly random slates of ``slate_size`` distinct items, in random
        order. Returns ``(users, slates (n, k), position_propensities (n, k), slate_propensities
        (n,))``: the probability that item ``slates[i, j]`` is at position ``j`` (``1 / n_items``)
        and that of the whole slate (``1 / (n_items (n_items - 1) ... (n_items - k + 1))``).
        """
        k = self._slate_size_or(None)
        users = self.sample_users(n, rng)
        keys = rng.random((n, self.n_items))
        smallest = np.argpartition(keys, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(keys, smallest, axis=1), axis=1)
        slates = np.take_along_axis(smallest, order, axis=1)
        slate_propensity = 1.0 / np.prod(np.arange(self.n_items - k + 1, self.n_items + 1.0))
        return (
            users,
            slates,
            np.full((n, k), 1.0 / self.n_items),
            np.full(n, slate_propensity),
        )

    def _slate_size_or(self, slates: np.ndarray | None) -> int:
        if self.slate_size is not None:
            return self.slate_size
        if slates is None:
            raise ValueError(
                f"{type(self).__name__} was built without slate_size: pass slate_size=k to "
                "gym.make for slates"
            )
        return np.asarray(slates).shape[-1]

    def respond(
        self,
        users: schema.Batch,
        actions: np.ndarray,
        rng: np.random.Generator,
        state: dict[str, np.ndarray] | None = None,
    ) -> Response:
        """What ``n`` users do when shown one action each: ``actions`` (n,) items, or (n, k)
        slates in slate mode; ``state`` is their session state (None outside sessions).

        The random draws, in order: the slate choice (one uniform per user), then the rewards
        (the env's reward rule, for the users who consumed an item).
        """
        n = len(users)
        values = (
            self.expected_reward(users)
            if state is None
            else self.session_expected_reward(users, state)
        )
        rows = np.arange(n)
        if self.slate_size is None:
            expected = values[rows, actions]
            rewards = (
                self.sample_reward(users, actions, rng)
                if state is None
                else self.session_sample_reward(users, state, actions, expected, rng)
            )
            return Response(rewards, expected, actions, None)
        chosen = self.choice_probabilities(values, actions)
        expected = (chosen * values[rows[:, None], actions]).sum(axis=1)
        draws = rng.random(n)
        positions = (np.cumsum(chosen, axis=1) <= draws[:, None]).sum(axis=1)
        positions[positions == actions.shape[1]] = -1
        took = positions >= 0
        consumed = np.where(took, actions[rows, np.maximum(positions, 0)], -1)
        rewards = np.zeros(n, np.float32)
        if took.any():
            items, who = consumed[took], users[took]
            rewards[took] = (
                self.sample_reward(who, items, rng)
                if state is None
                else self.session_sample_reward(
                    who, {key: v[took] for key, v in state.items()}, items, values[took, items], rng
                )
            )
        return Response(rewards, expected, consumed, positions)

    # -- sessions: what an env with a session mode implements -----------------------------------
    def session_start(self, users: schema.Batch) -> dict[str, np.ndarray]:
        """The hidden state of ``users`` at the start of a session: arrays with one row each."""
        raise NotImplementedError(f"{type(self).__name__} has no session mode")

    def session_expected_reward(
        self, users: schema.Batch, state: dict[str, np.ndarray]
    ) -> np.ndarray:
        """(n, n_items) expected reward of each item for each user in their current state."""
        raise NotImplementedError(f"{type(self).__name__} has no session mode")

    def session_sample_reward(
        self,
        users: schema.Batch,
        state: dict[str, np.ndarray],
        items: np.ndarray,
        expected: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """(n,) float32 reward of consuming ``items`` (whose expected rewards are ``expected``)
        in the current state; default Bernoulli(expected)."""
        return (rng.random(len(items)) < expected).astype(np.float32)

    def session_advance(
        self,
        users: schema.Batch,
        state: dict[str, np.ndarray],
        items: np.ndarray,
        rewards: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The state after user ``i`` consumed ``items[i]`` (-1: nothing) with reward
        ``rewards[i]``, and the probability (n,) that the user now leaves."""
        raise NotImplementedError(f"{type(self).__name__} has no session mode")

    def session_continue_probability(
        self, users: schema.Batch, state: dict[str, np.ndarray]
    ) -> np.ndarray:
        """(n, n_items) probability that the session goes on after the user consumes each item
        now (over the reward's randomness): what a planner weighs against the reward."""
        raise NotImplementedError(f"{type(self).__name__} has no session mode")

    # -- Gymnasium API --------------------------------------------------------------------------
    def _init_spaces(self, horizon: int = 1, **modes: Any) -> None:
        """Spaces and modes; ``modes`` are the slate and session arguments (``MODE_DEFAULTS``)."""
        from recsim_ft.envs.episodes import Episodes

        unknown = sorted(set(modes) - set(MODE_DEFAULTS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword arguments {unknown}; the slate "
                f"and session arguments are {list(MODE_DEFAULTS)}"
            )
        modes = {**MODE_DEFAULTS, **modes}
        self.horizon = check_int("horizon", horizon, low=1)
        self.slate_size = check_int(
            "slate_size", modes["slate_size"], low=1, high=self.n_items, allow_none=True
        )
        self.choice_scale = check_float("choice_scale", modes["choice_scale"], low=0)
        self.no_choice_utility = check_float("no_choice_utility", modes["no_choice_utility"])
        self.session = check_choice("session", modes["session"], (False, True))
        self.session_length = check_int("session_length", modes["session_length"], low=1)
        self.history_length = check_int("history_length", modes["history_length"], low=0)
        for name, needs in (
            ("choice_scale", "slate_size"),
            ("no_choice_utility", "slate_size"),
            ("session_length", "session"),
            ("history_length", "session"),
            ("dynamics", "session"),
        ):
            if modes[name] != MODE_DEFAULTS[name] and not modes[needs]:
                raise ValueError(
                    f"{name}={modes[name]!r} applies only with {needs}"
                    f"{'=k' if needs == 'slate_size' else '=True'}"
                )
        if self.session:
            if not self.session_parameters:
                raise ValueError(f"{type(self).__name__} has no session mode")
            if self.horizon != 1:
                raise ValueError(
                    f"horizon={horizon!r} applies only to the bandit mode; a session ends when "
                    "the user leaves or after session_length steps"
                )
        self.dynamics = self._check_dynamics(modes["dynamics"])
        self.observation_schema = self._observation_schema()
        self.observation_space = self.observation_schema.space()
        self.action_space = (
            spaces.Discrete(self.n_items)
            if self.slate_size is None
            else spaces.MultiDiscrete([self.n_items] * self.slate_size)
        )
        self.reward_range = self.reward_bounds
        self._episodes = Episodes(self, 1)

    def _check_dynamics(self, dynamics: Any) -> dict[str, float]:
        """The session parameters: the defaults, with ``dynamics`` (a dict by name) over them."""
        if dynamics is None:
            dynamics = {}
        if not isinstance(dynamics, dict):
            raise ValueError(f"dynamics must be a dict of parameter values, got {dynamics!r}")
        unknown = sorted(set(dynamics) - set(self.session_parameters))
        if unknown:
            raise ValueError(
                f"unknown dynamics parameters {unknown} for {type(self).__name__}; "
                f"allowed: {sorted(self.session_parameters)}"
            )
        checked = {}
        for name, (default, low, high) in self.session_parameters.items():
            value = dynamics.get(name, default)
            check = check_int if isinstance(default, int) else check_float
            checked[name] = check(f"dynamics[{name!r}]", value, low=low, high=high)
        return checked

    def _observation_schema(self) -> schema.Schema:
        """The user's features, then in session mode the recent history and the step count."""
        if not self.session:
            return self.user_schema
        items = (*(f"item {i}" for i in range(self.n_items)), "none")
        recent = range(1, self.history_length + 1)
        return schema.Schema(
            (
                *self.user_schema.features,
                *(schema.Feature(f"recent_item_{j}", "categorical", items) for j in recent),
                *(
                    schema.Feature(
                        f"recent_reward_{j}",
                        "numeric",
                        low=self.reward_bounds[0],
                        high=self.reward_bounds[1],
                    )
                    for j in recent
                ),
                schema.Feature("step", "numeric", low=0.0, high=float(self.session_length)),
            )
        )

    def observed_users(
        self, observations: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]]
    ) -> schema.Batch:
        """The users' own features from Gymnasium observations of this env (one, a list, or a
        vector env's batch): in session mode the recent history and step count are dropped, so an
        agent that scores users (every bandit and two-tower agent) acts in sessions too."""
        users = schema.Batch.from_observations(observations, self.observation_schema)
        if not self.session:
            return users
        n_numeric, n_categorical = self.user_schema.n_numeric, self.user_schema.n_categorical
        return schema.Batch(
            users.numeric[:, :n_numeric], users.categorical[:, :n_categorical], users.ids
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._episodes.start(np.ones(1, bool), self.np_random)
        return self._episodes.observation(0), {"user_id": int(self._episodes.users.ids[0])}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        episodes = self._episodes
        if episodes.users is None:
            raise RuntimeError("call reset() before step()")
        if episodes.ended[0]:
            how = "terminated" if episodes.terminated[0] else "truncated"
            raise RuntimeError(
                f"the episode has ended ({how}=True was returned); call reset() to start a new "
                "one before calling step() again"
            )
        if self.slate_size is None:
            actions = np.array([check_action(action, self.n_items)])
        else:
            actions = check_slates(action, self.n_items, (self.slate_size,), "action")[None]
        result = episodes.step(actions, self.np_random)
        info: dict[str, Any] = {
            "user_id": int(episodes.users.ids[0]),
            "expected_reward": float(result.expected[0]),
        }
        if result.positions is not None:
            info["chosen_position"] = int(result.positions[0])
            info["chosen_item"] = int(result.consumed[0])
        return (
            episodes.observation(0),
            float(result.rewards[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            info,
        )

    def session_outlook(self) -> tuple[np.ndarray, np.ndarray]:
        """For oracles and planners, from the hidden state (never part of the observation): the
        expected reward of each item now and the probability that the episode goes on after it,
        two (n_items,) arrays."""
        if self._episodes.users is None:
            raise RuntimeError("call reset() before session_outlook()")
        expected, going_on = self._episodes.outlook()
        return expected[0], going_on[0]

    @property
    def spec_kwargs(self) -> dict[str, Any]:
        """The ``gym.make`` kwargs that rebuild this env (for logs and saved models)."""
        return dict(self.spec.kwargs) if self.spec is not None else {}


def first_occurrences(slates: np.ndarray) -> np.ndarray:
    """(n, k) bool: True where an item appears in its slate for the first time (shown), False
    at a repeat (an empty slot)."""
    k = slates.shape[1]
    earlier = np.tril(np.ones((k, k), bool), -1)  # earlier[j, l]: position l comes before j
    same = slates[:, :, None] == slates[:, None, :]
    return ~(same & earlier).any(axis=2)
