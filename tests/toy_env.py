"""A tiny, fully known ``RecEnv`` for fast tests of anything downstream of an environment.

Import it from a test as ``from toy_env import ToyEnv`` (pytest puts ``tests/`` on the path), or
``gym.make("ToyRec-v0")`` after that import.

Users have one numeric feature ``activity`` in [0, 1] and one categorical feature ``group``
(``g0`` ... ``g{n_groups-1}`` plus ``none``). Items have one categorical feature ``item`` (their
index). The expected reward of item ``i`` for a user of group ``g`` is::

    base_i + (0.4 + 0.2 * activity) * [i % n_groups == g],   base_i = 0.1 + 0.3 * i / (n_items - 1)

The relevant items are those of the user's group (``i % n_groups == g``); each scores >= 0.5, above
every other item (<= 0.4), so ranking by expected reward is a perfect ranker. Higher-index items
are more popular overall, and users of group ``none`` (drawn with probability ``p_none``) like
nothing and are excluded by the ranking metrics. Rewards are Bernoulli(expected reward).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from recsim_ft.envs import RecEnv
from recsim_ft.protocol import PROTOCOLS, Protocol
from recsim_ft.schema import Batch, Feature, Schema


class ToyEnv(RecEnv):
    """Contextual bandit with ``n_items`` items and ``n_groups`` user groups (see the module
    docstring)."""

    def __init__(self, n_items: int = 10, n_groups: int = 4, p_none: float = 0.1, horizon: int = 1):
        if n_items < n_groups or n_groups < 1:
            raise ValueError(
                f"need 1 <= n_groups <= n_items, got n_groups={n_groups}, n_items={n_items}"
            )
        if not 0.0 <= p_none < 1.0:
            raise ValueError(f"p_none must lie in [0, 1), got {p_none!r}")
        self.n_items, self.n_groups, self.p_none = int(n_items), int(n_groups), float(p_none)
        groups = tuple(f"g{g}" for g in range(n_groups)) + ("none",)
        self.user_schema = Schema(
            (
                Feature("activity", "numeric", low=0.0, high=1.0),
                Feature("group", "categorical", groups),
            )
        )
        self.item_schema = Schema(
            (Feature("item", "categorical", tuple(str(i) for i in range(n_items))),)
        )
        self.base = 0.1 + 0.3 * np.arange(n_items) / max(n_items - 1, 1)
        self._init_spaces(horizon)

    def sample_users(self, n: int, rng: np.random.Generator) -> Batch:
        activity = rng.uniform(0.0, 1.0, size=(n, 1))
        weights = np.r_[np.full(self.n_groups, (1 - self.p_none) / self.n_groups), self.p_none]
        group = rng.choice(self.n_groups + 1, size=(n, 1), p=weights)
        return Batch(activity, group, rng.integers(0, 2**31, size=n))

    def item_table(self) -> Batch:
        return Batch(
            np.zeros((self.n_items, 0)), np.arange(self.n_items)[:, None], np.arange(self.n_items)
        )

    def _match(self, users: Batch) -> np.ndarray:
        return (np.arange(self.n_items)[None, :] % self.n_groups) == users.categorical[:, :1]

    def expected_reward(self, users: Batch) -> np.ndarray:
        boost = 0.4 + 0.2 * users.numeric[:, :1].astype(np.float64)
        return self.base[None, :] + boost * self._match(users)

    def relevant(self, users: Batch) -> np.ndarray:
        return self._match(users)


if "ToyRec-v0" not in gym.registry:
    gym.register(id="ToyRec-v0", entry_point=ToyEnv)
#: small and fast: a large learning rate, and a log of 2,000 events by default
PROTOCOLS["ToyRec-v0"] = Protocol(lr=1e-2, n_samples=2_000)
