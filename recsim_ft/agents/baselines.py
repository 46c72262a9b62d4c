"""Baselines shown beside every model: chance (``RandomAgent``), the best non-personalised ranking
(``PopularityAgent``) and the ceiling (``OracleAgent``), so a reader sees how much of the gap
between chance and the ceiling a model closes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from recsim_ft.agents.base import Agent
from recsim_ft.envs.base import Batch


class RandomAgent(Agent):
    """Uniformly random scores: the chance level of every metric.

    The scores come from the agent's own generator seeded by ``seed``: the same seed and the
    same sequence of calls give the same scores.

    >>> import gymnasium as gym
    >>> env = gym.make("Spotify-v0")
    >>> users = env.unwrapped.test_users(3, seed=0)
    >>> RandomAgent(env, seed=1).recommend(users, 2).tolist() == RandomAgent(env, seed=1).recommend(users, 2).tolist()
    True
    """

    def __init__(self, env: gym.Env, seed: int = 0) -> None:
        super().__init__(env)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def score_items(self, users: Batch) -> np.ndarray:
        return self.rng.random((len(users), self.n_items))


class PopularityAgent(Agent):
    """Ranks items by their mean logged reward, the same ranking for every user.

    ``fit(log)`` sets ``item_mean_reward_`` (items never logged get the overall mean reward, so
    they rank neither first nor last for lack of data) and ``item_counts_``.

    >>> import gymnasium as gym
    >>> from recsim_ft.data import collect
    >>> env = gym.make("Spotify-v0")
    >>> agent = PopularityAgent(env).fit(collect(env, n=2_000, seed=0))
    >>> agent.item_mean_reward_.shape
    (50,)
    """

    def fit(self, log: Any) -> PopularityAgent:
        if len(log) == 0:
            raise ValueError("cannot fit PopularityAgent on an empty log")
        item_schema = getattr(log, "item_schema", None)
        if item_schema is not None and item_schema != self.rec_env.item_schema:
            raise ValueError(f"the log's items ({getattr(log, 'env_id', '?')}, {getattr(log, 'n_items', '?')} "
                             f"items) are not this env's ({self.n_items} items): item schemas differ")
        actions = np.asarray(log.actions, dtype=np.int64)
        rewards = np.asarray(log.rewards, dtype=np.float64)
        if actions.min() < 0 or actions.max() >= self.n_items:
            raise ValueError(f"log actions must lie in [0, {self.n_items}), got min {actions.min()} "
                             f"max {actions.max()}")
        self.item_counts_ = np.bincount(actions, minlength=self.n_items)
        totals = np.bincount(actions, weights=rewards, minlength=self.n_items)
        self.item_mean_reward_ = np.where(self.item_counts_ > 0, totals / np.maximum(self.item_counts_, 1),
                                          rewards.mean())
        return self

    def score_items(self, users: Batch) -> np.ndarray:
        if not hasattr(self, "item_mean_reward_"):
            raise RuntimeError("PopularityAgent is not fitted yet: call fit(log) first")
        return np.tile(self.item_mean_reward_, (len(users), 1))


class OracleAgent(Agent):
    """Scores items by the env's true expected reward: the ceiling no learner can beat on average.

    >>> import gymnasium as gym
    >>> env = gym.make("Spotify-v0")
    >>> users = env.unwrapped.test_users(100, seed=0)
    >>> relevant = env.unwrapped.relevant(users)
    >>> top = OracleAgent(env).recommend(users, 1)[:, 0]
    >>> bool(relevant[np.arange(100), top][relevant.any(axis=1)].all())
    True
    """

    def score_items(self, users: Batch) -> np.ndarray:
        return self.rec_env.expected_reward(users)
