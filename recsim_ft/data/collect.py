"""Collect a logged-interaction data set from any recsim-ft env, vectorised end to end."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from recsim_ft.checks import check_actions, check_int, check_slates
from recsim_ft.data.log import InteractionLog, SlateColumns
from recsim_ft.schema import Batch

#: ``policy(users, rng)`` returns the actions, or ``(actions, propensities)``; in a slate env the
#: slates (n, k), or ``(slates, position_propensities (n, k), slate_propensities (n,))``.
Policy = Callable[[Batch, np.random.Generator], "np.ndarray | tuple[np.ndarray, ...]"]


def collect(
    env: gym.Env, n: int = 160_000, policy: Policy | None = None, seed: int | None = 0
) -> InteractionLog:
    """Log ``n`` events of a behaviour policy in ``env`` (the paper's 160,000 by default).

    ``policy=None`` uses the env's own behaviour policy ``env.sample_log`` (uniform for Spotify
    and vaccine, purchase/non-purchase sampling for H&M). A callable policy gets a batch of fresh
    users and a generator; when it returns actions only, propensities are logged as NaN.
    Users and actions come from one stream derived from ``seed``, rewards from another, so the
    same seed gives the same log, and changing the policy leaves the reward noise unchanged.

    In an env with ``slate_size=k`` an event is a slate: the log has ``n * k`` rows, one per
    position, with ``slate_columns`` (see ``SlateColumns``). ``policy=None`` is the env's
    ``sample_slate_log`` (uniformly random slates, exact propensities); a callable policy
    returns the slates (distinct items each) and, for off-policy estimates, the probability of
    each slate's item at its position and of the whole slate. The user's choice and the reward
    follow the env's choice model (``RecEnv.respond``). Where the env's own behaviour policy
    dates its events (HMFashion-v0: the day of the purchase behind each event), the log has a
    ``time`` column (``log.times``); a callable policy's events, and slates, have no dates.
    Session envs are refused: an event of a session depends on the ones before it, which a log
    of independent events cannot hold.

    >>> import gymnasium as gym
    >>> log = collect(gym.make("Spotify-v0"), n=1_000, seed=0)
    >>> len(log), log.env_id, log.to_pandas().columns[-5:].tolist()
    (1000, 'Spotify-v0', ['item.rank', 'action', 'reward', 'propensity', 'user_id'])
    >>> slates = collect(gym.make("Spotify-v0", slate_size=3), n=1_000, seed=0)
    >>> len(slates), slates.to_pandas().columns[-4:].tolist()
    (3000, ['slate_id', 'position', 'chosen', 'slate_propensity'])
    """
    base = env.unwrapped
    n = check_int("n", n, low=1)
    seed = check_int("seed", seed, low=0, allow_none=True)
    if not hasattr(base, "sample_log"):
        raise TypeError(f"collect logs recsim-ft envs; {type(base).__name__} is not one")
    if base.session:
        raise ValueError(
            "collect logs independent events, but this env runs sessions (session=True), whose "
            "steps depend on the ones before; collect from the bandit env (session=False), or "
            "record episodes from gym.make_vec(..., session=True) yourself"
        )
    if hasattr(policy, "score_items"):  # an agent: its recommend is not a behaviour policy
        raise TypeError(
            f"policy is an agent ({type(policy).__name__}); collect takes a function "
            "(users, rng) -> actions (or (actions, propensities)), e.g. "
            "lambda users, rng: agent.recommend(users, 1)[:, 0]"
        )
    behaviour_rng, reward_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    if base.slate_size is not None:
        return _collect_slates(env, n, policy, behaviour_rng, reward_rng, seed)
    times = None
    if policy is None:
        users, actions, propensities, times = base.sample_dated_log(n, behaviour_rng)
    else:
        users = base.sample_users(n, behaviour_rng)
        chosen = policy(users, behaviour_rng)
        actions, propensities = (
            chosen if isinstance(chosen, tuple) else (chosen, np.full(n, np.nan))
        )
    actions = check_actions(actions, base.n_items, n, "the policy's actions")
    propensities = _checked_propensities("propensities", propensities, (n,))
    rewards = base.sample_reward(users, actions, reward_rng)
    return InteractionLog.from_env(env, users, actions, rewards, propensities, seed, times=times)


def _collect_slates(
    env: gym.Env,
    n: int,
    policy: Policy | None,
    behaviour_rng: np.random.Generator,
    reward_rng: np.random.Generator,
    seed: int | None,
) -> InteractionLog:
    """``n`` slates of the behaviour policy, logged as ``n * slate_size`` rows."""
    base = env.unwrapped
    k = base.slate_size
    if policy is None:
        users, slates, position_propensities, slate_propensities = base.sample_slate_log(
            n, behaviour_rng
        )
    else:
        users = base.sample_users(n, behaviour_rng)
        chosen = policy(users, behaviour_rng)
        if not isinstance(chosen, tuple):
            chosen = (chosen, np.full((n, k), np.nan), np.full(n, np.nan))
        if len(chosen) != 3:
            raise ValueError(
                "a slate policy returns slates, or (slates, position_propensities, "
                f"slate_propensities); got a tuple of {len(chosen)}"
            )
        slates, position_propensities, slate_propensities = chosen
    slates = check_slates(slates, base.n_items, (n, k), "the policy's slates", distinct=True)
    position_propensities = _checked_propensities(
        "position_propensities", position_propensities, (n, k)
    )
    slate_propensities = _checked_propensities("slate_propensities", slate_propensities, (n,))
    response = base.respond(users, slates, reward_rng)
    rows = np.repeat(np.arange(n), k)
    positions = np.tile(np.arange(k), n)
    chosen_rows = response.positions[rows] == positions
    return InteractionLog.from_env(
        env,
        users[rows],
        slates.ravel(),
        np.where(chosen_rows, response.rewards[rows], 0.0),
        position_propensities.ravel(),
        seed,
        SlateColumns(rows, positions, chosen_rows, slate_propensities[rows]),
    )


def _checked_propensities(name: str, values: object, shape: tuple[int, ...]) -> np.ndarray:
    """A policy's probabilities of what it showed, as float64: each in (0, 1], or NaN where the
    policy does not report it; anything else is refused now rather than by an estimator later."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"the policy's {name} must be numbers, got {values!r}") from None
    if array.shape != shape:
        raise ValueError(f"the policy's {name} must have shape {shape}, got {array.shape}")
    bad = ~np.isnan(array) & ~((array > 0) & (array <= 1))
    if bad.any():
        first = array[bad].flat[0]
        raise ValueError(
            f"the policy's {name} must be probabilities in (0, 1] (NaN: not reported); "
            f"{int(bad.sum())} are not, e.g. {first!r}"
        )
    return array
