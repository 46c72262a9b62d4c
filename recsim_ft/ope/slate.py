"""Off-policy estimators for slate logs: independent-item IPS (IIPS) and the pseudo-inverse (PI)
estimator, and the exact slate values to check them against.

Notation, per logged slate ``i`` of ``k`` items out of ``m``: user ``x_i``, slate ``s_i``,
per-position rewards ``r_ij`` (in the envs: the chosen item's reward at its position, 0
elsewhere) and slate reward ``r_i = sum_j r_ij``; ``mu_ij`` the behaviour policy's probability
of item ``s_ij`` at position ``j``; ``pi_j(a | x)`` the target's probability of putting item
``a`` at position ``j``.

- Standard slate IPS ``mean_i r_i pi(s_i | x_i) / mu(s_i | x_i)``: the whole slate's
  probabilities; unbiased whatever the reward, with the largest variance.
- IIPS ``mean_i sum_j r_ij pi_j(s_ij | x_i) / mu_ij`` (Li et al. 2018): unbiased when the
  reward at a position depends only on the item there.
- RIPS ``mean_i sum_j r_ij pi(s_i1..s_ij | x_i) / mu(s_i1..s_ij | x_i)`` (reward-interaction
  IPS, McInerney et al. 2020): the probabilities of the slate's first ``j`` items (the
  cascade); unbiased when the reward at a position depends only on the items up to it.
- PI ``mean_i r_i w_i`` with the pseudo-inverse weight ``w_i = q_pi(x_i)^T Gamma(x_i)^+ 1_{s_i}``
  of Swaminathan et al. (2017, "Off-policy evaluation for slate recommendation"), ``Gamma`` the
  behaviour policy's second moment of the (position, item) indicators: unbiased when the slate
  reward is a sum of per-position terms. For the uniform behaviour policy (``collect``'s
  default) the weight has a closed form, derived from the eigenvalues of ``Gamma``
  (``l/m``, ``(m-l)/(m(m-1))``, ``1/(m-1)`` and 0)::

      w_i = 1 + m (m - 1) / (m - k) * (P_i / k - k / m) + (m - 1) * (S_i - P_i / k)
      S_i = sum_j pi_j(s_ij | x_i),     P_i = sum_{l, j} pi_j(s_il | x_i)

  (the middle term is absent when ``k = m``; with ``k = 1``, ``w_i`` is the IPS weight).

In the envs' slates the user chooses one item by a multinomial logit, so the items of a slate
compete and neither assumption holds exactly: both estimators are then biased, by an amount
``docs/ope_validation.md`` measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from recsim_ft.checks import check_int, check_slates
from recsim_ft.data import InteractionLog
from recsim_ft.data.log import logged_uniform_slates, uniform_slate_cascade
from recsim_ft.ope.bandit import check_propensities, float_arrays
from recsim_ft.ope.estimate import Estimate, per_event_mean
from recsim_ft.schema import Batch


@dataclass
class SlateData:
    """Logged slates as arrays: ``slates`` (n, k), ``position_rewards`` (n, k) (the reward
    earned at each position: in the envs, the chosen item's reward at its position and 0
    elsewhere; other logs may have several clicks per slate), ``position_propensities`` (n, k)
    and ``slate_propensities`` (n,); ``users`` only for targets given as agents. ``from_log``
    reads a slate log (every estimator accepts either)."""

    slates: np.ndarray
    position_rewards: np.ndarray
    position_propensities: np.ndarray
    slate_propensities: np.ndarray
    n_items: int
    users: Batch | None = None
    name: str = "logged slates"

    def __post_init__(self) -> None:
        self.n_items = check_int("n_items", self.n_items, low=1)
        self.slates = np.asarray(self.slates)
        if self.slates.ndim != 2:
            raise ValueError(f"{self.name}: slates must be (n, k), got shape {self.slates.shape}")
        n, k = self.slates.shape
        self.slates = check_slates(self.slates, self.n_items, (n, k), f"{self.name}: slates")
        shapes = {"position_rewards": (n, k), "position_propensities": (n, k)}
        float_arrays(self, {**shapes, "slate_propensities": (n,)}, rewards="position_rewards")

    def __len__(self) -> int:
        return len(self.slates)

    @property
    def slate_size(self) -> int:
        return self.slates.shape[1]

    @property
    def rewards(self) -> np.ndarray:
        """(n,) the slate rewards: the sums of the position rewards."""
        return self.position_rewards.sum(axis=1)

    @classmethod
    def from_log(cls, log: InteractionLog) -> SlateData:
        columns = log.slate_columns
        if columns is None:
            raise ValueError(
                f"{log.env_id} log holds single recommendations, not slates: use the estimators "
                "of recsim_ft.ope (ips, dr, ...) or collect in an env with slate_size"
            )
        k = columns.slate_size
        n = len(log) // k
        return cls(
            log.actions.reshape(n, k),
            log.rewards.reshape(n, k),
            log.propensities.reshape(n, k),
            columns.slate_propensities[::k],
            log.n_items,
            log.users[np.arange(0, len(log), k)],
            f"{log.env_id} slate log",
        )


def slate_data(data: InteractionLog | SlateData) -> SlateData:
    """``data`` as ``SlateData`` (a slate log is converted); an empty log is refused."""
    if len(data) == 0:
        raise ValueError("the log is empty: an off-policy estimate needs logged slates")
    return data if isinstance(data, SlateData) else SlateData.from_log(data)


def target_slates(data: SlateData, target: Any) -> np.ndarray | None:
    """The target's slates (n, k) when it is deterministic (an agent: its top-k ranking; or an
    integer array), None when it is given as per-position probabilities."""
    if hasattr(target, "recommend"):
        if data.users is None:
            raise ValueError("a target given as an agent needs the logged users")
        return target.recommend(data.users, data.slate_size)
    array = np.asarray(target)
    if array.ndim == 2:
        return check_slates(array, data.n_items, data.slates.shape, "target slates", True)
    return None


def logged_marginals(data: SlateData, target: Any) -> np.ndarray:
    """(n, k, k): ``M[i, j, l]`` = the target's probability of putting the logged item
    ``s_il`` at position ``j`` for user ``i``.

    ``target``: an agent (deterministic: its top-k ranking), an (n, k) integer array of slates,
    or an (n, k, n_items) array whose ``[i, j]`` is the target's distribution of the item at
    position ``j`` (e.g. ``(1 - e) * np.eye(m)[slates_a] + e * np.eye(m)[slates_b]`` for a
    mixture of two slate policies).
    """
    n, k = data.slates.shape
    slates = target_slates(data, target)
    if slates is not None:
        return (slates[:, :, None] == data.slates[:, None, :]).astype(np.float64)
    marginals = np.asarray(target, dtype=np.float64)
    if marginals.shape != (n, k, data.n_items):
        raise ValueError(
            f"target marginals must have shape ({n}, {k}, {data.n_items}) (slates, positions, "
            f"items), or be (n, k) slates or an agent; got {marginals.shape}"
        )
    if (marginals < 0).any() or not np.allclose(marginals.sum(axis=2), 1.0, atol=1e-6):
        raise ValueError(
            "target marginals: every [slate, position] row must be a distribution over items"
        )
    return np.take_along_axis(marginals, np.broadcast_to(data.slates[:, None, :], (n, k, k)), 2)


def cascade_propensities(log: InteractionLog | SlateData) -> np.ndarray:
    """(n, k) the behaviour policy's probability of each logged slate's first ``j + 1`` items,
    which RIPS needs. A log holds the item and the whole-slate propensities only; the cascade
    follows from them for the uniform slate policy (``collect``'s default), which is checked."""
    data = slate_data(log)
    if not logged_uniform_slates(data.position_propensities, data.slate_propensities, data.n_items):
        raise ValueError(
            f"{data.name}: the cascade propensities (of each slate's first j items) follow from "
            "the log only for the uniform slate policy (collect's default); for another "
            "behaviour policy use slate_ips or iips"
        )
    return np.tile(uniform_slate_cascade(data.n_items, data.slate_size), (len(data), 1))


def target_slate_probabilities(data: SlateData, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic target's probabilities of each logged slate (n,) and of each logged
    slate's first ``j + 1`` items (n, k): 1 where its own slate agrees, else 0. ``target``: an
    agent or (n, k) slates."""
    slates = target_slates(data, target)
    if slates is None:
        raise ValueError(
            "slate_ips and rips need a deterministic target (an agent or (n, k) slates): "
            "per-position distributions do not say how likely a whole slate is"
        )
    cascade = np.cumprod(slates == data.slates, axis=1).astype(np.float64)
    return cascade[:, -1], cascade


def slate_ips(
    log: InteractionLog | SlateData,
    target: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Standard slate IPS: ``mean_i r_i pi(s_i | x_i) / mu(s_i | x_i)`` (OBP's
    ``SlateStandardIPS``)."""
    data = slate_data(log)
    check_propensities(data.slate_propensities, data.name)
    on_slate, _ = target_slate_probabilities(data, target)
    weights = on_slate / data.slate_propensities
    return per_event_mean("SIPS", data.rewards * weights, weights, level, ci, n_bootstrap, seed)


def rips(
    log: InteractionLog | SlateData,
    target: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Reward-interaction IPS: ``mean_i sum_j r_ij pi(s_i1..s_ij) / mu(s_i1..s_ij)`` (OBP's
    ``SlateRewardInteractionIPS``), with the cascade propensities of
    ``cascade_propensities``. Its effective sample size is Kish's of the per-slate sums of
    weights."""
    data = slate_data(log)
    _, on_prefix = target_slate_probabilities(data, target)
    weights = on_prefix / cascade_propensities(data)
    terms = (data.position_rewards * weights).sum(axis=1)
    return per_event_mean("RIPS", terms, weights.sum(axis=1), level, ci, n_bootstrap, seed)


def iips(
    log: InteractionLog | SlateData,
    target: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Independent-item IPS: ``mean_i sum_j r_ij pi_j(s_ij | x_i) / mu_ij``. Its effective
    sample size is Kish's of the per-slate sums of weights."""
    data = slate_data(log)
    check_propensities(data.position_propensities, data.name)
    weights = np.diagonal(logged_marginals(data, target), axis1=1, axis2=2)
    weights = weights / data.position_propensities
    terms = (data.position_rewards * weights).sum(axis=1)
    return per_event_mean("IIPS", terms, weights.sum(axis=1), level, ci, n_bootstrap, seed)


def pseudo_inverse_weights(log: InteractionLog | SlateData, target: Any) -> np.ndarray:
    """(n,) the pseudo-inverse weights ``w_i`` of the logged slates (module docstring), for logs
    of the uniform slate behaviour policy (``collect``'s default in a slate env), which is
    checked: its propensities must be those of uniformly random slates."""
    data = slate_data(log)
    m, k = data.n_items, data.slate_size
    uniform_slate = uniform_slate_cascade(m, k)[-1]
    if not logged_uniform_slates(data.position_propensities, data.slate_propensities, m):
        raise ValueError(
            f"{data.name}: pseudo_inverse needs slates logged by the uniform policy (item "
            f"propensity 1/{m} at every position, slate propensity {uniform_slate:.3g}), whose "
            "pseudo-inverse weights have a closed form; use iips for other behaviour policies"
        )
    marginals = logged_marginals(data, target)
    on_position = np.trace(marginals, axis1=1, axis2=2)  # S_i
    anywhere = marginals.sum(axis=(1, 2))  # P_i
    weights = 1.0 + (m - 1) * (on_position - anywhere / k)
    if m > k:
        weights += m * (m - 1) / (m - k) * (anywhere / k - k / m)
    return weights


def pseudo_inverse(
    log: InteractionLog | SlateData,
    target: Any,
    level: float = 0.95,
    *,
    ci: str = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """The pseudo-inverse estimator ``mean_i r_i w_i`` (``pseudo_inverse_weights``), for logs
    of the uniform slate behaviour policy. The weights may be negative; the effective sample
    size is Kish's of them."""
    data = slate_data(log)
    weights = pseudo_inverse_weights(data, target)
    return per_event_mean("PI", data.rewards * weights, weights, level, ci, n_bootstrap, seed)


def exact_slate_value(
    env: gym.Env,
    log: InteractionLog | SlateData,
    target: Any,
    allow_env_mismatch: bool = False,
) -> float:
    """A deterministic slate policy's exact value on the logged users: the mean over slates of
    ``env.slate_expected_reward`` (the env's choice model and true rewards). ``target`` is an
    agent or (n, k) slates; for a mixture, weight its parts' values. A log of another env or
    env setting is refused, as by ``exact_value``, unless ``allow_env_mismatch``."""
    if isinstance(log, InteractionLog):
        log.check_env(env, allow_env_mismatch)
    data = slate_data(log)
    slates = target_slates(data, target)
    if slates is None or data.users is None:
        raise ValueError(
            "exact_slate_value needs the logged users and deterministic target slates (an agent "
            "or an (n, k) array); for a mixture of slate policies weight their values"
        )
    return float(env.unwrapped.slate_expected_reward(data.users, slates).mean())
