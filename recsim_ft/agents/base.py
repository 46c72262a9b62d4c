"""The interface every recommender implements (``Agent``), so that ours and a user's plug into
the same evaluation.

An agent is built from the environment it recommends in and scores every item for a batch of
users; ranking, top-k recommendation and single Gymnasium actions all derive from those scores::

    agent = MyAgent(env).fit(log)            # fit(log) -> self, optional (offline learning)
    agent.score_items(users)                 # (n_users, n_items) scores, higher is better
    agent.recommend(users, k=5)              # (n_users, 5) item indices, best first
    agent.recommend(observation, k=5)        # the same for Gymnasium observations (one or a batch)
    action = agent.act(observation)          # one item for one Gymnasium observation
    agent.update(observation, action, reward)  # optional (online learning)

Only ``score_items`` must be written. Example: an agent that recommends the items with the most
logged positive rewards, evaluated in the Spotify environment.

>>> import gymnasium as gym
>>> import numpy as np
>>> from recsim_ft.agents import Agent
>>> from recsim_ft.data import collect
>>> from recsim_ft.evaluate import evaluate
>>> class MostLikedAgent(Agent):
...     def fit(self, log):
...         positive = log.rewards > 0
...         self.likes_ = np.bincount(log.actions[positive], minlength=self.n_items)
...         return self
...
...     def score_items(self, users):
...         return np.tile(self.likes_, (len(users), 1)).astype(float)
>>> env = gym.make("Spotify-v0")
>>> agent = MostLikedAgent(env).fit(collect(env, n=5_000, seed=0))
>>> observation, info = env.reset(seed=0)
>>> action = agent.act(observation)
>>> observation, reward, terminated, truncated, info = env.step(action)
>>> metrics = evaluate(agent, env, n_users=200, seed=0)
>>> 0.2 < metrics["HR@1"] < 0.7
True
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from recsim_ft.metrics import check_scores, top_k
from recsim_ft.schema import Batch


class Agent:
    """Base class of recsim-ft recommenders: subclasses implement ``score_items``.

    Args:
        env: the environment (a ``RecEnv`` or a Gymnasium wrapper of one) whose items are ranked.
    """

    def __init__(self, env: gym.Env) -> None:
        self.env = env

    @property
    def rec_env(self) -> gym.Env:
        """The unwrapped environment (a ``recsim_ft.envs.RecEnv``), whose vectorised API
        (schemas, ``n_items``, ``item_table``) agents use."""
        return self.env.unwrapped

    @property
    def n_items(self) -> int:
        return self.rec_env.n_items

    def score_items(self, users: Batch) -> np.ndarray:
        """(n_users, n_items) scores of every item for every user; higher is better."""
        raise NotImplementedError(f"{type(self).__name__} must implement score_items(users)")

    def recommend(self, users: Batch | dict[str, np.ndarray], k: int) -> np.ndarray:
        """(n_users, k) int64 indices of the ``k`` best-scored items, best first; ties go to the
        lower item index. ``users`` is a ``Batch`` or a Gymnasium observation of
        ``env.observation_space`` (one user, or the batched observation of a vector env); ``k``
        must lie in [1, n_items]."""
        return top_k(self.checked_scores(self._as_batch(users)), k)

    def act(self, observation: dict[str, np.ndarray]) -> int:
        """The best item for one Gymnasium observation of ``env.observation_space``."""
        users = self._as_batch(observation)
        if len(users) != 1:
            raise ValueError(
                f"act() takes one observation, got {len(users)}; use "
                "recommend(observation, k) for a batch"
            )
        return int(self.recommend(users, 1)[0, 0])

    def _as_batch(self, users: Batch | dict[str, np.ndarray]) -> Batch:
        if isinstance(users, Batch):
            return users
        if isinstance(users, dict):
            return self.rec_env.observed_users(users)
        raise TypeError(
            "expected a Batch of users or a Gymnasium observation (a dict of arrays), got "
            f"{type(users).__name__}"
        )

    def fit(self, log: Any) -> Agent:
        """Learn from a logged ``InteractionLog``; agents that do not learn offline return
        ``self``."""
        return self

    def update(self, observation: dict[str, np.ndarray], action: int, reward: float) -> None:
        """Learn from one online interaction; a no-op for agents that do not learn online."""

    def check_users(self, users: Batch) -> Batch:
        """``users``, refused (naming the feature) unless they fit the env's user features: a
        missing (NaN) or infinite numeric feature, a code outside a category. The one rule every
        agent applies before it scores users, as the log's rows are checked before it learns."""
        self.rec_env.user_schema.validate(users, "users")
        return users

    def checked_scores(self, users: Batch) -> np.ndarray:
        """``score_items(users)`` of checked users (:meth:`check_users`), with a clear error
        when they are not (n_users, n_items) real numbers without NaN."""
        return check_scores(
            self.score_items(self.check_users(users)),
            (len(users), self.n_items),
            f"{type(self).__name__}.score_items",
        )

    def __repr__(self) -> str:
        spec = self.env.spec
        env_name = spec.id if spec is not None else type(self.rec_env).__name__
        return f"{type(self).__name__}(env={env_name})"
