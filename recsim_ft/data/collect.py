"""Collect a logged-interaction data set from any recsim-ft env, vectorised end to end."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from recsim_ft.checks import check_actions, check_int
from recsim_ft.data.log import InteractionLog
from recsim_ft.schema import Batch

#: ``policy(users, rng)`` returns the actions, or ``(actions, propensities)``.
Policy = Callable[[Batch, np.random.Generator], "np.ndarray | tuple[np.ndarray, np.ndarray]"]


def collect(
    env: gym.Env, n: int = 160_000, policy: Policy | None = None, seed: int | None = 0
) -> InteractionLog:
    """Log ``n`` events of a behaviour policy in ``env`` (the paper's 160,000 by default).

    ``policy=None`` uses the env's own behaviour policy ``env.sample_log`` (uniform for Spotify
    and vaccine, purchase/non-purchase sampling for H&M). A callable policy gets a batch of fresh
    users and a generator; when it returns actions only, propensities are logged as NaN.
    Users and actions come from one stream derived from ``seed``, rewards from another, so the
    same seed gives the same log, and changing the policy leaves the reward noise unchanged.

    >>> import gymnasium as gym
    >>> log = collect(gym.make("Spotify-v0"), n=1_000, seed=0)
    >>> len(log), log.env_id, log.to_pandas().columns[-5:].tolist()
    (1000, 'Spotify-v0', ['item.rank', 'action', 'reward', 'propensity', 'user_id'])
    """
    base = env.unwrapped
    n = check_int("n", n, low=1)
    behaviour_rng, reward_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    if policy is None:
        users, actions, propensities = base.sample_log(n, behaviour_rng)
    else:
        users = base.sample_users(n, behaviour_rng)
        chosen = policy(users, behaviour_rng)
        actions, propensities = (
            chosen if isinstance(chosen, tuple) else (chosen, np.full(n, np.nan))
        )
    actions = check_actions(actions, base.n_items, n, "the policy's actions")
    rewards = base.sample_reward(users, actions, reward_rng)
    return InteractionLog.from_env(env, users, actions, rewards, propensities, seed)
