"""Off-policy evaluation: a target policy's value estimated from a log of another policy.

A log of a known-propensity behaviour policy (``collect(env)`` logs the env's own, uniform for
Spotify and vaccine) says how well *any* target policy would do, without running it: each event
is reweighted by ``w = pi(action | user) / propensity``.

- IPS (inverse propensity scoring): ``mean(w * reward)``; unbiased, high variance.
- SNIPS (self-normalised IPS): ``sum(w * reward) / sum(w)``; slightly biased, lower variance, and
  it moves with the rewards: adding ``c`` to every reward adds exactly ``c`` to the estimate.

The target is an agent (its greedy top-1 item, ties to the lower index, as ``recommend`` does) or
an (n_events, n_items) matrix of action probabilities for the logged users. Since the env knows
the truth, :func:`policy_value` gives an agent's actual value on fresh users to check against.

>>> import gymnasium as gym
>>> from recsim_ft.agents import OracleAgent
>>> from recsim_ft.data import collect
>>> env = gym.make("Spotify-v0")
>>> log = collect(env, n=20_000, seed=0)
>>> estimate, truth = snips(log, OracleAgent(env)), policy_value(OracleAgent(env), env)
>>> round(truth.value, 2), abs(estimate.value - truth.value) < 4 * estimate.std_error
(0.96, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from scipy import stats

from recsim_ft.checks import check_float
from recsim_ft.data import InteractionLog
from recsim_ft.evaluate import agent_scores
from recsim_ft.metrics import top_k
from recsim_ft.schema import Batch

#: Users scored per call of the agent, so a long log does not need one huge score matrix.
CHUNK = 8192


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with its standard error and a normal ``level`` confidence interval.

    ``effective_sample_size`` is Kish's ``sum(w)**2 / sum(w**2)``: how many on-policy events the
    reweighted log is worth (``n`` for an on-policy mean).
    """

    estimator: str
    value: float
    std_error: float
    ci_low: float
    ci_high: float
    level: float
    n: int
    effective_sample_size: float


def _estimate(
    estimator: str, value: float, std_error: float, level: float, n: int, ess: float
) -> Estimate:
    level = check_float("level", level, low=0, high=1, low_open=True, high_open=True)
    half = float(stats.norm.ppf(0.5 + level / 2)) * std_error
    return Estimate(
        estimator,
        float(value),
        float(std_error),
        float(value - half),
        float(value + half),
        level,
        n,
        float(ess),
    )


def greedy_actions(agent: Any, users: Batch, n_items: int) -> np.ndarray:
    """(n_users,) int64: each user's top-scored item (ties to the lower index), scored in chunks."""
    chunks = [
        top_k(agent_scores(agent, users[start : start + CHUNK], n_items), 1)[:, 0]
        for start in range(0, len(users), CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def target_probabilities(log: InteractionLog, target: Any) -> np.ndarray:
    """(n,) float64: the target policy's probability of each logged action.

    ``target`` is an agent (anything with ``score_items``; deterministic greedy top-1) or an
    (n, n_items) matrix whose row ``i`` is the target's action distribution for user ``i``.
    """
    if hasattr(target, "score_items"):
        return (greedy_actions(target, log.users, log.n_items) == log.actions).astype(np.float64)
    probabilities = np.asarray(target, dtype=np.float64)
    if probabilities.shape != (len(log), log.n_items):
        raise ValueError(
            f"target probabilities must have shape ({len(log)}, {log.n_items}) (events, items), "
            f"got {probabilities.shape}"
        )
    bad = ~np.isfinite(probabilities).all(axis=1) | (probabilities < 0).any(axis=1)
    bad |= ~np.isclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"target probabilities: {int(bad.sum())} rows are not distributions (non-negative, "
            f"finite, summing to 1); first: row {row}, sum {probabilities[row].sum()!r}"
        )
    return probabilities[np.arange(len(log)), log.actions]


def importance_weights(log: InteractionLog, target: Any) -> np.ndarray:
    """(n,) ``pi(action | user) / propensity``, after checking every propensity lies in (0, 1]."""
    if len(log) == 0:
        raise ValueError("cannot estimate a policy value from an empty log")
    propensities = log.propensities
    problems = {
        "NaN": np.isnan(propensities),
        "zero or negative": propensities <= 0,
        "above 1": propensities > 1,
    }
    for what, mask in problems.items():
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise ValueError(
                f"{log.env_id} log: {int(mask.sum())} propensities are {what} "
                f"(first: row {row}, value {propensities[row]!r}); off-policy estimates need the "
                "behaviour policy's probability of every logged action, in (0, 1] "
                "(collect with a policy that returns (actions, propensities))"
            )
    return target_probabilities(log, target) / propensities


def ips(log: InteractionLog, target: Any, level: float = 0.95) -> Estimate:
    """Inverse propensity scoring: ``mean(w * reward)``, standard error from the sample variance."""
    weights = importance_weights(log, target)
    terms = weights * log.rewards.astype(np.float64)
    n = len(terms)
    std_error = terms.std(ddof=1) / np.sqrt(n) if n > 1 else np.inf
    return _estimate("IPS", terms.mean(), std_error, level, n, _kish(weights))


def snips(log: InteractionLog, target: Any, level: float = 0.95) -> Estimate:
    """Self-normalised IPS: ``sum(w * reward) / sum(w)``; standard error by the delta method.

    A target that never picks a logged action has no estimate: that is an error.
    """
    weights = importance_weights(log, target)
    total = weights.sum()
    if total == 0:
        raise ValueError(
            "SNIPS is undefined: the target policy gives probability 0 to every logged action"
        )
    rewards = log.rewards.astype(np.float64)
    value = (weights * rewards).sum() / total
    std_error = np.sqrt((weights**2 * (rewards - value) ** 2).sum()) / total
    return _estimate("SNIPS", value, std_error, level, len(weights), _kish(weights))


def _kish(weights: np.ndarray) -> float:
    squares = (weights**2).sum()
    return float(weights.sum() ** 2 / squares) if squares > 0 else 0.0


def policy_value(
    agent: Any, env: gym.Env, n_users: int = 10_000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """The agent's true value: mean expected reward of its top-1 item over ``n_users`` fresh users
    (``env.sample_users`` with ``seed``); the standard error is that of the user sample."""
    rec_env = env.unwrapped
    if int(n_users) < 2:
        raise ValueError(f"n_users must be at least 2, got {n_users!r}")
    users = rec_env.sample_users(int(n_users), np.random.default_rng(seed))
    values = rec_env.expected_reward(users)[
        np.arange(len(users)), greedy_actions(agent, users, rec_env.n_items)
    ]
    return _estimate(
        "on-policy",
        values.mean(),
        values.std(ddof=1) / np.sqrt(len(values)),
        level,
        len(values),
        len(values),
    )
