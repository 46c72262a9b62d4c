"""Statistics over the seeds of a sweep: mean and t-based confidence interval per metric, and a
paired comparison of two agents on the per-seed metrics (the two agents of one seed share data
and test users, so their difference is what varies)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from recsim_ft.agents.registry import REFERENCE_BASELINE, names
from recsim_ft.experiments.executors import RunOutcome
from recsim_ft.experiments.rundir import RunDir
from recsim_ft.experiments.specs import row_order
from recsim_ft.metrics import METRICS as METRIC_FAMILIES
from recsim_ft.paper_results import paper_value


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the t-based ``confidence`` interval of the mean (NaN bounds for fewer than 2
    values).

    >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    >>> m, round(lo, 3), round(hi, 3)
    (2.0, -0.484, 4.484)
    """
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return mean, math.nan, math.nan
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired comparison of ``a`` and ``b`` (same seeds): mean difference ``a - b``, paired t-test
    (``scipy.stats.ttest_rel``) and Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) p-values.

    A p-value is NaN when the test is undefined (fewer than 2 pairs, or all differences zero).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    diff = a - b
    result = {
        "n_pairs": int(a.size),
        "mean_diff": float(diff.mean()) if a.size else math.nan,
        "t_stat": math.nan,
        "t_pvalue": math.nan,
        "wilcoxon_stat": math.nan,
        "wilcoxon_pvalue": math.nan,
    }
    if a.size < 2 or not np.any(diff != 0):
        return result
    t = stats.ttest_rel(a, b)
    result.update(t_stat=float(t.statistic), t_pvalue=float(t.pvalue))
    w = stats.wilcoxon(a, b)
    result.update(wilcoxon_stat=float(w.statistic), wilcoxon_pvalue=float(w.pvalue))
    return result


def _metric_order(name: str) -> tuple[int, int]:
    """Table order of a metric ``"NAME@k"``: ``recsim_ft.metrics.METRICS`` order, then k. Fresh
    metrics come in this order, but a reused run's come back key-sorted from its metrics.json; one
    order keeps a continued sweep's tables identical to an uninterrupted one's."""
    family, _, k = name.partition("@")
    return (
        METRIC_FAMILIES.index(family) if family in METRIC_FAMILIES else len(METRIC_FAMILIES),
        int(k),
    )


def runs_frame(outcomes: Iterable[RunOutcome]) -> pd.DataFrame:
    """One row per (run, metric) of the successful runs: setting, agent (the table row,
    ``RunSpec.row``: ``"mamba-ranking"`` for a preset other than the paper's), seed, metric,
    value."""
    rows = [
        {
            "setting": o.spec.setting,
            "agent": o.spec.row,
            "seed": o.spec.seed,
            "metric": metric,
            "value": value,
        }
        for o in outcomes
        if o.status != "failed"
        for metric, value in sorted(
            ((m, v) for m, v in o.metrics.items() if "@" in m),
            key=lambda item: _metric_order(item[0]),
        )
    ]
    return pd.DataFrame(rows, columns=["setting", "agent", "seed", "metric", "value"])


def costs_frame(outcomes: Iterable[RunOutcome]) -> pd.DataFrame:
    """One row per (run, cost) of the successful runs: setting, agent, seed, cost, value, with
    the costs each run wrote (``recsim_ft.experiments.runs.COSTS``: seconds to collect the log
    and to fit, milliseconds to score 1,000 test users). Apart from ``runs_frame``: timings
    differ between machines and runs, the metrics never do."""
    rows = [
        {"setting": o.spec.setting, "agent": o.spec.row, "seed": o.spec.seed}
        | {"cost": cost, "value": value}
        for o in outcomes
        if o.status != "failed" and (o.run_dir / "metrics.json").is_file()
        for cost, value in RunDir(o.run_dir).costs().items()
    ]
    return pd.DataFrame(rows, columns=["setting", "agent", "seed", "cost", "value"])


def summarize(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (setting, agent, metric): n (seeds), mean, CI bounds, lowest and highest seed, and the
    paper's mean where it has one."""
    rows = []
    for (setting, agent, metric), group in runs.groupby(["setting", "agent", "metric"], sort=False):
        mean, low, high = mean_ci(group["value"].to_numpy(), confidence)
        rows.append(
            {
                "setting": setting,
                "agent": agent,
                "metric": metric,
                "n": len(group),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "min": group["value"].min(),
                "max": group["value"].max(),
                "paper": paper_value(setting, agent, metric),
            }
        )
    columns = ["setting", "agent", "metric", "n", "mean", "ci_low", "ci_high", "min", "max"]
    return pd.DataFrame(rows, columns=[*columns, "paper"])


def table_pairs(rows: Iterable[str]) -> list[tuple[str, str]]:
    """The comparisons of a table with these rows (``RunSpec.row``): under each preset (and
    precision), FT-Mamba against FT-Transformer (the paper's question) and against the strong
    default, the GBDT; under a variant other than the paper's FT-Transformer against the GBDT
    too, and against the popularity-by-share baselines where a table has them; each model at bf16
    against itself at fp32 (does the precision cost quality?), and with the popularity prior
    against itself without (rows ``-prior`` against those without a prior variant and those
    with ``-noprior``), and with early stopping other than its preset's (``-bestHR@1``,
    ``-laststep``) against itself with its preset's.

    >>> table_pairs(["mamba", "transformer", "mamba-ranking", "transformer-ranking", "gbdt"])[3:]
    [('mamba-ranking', 'gbdt'), ('transformer-ranking', 'gbdt')]
    >>> table_pairs(["mamba", "transformer", "mamba-bf16", "transformer-bf16", "gbdt"])[5:]
    [('mamba-bf16', 'mamba'), ('transformer-bf16', 'transformer')]
    >>> pairs = table_pairs(["mamba-ranking", "mamba-ranking-prior", "segment_popularity_share"])
    >>> [p for p in pairs if p[0] == "mamba-ranking-prior"][2:]  # doctest: +NORMALIZE_WHITESPACE
    [('mamba-ranking-prior', 'segment_popularity_share'), ('mamba-ranking-prior', 'mamba-ranking'),
     ('mamba-ranking-prior', 'mamba-ranking-noprior')]
    >>> table_pairs(["mamba-ranking", "mamba-ranking-laststep", "gbdt"])[-2]
    ('mamba-ranking-laststep', 'mamba-ranking')
    """
    rows = list(rows)
    variants = dict.fromkeys(r.partition("-")[2] for r in sorted(rows, key=row_order))
    pairs = []
    for variant in variants:
        mamba, transformer = (f"{m}-{variant}" if variant else m for m in ("mamba", "transformer"))
        pairs += [(mamba, transformer), (mamba, REFERENCE_BASELINE)]
        if variant:
            pairs.append((transformer, REFERENCE_BASELINE))
        pairs += [(m, b) for m in (mamba, transformer) for b in names(paired=True) if b in rows]
    for variant in variants:
        other, _, suffix = variant.rpartition("-")
        if suffix == "prior":
            bases = (other, "-".join(filter(None, (other, "noprior"))))
        elif suffix in ("bf16", "laststep") or suffix.startswith("best"):
            bases = (other,)
        else:
            continue
        pairs += [
            (f"{m}-{variant}", f"{m}-{base}" if base else m)
            for base in bases
            for m in ("mamba", "transformer")
        ]
    return pairs


def paired_tests(
    runs: pd.DataFrame, pairs: Sequence[tuple[str, str]] | None = None
) -> pd.DataFrame:
    """Per (a, b) of ``pairs`` (default: ``table_pairs`` of the rows), setting and metric: paired
    test of agent ``a`` vs ``b`` over the seeds both finished (pairs without both rows: none)."""
    if pairs is None:
        pairs = table_pairs(runs["agent"].unique())
    rows = []
    for a, b in pairs:
        for (setting, metric), group in runs.groupby(["setting", "metric"], sort=False):
            wide = group.pivot_table(index="seed", columns="agent", values="value")
            if a not in wide or b not in wide:
                continue
            both = wide[[a, b]].dropna()
            rows.append(
                {"a": a, "b": b, "setting": setting, "metric": metric}
                | paired_test(both[a], both[b])
            )
    return pd.DataFrame(rows)
