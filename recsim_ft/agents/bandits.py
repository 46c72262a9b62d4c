"""Bandit agents that learn while they recommend, for ``recsim_ft.run_online``.

An online agent adds two batched methods to the ``Agent`` protocol:

- ``act_batch(users) -> (n,) int64``: the *exploring* choice for each user (a random item with
  probability epsilon, the upper confidence bound, a posterior sample, ...);
- ``update_batch(users, actions, rewards)``: learn from those interactions.

``act`` and ``update`` (the single-observation Gymnasium methods) call them with one row, so the
agent steps through a plain ``gym`` loop too. ``score_items`` stays the *greedy* estimate of the
reward (no exploration bonus), so ``evaluate`` scores what the agent has learned with the same
ranking metrics as the offline models.

Agents here: ``EpsilonGreedyAgent`` (per-item mean reward, no context: the simplest baseline),
``LinUCBAgent`` and ``ThompsonSamplingAgent`` (disjoint linear models on the user's features), and
``OnlineTwoTowerAgent`` (the paper's two-tower models as a bandit policy, refitted on their own
growing log).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from recsim_ft.agents.base import Agent
from recsim_ft.checks import check_actions, check_float, check_int
from recsim_ft.data import InteractionLog
from recsim_ft.schema import Batch, Schema


class OnlineAgent(Agent):
    """Base class of agents that explore and learn online: implement ``act_batch``,
    ``update_batch`` and ``score_items``."""

    def act_batch(self, users: Batch) -> np.ndarray:
        """(n,) int64: the item to show each user, exploration included."""
        raise NotImplementedError(f"{type(self).__name__} must implement act_batch(users)")

    def update_batch(self, users: Batch, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Learn from ``rewards[i]`` of showing item ``actions[i]`` to user ``i``."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement update_batch(users, actions, rewards)"
        )

    def act(self, observation: dict[str, np.ndarray]) -> int:
        """The exploring choice for one Gymnasium observation (``Agent.act`` is greedy)."""
        return int(self.act_batch(self._one_user(observation))[0])

    def update(self, observation: dict[str, np.ndarray], action: int, reward: float) -> None:
        self.update_batch(self._one_user(observation), np.array([action]), np.array([reward]))

    def _one_user(self, observation: dict[str, np.ndarray]) -> Batch:
        users = self.rec_env.observed_users(observation)
        if len(users) != 1:
            raise ValueError(
                f"act()/update() take one observation, got {len(users)}; use act_batch/update_batch"
            )
        return users

    def _checked_feedback(
        self, users: Batch, actions: np.ndarray, rewards: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        actions, rewards = np.asarray(actions), np.asarray(rewards, dtype=np.float64)
        if actions.shape != (len(users),) or rewards.shape != (len(users),):
            raise ValueError(
                f"update_batch needs one action and one reward per user ({len(users)}), "
                f"got actions {actions.shape} and rewards {rewards.shape}"
            )
        if not np.isfinite(rewards).all():
            raise ValueError("rewards contain NaN or inf")
        # what the agent learns from must be users of its env: one NaN would stay in its sums
        self.rec_env.user_schema.validate(users, f"{type(self).__name__}.update users")
        return check_actions(actions, self.n_items, len(users)), rewards


class EpsilonGreedyAgent(OnlineAgent):
    """Per-item mean reward, the same for every user; explores a uniformly random item with
    probability ``epsilon``.

    Items never tried are played first (lowest index first), then the best mean; ties between
    best means go to a random one of them, so a flat start does not lock onto item 0.
    ``score_items`` ranks by the learned means (untried items get the mean of all rewards seen).

    Args:
        env: the environment whose items are recommended.
        epsilon: exploration probability in [0, 1].
        seed: seed of the agent's own generator (exploration and tie-breaks).

    Attributes: ``counts_`` (n_items,) interactions per item, ``means_`` (n_items,) their mean
    reward.

    >>> import gymnasium as gym
    >>> env = gym.make("Spotify-v0")
    >>> agent = EpsilonGreedyAgent(env, epsilon=0.0)  # no exploration, to show the greedy part
    >>> users = env.unwrapped.sample_users(3, np.random.default_rng(0))
    >>> agent.act_batch(users).tolist()  # untried items first
    [0, 0, 0]
    >>> agent.update_batch(users, np.array([0, 0, 1]), np.array([1.0, 0.0, -1.0]))
    >>> agent.means_[:2].tolist(), agent.counts_[:2].tolist()
    ([0.5, -1.0], [2, 1])
    """

    def __init__(self, env: gym.Env, epsilon: float = 0.1, seed: int = 0) -> None:
        super().__init__(env)
        self.epsilon = check_float("epsilon", epsilon, low=0, high=1)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.counts_ = np.zeros(self.n_items, dtype=np.int64)
        self.sums_ = np.zeros(self.n_items)

    @property
    def means_(self) -> np.ndarray:
        seen = self.counts_ > 0
        fallback = self.sums_.sum() / max(self.counts_.sum(), 1)
        return np.where(seen, self.sums_ / np.maximum(self.counts_, 1), fallback)

    def score_items(self, users: Batch) -> np.ndarray:
        return np.tile(self.means_, (len(users), 1))

    def act_batch(self, users: Batch) -> np.ndarray:
        n = len(users)
        untried = np.flatnonzero(self.counts_ == 0)
        if untried.size:
            greedy = np.full(n, untried[0])
        else:
            means = self.means_
            best = np.flatnonzero(means == means.max())
            greedy = self.rng.choice(best, size=n)
        explore = self.rng.random(n) < self.epsilon
        return np.where(explore, self.rng.integers(0, self.n_items, size=n), greedy).astype(
            np.int64
        )

    def update_batch(self, users: Batch, actions: np.ndarray, rewards: np.ndarray) -> None:
        actions, rewards = self._checked_feedback(users, actions, rewards)
        self.counts_ += np.bincount(actions, minlength=self.n_items)
        self.sums_ += np.bincount(actions, weights=rewards, minlength=self.n_items)


def user_context(users: Batch, schema: Schema) -> np.ndarray:
    """(n, d) float64 context of the linear bandits: numeric features scaled to [0, 1] by their
    ``Box`` bounds (left as they are where a bound is infinite), a one-hot block per categorical
    feature, and a constant 1 (the per-item intercept).

    >>> from recsim_ft.schema import Feature
    >>> age = Feature("age", "numeric", low=18, high=90)
    >>> schema = Schema((age, Feature("sex", "categorical", ("f", "m"))))
    >>> user_context(Batch([[54.0]], [[1]], [7]), schema).tolist()
    [[0.5, 0.0, 1.0, 1.0]]
    """
    low = np.array([f.low for f in schema.numeric], dtype=np.float64)
    high = np.array([f.high for f in schema.numeric], dtype=np.float64)
    bounded = np.isfinite(low) & np.isfinite(high) & (high > low)
    numeric = users.numeric.astype(np.float64)
    numeric = np.where(
        bounded,
        (numeric - np.where(bounded, low, 0.0)) / np.where(bounded, high - low, 1.0),
        numeric,
    )
    blocks = [numeric]
    for j, cardinality in enumerate(schema.cardinalities):
        blocks.append(np.eye(cardinality)[users.categorical[:, j]])
    blocks.append(np.ones((len(users), 1)))
    return np.hstack(blocks)


class LinearBanditAgent(OnlineAgent):
    """Disjoint linear bandit (Li et al. 2010): item ``k`` predicts ``x @ theta_k`` from the user
    context ``x = user_context(users)``, by ridge regression on its own interactions.

    Per item it keeps ``A_k = ridge * I + sum x x^T`` (and its inverse, updated by Sherman-Morrison
    for each new row, or Woodbury for a block of rows) and ``b_k = sum r x``;
    ``theta_k = A_k^-1 b_k``, and ``width[u, k] = sqrt(x_u^T A_k^-1 x_u)`` is the uncertainty of the
    prediction. Scoring all items for a batch of users is two batched matrix products.
    Subclasses turn (mean, width) into the exploring score of ``act_batch``; ``score_items`` is the
    mean alone. Ties in ``act_batch`` go to the lower item index.

    Attributes: ``A_`` (n_items, d, d), ``A_inv_`` (n_items, d, d), ``b_`` (n_items, d),
    ``counts_`` (n_items,).
    """

    def __init__(self, env: gym.Env, ridge: float = 1.0) -> None:
        super().__init__(env)
        self.ridge = check_float("ridge", ridge, low=0, low_open=True)
        d = self.n_features
        self.A_ = np.tile(self.ridge * np.eye(d), (self.n_items, 1, 1))
        self.A_inv_ = np.tile(np.eye(d) / self.ridge, (self.n_items, 1, 1))
        self.b_ = np.zeros((self.n_items, d))
        self.counts_ = np.zeros(self.n_items, dtype=np.int64)

    @property
    def n_features(self) -> int:
        """Length ``d`` of the context vector."""
        schema = self.rec_env.user_schema
        return schema.n_numeric + sum(schema.cardinalities) + 1

    def context(self, users: Batch) -> np.ndarray:
        return user_context(users, self.rec_env.user_schema)

    @property
    def theta_(self) -> np.ndarray:
        """(n_items, d) ridge estimates."""
        return np.einsum("kde,ke->kd", self.A_inv_, self.b_)

    def mean_and_width(self, users: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(n_users, n_items) predicted rewards and their uncertainty widths."""
        x = self.context(users)
        mean = x @ self.theta_.T
        x_a_inv = np.einsum("nd,kde->kne", x, self.A_inv_)
        width = np.sqrt(np.maximum(np.einsum("kne,ne->nk", x_a_inv, x), 0.0))
        return mean, width

    def score_items(self, users: Batch) -> np.ndarray:
        return self.context(users) @ self.theta_.T

    def exploring_scores(self, users: Batch) -> np.ndarray:
        raise NotImplementedError

    def act_batch(self, users: Batch) -> np.ndarray:
        return self.exploring_scores(users).argmax(axis=1).astype(np.int64)

    def update_batch(self, users: Batch, actions: np.ndarray, rewards: np.ndarray) -> None:
        actions, rewards = self._checked_feedback(users, actions, rewards)
        x = self.context(users)
        for item in np.unique(actions):
            rows = x[actions == item]
            self.A_[item] += rows.T @ rows
            self.b_[item] += rewards[actions == item] @ rows
            self.counts_[item] += len(rows)
            a_inv = self.A_inv_[item]
            if len(rows) < rows.shape[1]:
                # Woodbury: (A + X^T X)^-1 = A^-1 - A^-1 X^T (I + X A^-1 X^T)^-1 X A^-1
                # (one row: Sherman-Morrison)
                x_a_inv = rows @ a_inv
                inner = np.eye(len(rows)) + x_a_inv @ rows.T
                self.A_inv_[item] = a_inv - x_a_inv.T @ np.linalg.solve(inner, x_a_inv)
            else:  # a block as large as the context: inverting A directly is cheaper and exact
                self.A_inv_[item] = np.linalg.inv(self.A_[item])


class LinUCBAgent(LinearBanditAgent):
    """Disjoint LinUCB: show the item with the highest ``mean + alpha * width``
    (see ``LinearBanditAgent``). ``alpha = 0`` is the greedy ridge policy.

    Args:
        env: the environment whose items are recommended.
        alpha: exploration bonus, in units of the prediction's standard deviation.
        ridge: the ridge penalty (the prior precision of each ``theta_k``).

    >>> import gymnasium as gym
    >>> env = gym.make("Spotify-v0")
    >>> agent = LinUCBAgent(env, alpha=1.0)
    >>> users = env.unwrapped.sample_users(4, np.random.default_rng(0))
    >>> agent.n_features, agent.act_batch(users).tolist()  # all items alike so far: lowest index
    (21, [0, 0, 0, 0])
    >>> agent.update_batch(users, np.zeros(4, dtype=np.int64), np.ones(4))
    >>> agent.score_items(users).argmax(axis=1).tolist()
    [0, 0, 0, 0]
    """

    def __init__(self, env: gym.Env, alpha: float = 1.0, ridge: float = 1.0) -> None:
        super().__init__(env, ridge=ridge)
        self.alpha = check_float("alpha", alpha, low=0)

    def exploring_scores(self, users: Batch) -> np.ndarray:
        mean, width = self.mean_and_width(users)
        return mean + self.alpha * width


class ThompsonSamplingAgent(LinearBanditAgent):
    """Linear Thompson sampling: show the item with the highest reward under a draw of
    ``theta_k ~ N(theta_hat_k, scale^2 A_k^-1)`` (see ``LinearBanditAgent``).

    Only ``x @ theta_k`` matters for user ``x``, and it is normal with mean ``x @ theta_hat_k`` and
    standard deviation ``scale * width``, so the agent draws that one number per (user, item)
    instead of a whole ``theta_k`` (an independent posterior draw for every user).

    Args:
        env: the environment whose items are recommended.
        scale: posterior scale ``v`` (about the reward noise's standard deviation).
        ridge: the ridge penalty (prior precision).
        seed: seed of the agent's generator (the posterior draws).

    >>> import gymnasium as gym
    >>> env = gym.make("Spotify-v0")
    >>> users = env.unwrapped.sample_users(5, np.random.default_rng(0))
    >>> a, b = ThompsonSamplingAgent(env, seed=3), ThompsonSamplingAgent(env, seed=3)
    >>> a.act_batch(users).tolist() == b.act_batch(users).tolist()
    True
    """

    def __init__(self, env: gym.Env, scale: float = 0.5, ridge: float = 1.0, seed: int = 0) -> None:
        super().__init__(env, ridge=ridge)
        self.scale = check_float("scale", scale, low=0, low_open=True)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def exploring_scores(self, users: Batch) -> np.ndarray:
        mean, width = self.mean_and_width(users)
        return mean + self.scale * width * self.rng.standard_normal(mean.shape)


class OnlineTwoTowerAgent(OnlineAgent):
    """The paper's two-tower model as a bandit policy: epsilon-greedy on the model's scores,
    refitted from scratch on everything the agent has seen every ``refit_every`` interactions.

    Until the first refit the agent has no model: it plays uniformly at random and
    ``score_items`` is all zeros. Each refit builds
    a ``TwoTowerAgent`` (a fresh model, weights seeded from ``seed``) and trains it with
    ``recsim_ft.train.train`` on the agent's own log: one pass over it with the env's learning
    rate unless ``train_config`` says otherwise. The log is collected by the agent's own
    (adaptive) policy, so its propensities are recorded as ``1 - epsilon + epsilon / n_items`` for
    the greedy item and ``epsilon / n_items`` otherwise (uniform ones before the first fit).

    Args:
        env: the environment whose items are recommended.
        embedder: ``"mamba"`` (FT-Mamba), ``"transformer"`` (FT-Transformer) or ``"mlp"``.
        preset: ``"quick"`` (default: refits in seconds on CPU) or ``"paper"``.
        refit_every: interactions between refits.
        epsilon: exploration probability in [0, 1] once a model exists.
        seed: seed of the exploration and of every refit (``TrainConfig.seed``).
        train_config: a ``recsim_ft.train.TrainConfig``; default: one pass, batch 32, the env's
            learning rate, no intermediate evaluation or checkpoints.
        **model_overrides: ``ModelConfig`` fields (``d_token=...``).

    Attributes: ``fits_`` (number of refits so far), ``model_agent_`` (the latest fitted
    ``TwoTowerAgent``, after the first refit).
    """

    def __init__(
        self,
        env: gym.Env,
        embedder: str = "mamba",
        preset: Any = "quick",
        refit_every: int = 1000,
        epsilon: float = 0.1,
        seed: int = 0,
        train_config: Any = None,
        **model_overrides: Any,
    ) -> None:
        super().__init__(env)
        self.embedder, self.preset = embedder, preset
        self.refit_every = check_int("refit_every", refit_every, low=1)
        self.epsilon = check_float("epsilon", epsilon, low=0, high=1)
        self.seed = seed
        self.train_config = train_config
        self.model_overrides = model_overrides
        self.rng = np.random.default_rng(seed)
        self.fits_ = 0
        self._seen: list[tuple[Batch, np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_seen = 0
        self._last_propensities: np.ndarray | None = None

    def score_items(self, users: Batch) -> np.ndarray:
        if not hasattr(self, "model_agent_"):
            return np.zeros((len(users), self.n_items))
        return self.model_agent_.score_items(users)

    def act_batch(self, users: Batch) -> np.ndarray:
        n, uniform = len(users), 1.0 / self.n_items
        if not hasattr(self, "model_agent_"):
            actions = self.rng.integers(0, self.n_items, size=n)
            self._last_propensities = np.full(n, uniform)
            return actions.astype(np.int64)
        greedy = self.recommend(users, 1)[:, 0]
        explore = self.rng.random(n) < self.epsilon
        actions = np.where(explore, self.rng.integers(0, self.n_items, size=n), greedy)
        self._last_propensities = np.where(
            actions == greedy, 1 - self.epsilon + self.epsilon * uniform, self.epsilon * uniform
        )
        return actions.astype(np.int64)

    def update_batch(self, users: Batch, actions: np.ndarray, rewards: np.ndarray) -> None:
        actions, rewards = self._checked_feedback(users, actions, rewards)
        propensities = self._last_propensities
        if propensities is None or propensities.shape != actions.shape:
            propensities = np.full(len(actions), np.nan)  # feedback for choices made elsewhere
        self._last_propensities = None
        self._seen.append((users, actions, rewards, propensities))
        before, self._n_seen = self._n_seen, self._n_seen + len(actions)
        if self._n_seen // self.refit_every > before // self.refit_every:
            self.refit()

    def log(self) -> InteractionLog:
        """Everything the agent has seen, as a ``recsim_ft.data.InteractionLog``."""
        if not self._seen:
            raise RuntimeError("the agent has not seen any interaction yet")
        users, actions, rewards, propensities = zip(*self._seen, strict=True)
        return InteractionLog.from_env(
            self.env,
            Batch.concat(users),
            np.concatenate(actions),
            np.concatenate(rewards),
            np.concatenate(propensities),
            self.seed,
        )

    def refit(self) -> OnlineTwoTowerAgent:
        """Train a fresh two-tower model on ``log()`` (``update_batch`` calls it every
        ``refit_every`` interactions). The trainer is imported here, so the bandits above load
        without torch."""
        from recsim_ft.agents.two_tower import TwoTowerAgent
        from recsim_ft.train import TrainConfig

        config = self.train_config or TrainConfig(
            seed=self.seed, eval_every=None, checkpoint_every=None
        )
        agent = TwoTowerAgent(
            self.env, self.embedder, self.preset, train_config=config, **self.model_overrides
        )
        self.model_agent_ = agent.fit(self.log())
        self.fits_ += 1
        return self


__all__ = [
    "EpsilonGreedyAgent",
    "LinUCBAgent",
    "LinearBanditAgent",
    "OnlineAgent",
    "OnlineTwoTowerAgent",
    "ThompsonSamplingAgent",
    "user_context",
]
