"""Baselines shown beside every model: chance (``RandomAgent``), the best non-personalised ranking
(``PopularityAgent``) and the ceiling (``OracleAgent``), so a reader sees how much of the gap
between chance and the ceiling a model closes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from recsim_ft.agents.base import Agent
from recsim_ft.checks import check_actions, check_choice
from recsim_ft.schema import Batch


class RandomAgent(Agent):
    """Uniformly random scores: the chance level of every metric.

    The scores come from the agent's own generator seeded by ``seed``: the same seed and the
    same sequence of calls give the same scores.

    >>> import gymnasium as gym
    >>> env = gym.make("Spotify-v0")
    >>> users = env.unwrapped.test_users(3, seed=0)
    >>> first, second = RandomAgent(env, seed=1), RandomAgent(env, seed=1)
    >>> first.recommend(users, 2).tolist() == second.recommend(users, 2).tolist()
    True
    """

    def __init__(self, env: gym.Env, seed: int = 0) -> None:
        super().__init__(env)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def score_items(self, users: Batch) -> np.ndarray:
        return self.rng.random((len(users), self.n_items))


class PopularityAgent(Agent):
    """Ranks items by how well they did in the log, the same ranking for every user: the
    popularity baseline of the paper's tables.

    Args:
        env: the environment whose items are ranked.
        by: ``"positive_rate"`` (default, what the tables report), the share of an item's logged
            rewards that are positive; or ``"mean_reward"``, the mean logged reward of each item
            (the best constant prediction under the MSE the two-tower models train with). The two
            agree for 0/1 rewards; with Spotify's -1/0/+1 rewards ``"positive_rate"`` ranks by how
            many users like a song (overall popularity), ``"mean_reward"`` by likes minus dislikes,
            which favours inoffensive songs and ranks worse. ``"positive_share"``: the item's
            share of all the log's positive rewards, i.e. how often it was bought or liked,
            whatever else was shown; the rate divides by how often the behaviour policy showed
            the item, so an item logged twice and rewarded once ties with one shown a thousand
            times and rewarded five hundred. Over a large catalogue, where most items are logged
            a few times (H&M at 20,000 articles: about 8 events each), the share ranks far
            better (``docs/results/ranking_preset.md``).

    ``fit(log)`` sets ``item_popularity_`` (items never logged get the overall value, so they rank
    neither first nor last for lack of data; by share, 0: never rewarded) and ``item_counts_``.

    >>> import gymnasium as gym
    >>> from recsim_ft.data import collect
    >>> env = gym.make("Spotify-v0")
    >>> agent = PopularityAgent(env).fit(collect(env, n=2_000, seed=0))
    >>> agent.by, agent.item_popularity_.shape
    ('positive_rate', (50,))
    """

    RULES = ("mean_reward", "positive_rate", "positive_share")

    def __init__(
        self, env: gym.Env, by: str = "positive_rate", allow_env_mismatch: bool = False
    ) -> None:
        super().__init__(env)
        self.by = check_choice("by", by, self.RULES)
        self.allow_env_mismatch = allow_env_mismatch

    def fit(self, log: Any) -> PopularityAgent:
        """Count ``log`` (an ``InteractionLog`` of this env, refused from another env setting
        unless ``allow_env_mismatch``, as every agent does; or any object with ``actions`` and
        ``rewards`` of this env's items)."""
        if len(log) == 0:
            raise ValueError("cannot fit PopularityAgent on an empty log")
        if hasattr(log, "check_env"):
            log.check_env(self.env, self.allow_env_mismatch)
        actions = check_actions(log.actions, self.n_items, len(log), "the log's actions")
        rewards = np.asarray(log.rewards, dtype=np.float64)
        values = reward_values(rewards, self.by)
        self.item_counts_ = np.bincount(actions, minlength=self.n_items)
        totals = np.bincount(actions, weights=values, minlength=self.n_items)
        if self.by == "positive_share":
            self.item_popularity_ = totals / max(values.sum(), 1.0)
        else:
            self.item_popularity_ = np.where(
                self.item_counts_ > 0, totals / np.maximum(self.item_counts_, 1), values.mean()
            )
        return self

    def score_items(self, users: Batch) -> np.ndarray:
        if not hasattr(self, "item_popularity_"):
            raise RuntimeError("PopularityAgent is not fitted yet: call fit(log) first")
        return np.tile(self.item_popularity_, (len(users), 1))


def reward_values(rewards: np.ndarray, by: str) -> np.ndarray:
    """What one logged reward adds to an item's popularity under rule ``by`` (see
    ``PopularityAgent``): the reward itself (``"mean_reward"``), or 1 for a positive reward and
    0 otherwise (``"positive_rate"``, ``"positive_share"``)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return rewards if by == "mean_reward" else (rewards > 0).astype(np.float64)


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
