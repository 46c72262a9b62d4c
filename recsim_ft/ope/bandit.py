"""Off-policy estimators for logs of single recommendations: IPS, SNIPS, the direct method, doubly
robust, self-normalised DR and switch-DR, and the exact values to check them against.

Notation, per logged event ``i``: user ``x_i``, logged action ``a_i``, reward ``r_i``, behaviour
propensity ``mu_i``; the target policy ``pi``; ``w_i = pi(a_i | x_i) / mu_i``; a reward model
``q(x, a)`` (predicted mean reward) with ``q_pi(x) = sum_a pi(a | x) q(x, a)``.

- IPS ``mean(w r)``: unbiased, high variance.
- SNIPS ``sum(w r) / sum(w)``.
- DM ``mean(q_pi(x))``: no variance from weights, biased as far as ``q`` is wrong.
- DR ``mean(q_pi(x) + w (r - q(x, a)))``: unbiased when the propensities are right, low
  variance when ``q`` is good.
- SNDR ``mean(q_pi(x)) + sum(w (r - q(x, a))) / sum(w)``.
- Switch-DR (Wang, Agarwal & Dudik 2017) ``mean(q_pi(x) + w 1[w <= tau] (r - q(x, a)))``: DR
  where the weight is at most ``tau``, DM where it is larger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from recsim_ft.checks import check_actions, check_float, check_int
from recsim_ft.data import InteractionLog
from recsim_ft.data.log import check_propensities
from recsim_ft.evaluate import agent_scores
from recsim_ft.metrics import top_k
from recsim_ft.ope.estimate import Estimate, _estimate, finish, per_event_mean
from recsim_ft.schema import Batch

#: Users scored per call of the agent, so a long log does not need one huge score matrix.
CHUNK = 8192


@dataclass
class BanditData:
    """Logged single-recommendation events as arrays: what every estimator here reads.

    Build one from your own arrays to evaluate a log that did not come from recsim-ft; an
    ``InteractionLog`` is turned into one by ``from_log`` (every estimator accepts either).
    ``users`` are needed only by a target or reward model given as an agent (which scores
    users); ``name`` labels error messages.
    """

    rewards: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    n_items: int
    users: Batch | None = None
    name: str = "logged data"

    def __post_init__(self) -> None:
        self.n_items = check_int("n_items", self.n_items, low=1)
        n = len(np.asarray(self.actions))
        self.actions = check_actions(self.actions, self.n_items, n, f"{self.name}: actions")
        float_arrays(self, {"rewards": (n,), "propensities": (n,)}, rewards="rewards")

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def from_log(cls, log: InteractionLog) -> BanditData:
        if log.slate_columns is not None:
            raise ValueError(
                f"{log.env_id} log is a slate log (one row per slate position): estimate slate "
                "policies with recsim_ft.ope.iips or pseudo_inverse"
            )
        return cls(
            log.rewards, log.actions, log.propensities, log.n_items, log.users, f"{log.env_id} log"
        )


def float_arrays(data: Any, shapes: dict[str, tuple[int, ...]], rewards: str) -> None:
    """Set each named field of ``data`` (a ``BanditData`` or ``SlateData``) to a float64 array,
    refusing a wrong shape, non-finite ``rewards`` or a number of users unlike the rows'."""
    for field, shape in shapes.items():
        value = np.asarray(getattr(data, field), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"{data.name}: {field} must have shape {shape}, got {value.shape}")
        setattr(data, field, value)
    if not np.isfinite(getattr(data, rewards)).all():
        raise ValueError(f"{data.name}: {rewards} contain NaN or inf")
    n = next(iter(shapes.values()))[0]
    if data.users is not None and len(data.users) != n:
        raise ValueError(f"{data.name}: {len(data.users)} users for {n} rows")


def bandit_data(data: InteractionLog | BanditData) -> BanditData:
    """``data`` as ``BanditData`` (a log is converted, arrays are not copied); an empty log is
    refused (no estimator has a value without events)."""
    if len(data) == 0:
        raise ValueError("the log is empty: an off-policy estimate needs logged events")
    return data if isinstance(data, BanditData) else BanditData.from_log(data)


def greedy_actions(agent: Any, users: Batch, n_items: int) -> np.ndarray:
    """(n_users,) int64: each user's top-scored item (ties to the lower index), scored in chunks."""
    chunks = [
        top_k(agent_scores(agent, users[start : start + CHUNK], n_items), 1)[:, 0]
        for start in range(0, len(users), CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def _scored_users(data: BanditData, what: str) -> Batch:
    if data.users is None:
        raise ValueError(
            f"{what} given as an agent needs the logged users; pass a matrix instead, or "
            "BanditData with users"
        )
    return data.users


def _target_matrix(data: BanditData, target: Any) -> np.ndarray:
    probabilities = np.asarray(target, dtype=np.float64)
    if probabilities.ndim == 3 and probabilities.shape[2] == 1:  # OBP's action_dist
        probabilities = probabilities[:, :, 0]
    if probabilities.shape != (len(data), data.n_items):
        raise ValueError(
            f"target probabilities must have shape ({len(data)}, {data.n_items}) (events, items) "
            f"or OBP's ({len(data)}, {data.n_items}, 1), got {probabilities.shape}"
        )
    bad = ~np.isfinite(probabilities).all(axis=1) | (probabilities < 0).any(axis=1)
    bad |= ~np.isclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"target probabilities: {int(bad.sum())} rows are not distributions (non-negative, "
            f"finite, summing to 1); first: row {row}, sum {probabilities[row].sum()!r}"
        )
    return probabilities


def target_probabilities(log: InteractionLog | BanditData, target: Any) -> np.ndarray:
    """(n,) float64: the target policy's probability of each logged action.

    ``target`` is an agent (anything with ``score_items``; deterministic greedy top-1) or an
    (n, n_items) matrix whose row ``i`` is the target's action distribution for user ``i``.
    """
    data = bandit_data(log)
    if hasattr(target, "score_items"):
        users = _scored_users(data, "a target")
        return (greedy_actions(target, users, data.n_items) == data.actions).astype(np.float64)
    return _target_matrix(data, target)[np.arange(len(data)), data.actions]


def target_distribution(log: InteractionLog | BanditData, target: Any) -> np.ndarray:
    """(n, n_items) float64: the target policy's action distribution for every logged user (an
    agent's is one-hot on its greedy item)."""
    data = bandit_data(log)
    if hasattr(target, "score_items"):
        users = _scored_users(data, "a target")
        greedy = greedy_actions(target, users, data.n_items)
        return np.eye(data.n_items)[greedy]
    return _target_matrix(data, target)


def reward_predictions(log: InteractionLog | BanditData, reward_model: Any) -> np.ndarray:
    """(n, n_items) float64 predicted mean reward of every item for every logged user.

    ``reward_model`` is an (n, n_items) matrix (e.g. ``cross_fitted_rewards(log)``) or anything
    with ``score_items(users)`` whose scores are reward predictions (an agent trained by MSE
    on rewards, such as ``TwoTowerAgent``; ``OracleAgent`` gives the truth).
    """
    data = bandit_data(log)
    if hasattr(reward_model, "score_items"):
        users = _scored_users(data, "a reward model")
        chunks = [
            agent_scores(reward_model, users[start : start + CHUNK], data.n_items)
            for start in range(0, len(users), CHUNK)
        ]
        return np.concatenate(chunks).astype(np.float64)
    predictions = np.asarray(reward_model, dtype=np.float64)
    if predictions.shape != (len(data), data.n_items):
        raise ValueError(
            f"reward predictions must have shape ({len(data)}, {data.n_items}) (events, items), "
            f"got {predictions.shape}"
        )
    if not np.isfinite(predictions).all():
        raise ValueError("reward predictions contain NaN or inf")
    return predictions


def importance_weights(log: InteractionLog | BanditData, target: Any) -> np.ndarray:
    """(n,) ``pi(action | user) / propensity``, after checking every propensity lies in (0, 1]."""
    data = bandit_data(log)
    if len(data) == 0:
        raise ValueError("cannot estimate a policy value from an empty log")
    check_propensities(data.propensities, data.name)
    return target_probabilities(data, target) / data.propensities


def ips(
    log: InteractionLog | BanditData,
    target: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Inverse propensity scoring: ``mean(w * reward)``, standard error from the sample variance.

    ``ci="bootstrap"`` gives a percentile bootstrap interval (``n_bootstrap`` resamples drawn
    with ``seed``) instead of the normal one; every estimator here takes these arguments.
    """
    data = bandit_data(log)
    weights = importance_weights(data, target)
    terms = weights * data.rewards
    return per_event_mean("IPS", terms, weights, level, ci, n_bootstrap, seed)


def snips(
    log: InteractionLog | BanditData,
    target: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Self-normalised IPS: ``sum(w * reward) / sum(w)``; standard error by the delta method.

    A target that never picks a logged action has no estimate: that is an error.
    """
    data = bandit_data(log)
    weights = importance_weights(data, target)
    total = weights.sum()
    if total == 0:
        raise ValueError(
            "SNIPS is undefined: the target policy gives probability 0 to every logged action"
        )
    value = (weights * data.rewards).sum() / total
    std_error = np.sqrt((weights**2 * (data.rewards - value) ** 2).sum()) / total
    return finish(
        "SNIPS",
        value,
        std_error,
        weights,
        np.column_stack([weights * data.rewards, weights]),
        lambda means: means[:, 0] / means[:, 1],
        level,
        ci,
        n_bootstrap,
        seed,
    )


@dataclass
class _ModelTerms:
    """What the model-based estimators share: weights, ``q_pi(x_i)`` and residuals."""

    weights: np.ndarray
    direct: np.ndarray  # q_pi(x_i)
    residuals: np.ndarray  # r_i - q(x_i, a_i)


def _model_terms(data: BanditData, target: Any, reward_model: Any) -> _ModelTerms:
    weights = importance_weights(data, target)
    distribution = target_distribution(data, target)
    predicted = reward_predictions(data, reward_model)
    direct = (distribution * predicted).sum(axis=1)
    residuals = data.rewards - predicted[np.arange(len(data)), data.actions]
    return _ModelTerms(weights, direct, residuals)


def dm(
    log: InteractionLog | BanditData,
    target: Any,
    reward_model: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Direct method: ``mean(q_pi(x))``, the reward model's value of the target on the logged
    users; uses neither the logged actions nor the rewards (nor the propensities)."""
    data = bandit_data(log)
    direct = (target_distribution(data, target) * reward_predictions(data, reward_model)).sum(1)
    return per_event_mean("DM", direct, None, level, ci, n_bootstrap, seed)


def dr(
    log: InteractionLog | BanditData,
    target: Any,
    reward_model: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Doubly robust: ``mean(q_pi(x) + w (r - q(x, a)))``."""
    data = bandit_data(log)
    terms = _model_terms(data, target, reward_model)
    per_event = terms.direct + terms.weights * terms.residuals
    return per_event_mean("DR", per_event, terms.weights, level, ci, n_bootstrap, seed)


def sndr(
    log: InteractionLog | BanditData,
    target: Any,
    reward_model: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Self-normalised doubly robust: ``mean(q_pi(x)) + sum(w (r - q(x, a))) / sum(w)``."""
    data = bandit_data(log)
    terms = _model_terms(data, target, reward_model)
    if terms.weights.sum() == 0:
        raise ValueError(
            "SNDR is undefined: the target policy gives probability 0 to every logged action"
        )
    corrected = terms.weights * terms.residuals
    correction = corrected.sum() / terms.weights.sum()
    influence = terms.direct - terms.direct.mean()
    influence += (corrected - correction * terms.weights) / terms.weights.mean()
    return finish(
        "SNDR",
        terms.direct.mean() + correction,
        np.sqrt((influence**2).sum()) / len(influence),
        terms.weights,
        np.column_stack([terms.direct, corrected, terms.weights]),
        lambda means: means[:, 0] + means[:, 1] / means[:, 2],
        level,
        ci,
        n_bootstrap,
        seed,
    )


def switch_dr(
    log: InteractionLog | BanditData,
    target: Any,
    reward_model: Any,
    level: float = 0.95,
    *,
    tau: float,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Switch-DR: ``mean(q_pi(x) + w 1[w <= tau] (r - q(x, a)))``, DR on the events whose weight
    is at most ``tau`` and the direct method on the rest (``tau=inf``: DR; ``tau=0``: DM). Its
    effective sample size is that of the weights it keeps."""
    tau = check_float("tau", tau, low=0) if tau != np.inf else np.inf
    data = bandit_data(log)
    terms = _model_terms(data, target, reward_model)
    kept = np.where(terms.weights <= tau, terms.weights, 0.0)
    per_event = terms.direct + kept * terms.residuals
    return per_event_mean("Switch-DR", per_event, kept, level, ci, n_bootstrap, seed)


def exact_value(
    env: gym.Env,
    log: InteractionLog | BanditData,
    target: Any,
    allow_env_mismatch: bool = False,
) -> float:
    """The target's exact value on the logged users: ``mean_i sum_a pi(a | x_i) q(x_i, a)``
    with the env's true ``expected_reward`` (no sampling noise in the truth).

    The truth is that of ``env``: a log of another env or env setting (another vaccine seed, say)
    is refused, as ``InteractionLog.check_env`` does, unless ``allow_env_mismatch``."""
    if isinstance(log, InteractionLog):
        log.check_env(env, allow_env_mismatch)
    data = bandit_data(log)
    users = _scored_users(data, "exact_value")
    expected = env.unwrapped.expected_reward(users)
    return float((target_distribution(data, target) * expected).sum(axis=1).mean())


def policy_value(
    agent: Any, env: gym.Env, n_users: int = 10_000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """The agent's true value: mean expected reward of its top-1 item over ``n_users`` fresh users
    (``env.sample_users`` with ``seed``); the standard error is that of the user sample."""
    rec_env = env.unwrapped
    n_users = check_int("n_users", n_users, low=2)
    users = rec_env.sample_users(n_users, np.random.default_rng(seed))
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
