"""The result of every off-policy estimator and its confidence intervals (normal or bootstrap)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from recsim_ft.checks import check_choice, check_float, check_int

#: How an estimate's confidence interval is computed.
CI_METHODS = ("normal", "bootstrap")
#: Bootstrap replicates drawn at once are bounded so that their resampling counts (replicates x
#: events integers) stay near this many entries.
_BOOTSTRAP_ENTRIES = 4_000_000


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with its standard error and a ``level`` confidence interval.

    ``effective_sample_size`` is Kish's ``sum(w)**2 / sum(w**2)`` of the importance weights:
    how many on-policy events the reweighted log is worth (``n`` for an on-policy mean, and for
    the direct method, which reweights nothing). ``ci_method`` says how ``ci_low`` / ``ci_high``
    were computed: ``"normal"`` (value +- z * std_error) or ``"bootstrap"`` (percentile interval
    of the estimator recomputed on events resampled with replacement). ``std_error`` is always
    the estimator's delta-method (influence function) standard error.
    """

    estimator: str
    value: float
    std_error: float
    ci_low: float
    ci_high: float
    level: float
    n: int
    effective_sample_size: float
    ci_method: str = "normal"


def _estimate(
    estimator: str, value: float, std_error: float, level: float, n: int, ess: float
) -> Estimate:
    """An estimate with the normal interval ``value +- z(level) * std_error``."""
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


def kish(weights: np.ndarray) -> float:
    """Kish's effective sample size ``sum(w)**2 / sum(w**2)`` (0 when every weight is 0)."""
    squares = (weights**2).sum()
    return float(weights.sum() ** 2 / squares) if squares > 0 else 0.0


def bootstrap_values(
    columns: np.ndarray,
    combine: Callable[[np.ndarray], np.ndarray],
    n_bootstrap: int,
    seed: int,
) -> np.ndarray:
    """(n_bootstrap,) estimator values on events resampled with replacement.

    Every estimator here is a smooth function of a few per-event means: ``columns`` (n, K) are
    the per-event terms and ``combine`` maps rows of their means (B, K) to values (B,). A
    replicate draws n events uniformly with replacement; with ``counts`` the times each event
    was drawn, its means are ``counts @ columns / n``. The reward model (if any) stays fixed, so
    its own fitting noise is not in the spread.
    """
    n = len(columns)
    rng = np.random.default_rng(seed)
    per_draw = max(1, _BOOTSTRAP_ENTRIES // max(n, 1))
    values = []
    for start in range(0, n_bootstrap, per_draw):
        size = min(per_draw, n_bootstrap - start)
        drawn = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
        values.append(combine(counts @ columns / n))
    return np.concatenate(values)


def finish(
    estimator: str,
    value: float,
    std_error: float,
    weights: np.ndarray | None,
    columns: np.ndarray,
    combine: Callable[[np.ndarray], np.ndarray],
    level: float,
    ci: str,
    n_bootstrap: int,
    seed: int,
) -> Estimate:
    """The ``Estimate`` of an estimator, with the interval ``ci`` asks for; ``weights`` are its
    importance weights (None: it reweights nothing, ESS = n)."""
    check_choice("ci", ci, CI_METHODS)
    n = len(columns)
    ess = float(n) if weights is None else kish(weights)
    normal = _estimate(estimator, value, std_error, level, n, ess)
    if ci == "normal":
        return normal
    n_bootstrap = check_int("n_bootstrap", n_bootstrap, low=2)
    replicates = bootstrap_values(columns, combine, n_bootstrap, seed)
    low, high = np.quantile(replicates, [(1 - normal.level) / 2, (1 + normal.level) / 2])
    return Estimate(
        estimator,
        float(value),
        float(std_error),
        float(low),
        float(high),
        normal.level,
        n,
        ess,
        "bootstrap",
    )


def mean_of_column(means: np.ndarray) -> np.ndarray:
    """``combine`` of the estimators that are one per-event mean."""
    return means[:, 0]


def per_event_mean(
    estimator: str,
    terms: np.ndarray,
    weights: np.ndarray | None,
    level: float,
    ci: str,
    n_bootstrap: int,
    seed: int,
) -> Estimate:
    """The estimate of an estimator that is the mean of per-event ``terms`` (standard error from
    their sample variance)."""
    n = len(terms)
    std_error = terms.std(ddof=1) / np.sqrt(n) if n > 1 else np.inf
    return finish(
        estimator,
        terms.mean(),
        std_error,
        weights,
        terms[:, None],
        mean_of_column,
        level,
        ci,
        n_bootstrap,
        seed,
    )
