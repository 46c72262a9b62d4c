"""The strategies on the last weeks of the data, and their table."""

from __future__ import annotations

import time

import pandas as pd

from recsim_ft.checks import check_int
from recsim_ft.competition.protocol import K, map_at_k, split_week
from recsim_ft.competition.strategies import STRATEGIES, Strategy
from recsim_ft.envs.hm.data import Transactions
from recsim_ft.memory import peak_mib, reset_peak


def evaluate_weeks(
    transactions: Transactions,
    strategies: dict[str, Strategy] | None = None,
    weeks: int = 1,
    k: int = K,
) -> pd.DataFrame:
    """MAP@k of every strategy on each of the last ``weeks`` weeks of the data as the target
    (trained on everything before it): one row per (week, strategy) with the customers scored,
    the strategy's seconds and the process's peak resident memory while it ran (MiB, NaN where
    the system does not say; the data already loaded included)."""
    strategies = STRATEGIES if strategies is None else strategies
    if not strategies:
        raise ValueError("no strategy to evaluate")
    k = check_int("k", k, low=1)
    rows = []
    for back in range(check_int("weeks", weeks, low=1)):
        split = split_week(transactions, back)
        for name, strategy in strategies.items():
            reset_peak()
            start = time.perf_counter()
            try:
                score = map_at_k(strategy(split.train, split.customers, k), split, k)
            except ValueError as err:
                raise ValueError(f"strategy {name!r}, target week {split.week}: {err}") from err
            rows.append(
                {
                    "week": split.week,
                    "strategy": name,
                    f"MAP@{k}": score,
                    "customers": len(split.customers),
                    "seconds": round(time.perf_counter() - start, 2),
                    "peak_mib": round(peak_mib()),
                }
            )
    return pd.DataFrame(rows)


def markdown(results: pd.DataFrame, source: str, k: int = K) -> str:
    """:func:`evaluate_weeks`'s results as Markdown: each strategy's MAP@k per target week and
    their mean, ``source`` saying which data."""
    metric = f"MAP@{k}"
    if results.empty or metric not in results:
        raise ValueError(f"no {metric} results to show (evaluate_weeks gives them)")
    table = results.pivot(index="strategy", columns="week", values=metric)
    table = table.loc[list(dict.fromkeys(results["strategy"]))]  # the strategies' order
    weeks = list(table.columns)[::-1]  # latest first
    customers = results.groupby("week")["customers"].first()
    lines = [
        f"# H&M competition protocol: {metric} ({source})",
        "",
        f"Target: one week of purchases, the strategies seeing every transaction before it; "
        f"{metric} as Kaggle scores it, over the customers who bought that week.",
        "",
        "| strategy | mean | " + " | ".join(weeks) + " | s per week | peak MiB |",
        "| --- | --- | " + " | ".join("---" for _ in weeks) + " | --- | --- |",
        "| customers scored | | " + " | ".join(f"{customers[w]:,}" for w in weeks) + " | | |",
    ]
    costs = (
        results.groupby("strategy").agg(seconds=("seconds", "mean"), peak=("peak_mib", "max"))
        if {"seconds", "peak_mib"} <= set(results)
        else None
    )
    for name, row in table.iterrows():
        values = " | ".join(f"{row[w]:.4f}" for w in weeks)
        cost = (
            " | |"
            if costs is None
            else f" | {costs.loc[name, 'seconds']:.1f} | {costs.loc[name, 'peak']:,.0f} |"
        )
        lines.append(f"| {name} | {row[weeks].mean():.4f} | {values}{cost}")
    return "\n".join(lines) + "\n"
