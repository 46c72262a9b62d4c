"""The shared contract of every recsim-ft environment: feature schemas, feature batches, and
the vectorized API that the collector, the trainer and the evaluator use.

Every environment is a contextual bandit: ``reset()`` draws a user, ``step(action)`` recommends
item ``action`` to that user and returns the reward. The Gymnasium methods are thin wrappers
over the vectorized methods below, so one code path serves a single ``step`` and a sample of
160,000 users.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

FeatureKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class Feature:
    """One column of a user or item table.

    Numeric features carry the bounds of their observation ``Box``; categorical features carry
    their cardinality and the label of each category (index ``i`` means ``categories[i]``).
    """

    name: str
    kind: FeatureKind
    categories: tuple[str, ...] = ()
    low: float = -np.inf
    high: float = np.inf

    def __post_init__(self) -> None:
        if self.kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {self.name!r}: kind must be 'numeric' or 'categorical', got {self.kind!r}")
        if self.kind == "categorical" and len(self.categories) < 1:
            raise ValueError(f"categorical feature {self.name!r} needs at least one category")
        if self.kind == "numeric" and self.categories:
            raise ValueError(f"numeric feature {self.name!r} cannot have categories")

    @property
    def cardinality(self) -> int:
        """Number of categories (0 for a numeric feature)."""
        return len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            d["categories"] = list(self.categories)
        else:
            d["low"] = None if np.isinf(self.low) else float(self.low)
            d["high"] = None if np.isinf(self.high) else float(self.high)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Feature:
        if d["kind"] == "categorical":
            return cls(d["name"], "categorical", tuple(d["categories"]))
        low = -np.inf if d.get("low") is None else d["low"]
        high = np.inf if d.get("high") is None else d["high"]
        return cls(d["name"], "numeric", low=low, high=high)


@dataclass(frozen=True)
class Schema:
    """Ordered features of one side (users or items).

    Numeric features fill the columns of ``Batch.numeric`` in schema order, categorical ones the
    columns of ``Batch.categorical``.

    >>> s = Schema((Feature("age", "numeric", low=0, high=99), Feature("sex", "categorical", ("f", "m"))))
    >>> s.n_numeric, s.cardinalities
    (1, (2,))
    """

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate feature names in schema: {sorted(dup)}")
        if not self.features:
            raise ValueError("a schema needs at least one feature")

    @property
    def numeric(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.kind == "numeric")

    @property
    def categorical(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.kind == "categorical")

    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    @property
    def n_categorical(self) -> int:
        return len(self.categorical)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(f.cardinality for f in self.categorical)

    def __len__(self) -> int:
        return len(self.features)

    def to_dict(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.features]

    @classmethod
    def from_dict(cls, items: Sequence[dict[str, Any]]) -> Schema:
        return cls(tuple(Feature.from_dict(d) for d in items))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls.from_dict(json.loads(text))

    def space(self) -> spaces.Dict:
        """The observation space of one row: ``"numeric"`` Box and/or ``"categorical"`` MultiDiscrete."""
        parts: dict[str, spaces.Space] = {}
        if self.n_numeric:
            low = np.array([f.low for f in self.numeric], dtype=np.float32)
            high = np.array([f.high for f in self.numeric], dtype=np.float32)
            parts["numeric"] = spaces.Box(low, high, dtype=np.float32)
        if self.n_categorical:
            parts["categorical"] = spaces.MultiDiscrete(np.array(self.cardinalities, dtype=np.int64))
        return spaces.Dict(parts)

    def validate(self, batch: Batch, what: str = "batch") -> None:
        """Raise a ValueError naming the column when ``batch`` does not fit this schema."""
        if batch.numeric.shape[1] != self.n_numeric:
            raise ValueError(f"{what}: expected {self.n_numeric} numeric columns, got {batch.numeric.shape[1]}")
        if batch.categorical.shape[1] != self.n_categorical:
            raise ValueError(
                f"{what}: expected {self.n_categorical} categorical columns, got {batch.categorical.shape[1]}"
            )
        if self.n_numeric and not np.isfinite(batch.numeric).all():
            col = int(np.where(~np.isfinite(batch.numeric).all(axis=0))[0][0])
            raise ValueError(f"{what}: numeric feature {self.numeric[col].name!r} has NaN or inf values")
        for j, f in enumerate(self.categorical):
            codes = batch.categorical[:, j]
            if codes.size and (codes.min() < 0 or codes.max() >= f.cardinality):
                raise ValueError(
                    f"{what}: categorical feature {f.name!r} has codes outside [0, {f.cardinality})"
                )


@dataclass
class Batch:
    """Features of ``n`` users or items: ``numeric`` float32 (n, n_numeric), ``categorical`` int64
    (n, n_categorical) and ``ids`` int64 (n,) (user ids, or item indices for an item table)."""

    numeric: np.ndarray
    categorical: np.ndarray
    ids: np.ndarray

    def __post_init__(self) -> None:
        self.numeric = np.asarray(self.numeric, dtype=np.float32)
        self.categorical = np.asarray(self.categorical, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        n = len(self.ids)
        if self.numeric.ndim != 2 or self.categorical.ndim != 2 or self.ids.ndim != 1:
            raise ValueError("Batch expects numeric (n, a), categorical (n, b) and ids (n,) arrays")
        if self.numeric.shape[0] != n or self.categorical.shape[0] != n:
            raise ValueError(
                f"Batch row counts differ: numeric {self.numeric.shape[0]}, "
                f"categorical {self.categorical.shape[0]}, ids {n}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: Any) -> Batch:
        """Rows by integer array, slice or boolean mask (always returns a Batch)."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Batch(self.numeric[index], self.categorical[index], self.ids[index])

    @classmethod
    def concat(cls, batches: Sequence[Batch]) -> Batch:
        return cls(
            np.concatenate([b.numeric for b in batches]),
            np.concatenate([b.categorical for b in batches]),
            np.concatenate([b.ids for b in batches]),
        )

    def observation(self, i: int, schema: Schema) -> dict[str, np.ndarray]:
        """Row ``i`` as a Gymnasium observation of ``schema.space()``."""
        obs: dict[str, np.ndarray] = {}
        if schema.n_numeric:
            obs["numeric"] = self.numeric[i].copy()
        if schema.n_categorical:
            obs["categorical"] = self.categorical[i].copy()
        return obs

    @classmethod
    def from_observations(cls, observations: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]],
                          schema: Schema, ids: np.ndarray | None = None) -> Batch:
        """Stack one observation (or a list, or a batched Dict observation of a vector env)."""
        if isinstance(observations, dict):
            num = np.asarray(observations.get("numeric", np.zeros((0,), np.float32)), dtype=np.float32)
            cat = np.asarray(observations.get("categorical", np.zeros((0,), np.int64)), dtype=np.int64)
            n = max(num.shape[0] if num.ndim == 2 else 1, cat.shape[0] if cat.ndim == 2 else 1)
            num = num.reshape(n, schema.n_numeric)
            cat = cat.reshape(n, schema.n_categorical)
        else:
            num = np.stack([np.asarray(o.get("numeric", np.zeros(0)), np.float32) for o in observations])
            cat = np.stack([np.asarray(o.get("categorical", np.zeros(0)), np.int64) for o in observations])
            n = len(observations)
            num, cat = num.reshape(n, schema.n_numeric), cat.reshape(n, schema.n_categorical)
        return cls(num, cat, np.full(n, -1, np.int64) if ids is None else ids)


#: Evaluation user sets: "test" for reported results, "validation" for choosing hyperparameters.
SPLITS = ("test", "validation")
#: spawn key of the validation users' random stream (independent of the test users' stream)
VALIDATION_STREAM = 0x7A11D


@dataclass
class TrainDefaults:
    """Per-environment defaults of the paper's protocol (the trainer reads them).

    ``lr`` is the paper's learning rate; ``lr_by_embedder`` overrides it for one embedder where
    the validation search of ``recsim-ft tune`` chose another (see the README).
    """

    lr: float = 1e-4
    n_samples: int = 160_000
    batch_size: int = 32
    eval_ks: tuple[int, ...] = (1, 5, 10)
    extra: dict[str, Any] = field(default_factory=dict)
    lr_by_embedder: dict[str, float] = field(default_factory=dict)

    def learning_rate(self, embedder: str | None = None) -> float:
        """The default learning rate for ``embedder`` (``None``: the env's own)."""
        return self.lr_by_embedder.get(embedder, self.lr) if embedder is not None else self.lr


class RecEnv(gym.Env):
    """Base class of the recsim-ft contextual-bandit environments.

    Subclasses set ``user_schema``, ``item_schema`` and ``n_items`` in ``__init__`` (then call
    ``self._init_spaces(horizon)``) and implement ``sample_users``, ``item_table``,
    ``expected_reward`` and ``relevant``; they may override ``sample_reward`` (default: Bernoulli
    of the expected reward), ``test_users`` and ``sample_log``.
    """

    metadata = {"render_modes": []}
    train_defaults = TrainDefaults()
    #: (low, high) of a single reward
    reward_bounds: tuple[float, float] = (0.0, 1.0)

    user_schema: Schema
    item_schema: Schema
    n_items: int

    # -- vectorized API -------------------------------------------------------------------------
    def sample_users(self, n: int, rng: np.random.Generator) -> Batch:
        """Draw ``n`` users (with replacement from the env's population)."""
        raise NotImplementedError

    def item_table(self) -> Batch:
        """Features of every item, row ``i`` = action ``i``; ``ids`` = ``arange(n_items)``."""
        raise NotImplementedError

    def expected_reward(self, users: Batch) -> np.ndarray:
        """(n_users, n_items) float64 mean reward of recommending each item to each user."""
        raise NotImplementedError

    def relevant(self, users: Batch) -> np.ndarray:
        """(n_users, n_items) bool: the items that count as hits in evaluation."""
        raise NotImplementedError

    def sample_reward(self, users: Batch, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Reward of recommending ``items[i]`` to user ``i``; default Bernoulli(expected)."""
        items = self._check_actions(items, len(users))
        p = self.expected_reward(users)[np.arange(len(users)), items]
        return (rng.random(len(users)) < p).astype(np.float32)

    def test_users(self, n: int = 100, seed: int = 0) -> Batch:
        """The held-out evaluation users; default: ``n`` fresh users drawn with ``seed``."""
        return self.sample_users(n, np.random.default_rng(seed))

    def validation_users(self, n: int = 100, seed: int = 0) -> Batch:
        """Users for choosing hyperparameters (``recsim-ft tune``), so that the choice never sees
        the test users; default: ``n`` fresh users from a stream independent of the test users'."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VALIDATION_STREAM,)))
        return self.sample_users(n, rng)

    def eval_users(self, split: str, n: int = 100, seed: int = 0) -> Batch:
        """``test_users`` or ``validation_users`` by name, with a clear error for anything else."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.test_users(n, seed) if split == "test" else self.validation_users(n, seed)

    def sample_log(self, n: int, rng: np.random.Generator) -> tuple[Batch, np.ndarray, np.ndarray]:
        """The default behaviour policy: users, actions and propensities of ``n`` logged events.

        Default: fresh users, uniform actions (propensity 1 / n_items).
        """
        users = self.sample_users(n, rng)
        actions = rng.integers(0, self.n_items, size=n)
        return users, actions, np.full(n, 1.0 / self.n_items)

    # -- Gymnasium API --------------------------------------------------------------------------
    def _init_spaces(self, horizon: int = 1) -> None:
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon!r}")
        self.horizon = int(horizon)
        self.observation_space = self.user_schema.space()
        self.action_space = spaces.Discrete(self.n_items)
        self.reward_range = self.reward_bounds
        self._user: Batch | None = None
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._user = self.sample_users(1, self.np_random)
        self._t = 0
        return self._user.observation(0, self.user_schema), {"user_id": int(self._user.ids[0])}

    def step(self, action):
        if self._user is None:
            raise RuntimeError("call reset() before step()")
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside Discrete({self.n_items})")
        expected = float(self.expected_reward(self._user)[0, action])
        reward = float(self.sample_reward(self._user, np.array([action]), self.np_random)[0])
        self._t += 1
        terminated = self._t >= self.horizon
        info = {"user_id": int(self._user.ids[0]), "expected_reward": expected}
        return self._user.observation(0, self.user_schema), reward, terminated, False, info

    # -- helpers --------------------------------------------------------------------------------
    def _check_actions(self, items: np.ndarray, n: int) -> np.ndarray:
        items = np.asarray(items)
        if items.shape != (n,):
            raise ValueError(f"expected one item per user ({n}), got an array of shape {items.shape}")
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"item indices must lie in [0, {self.n_items}), got min {items.min()} max {items.max()}")
        return items.astype(np.int64)

    @property
    def spec_kwargs(self) -> dict[str, Any]:
        """The ``gym.make`` kwargs that rebuild this env (for logs and saved models)."""
        return dict(self.spec.kwargs) if self.spec is not None else {}
