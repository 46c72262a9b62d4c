"""The report of a sweep: Markdown tables (ours beside the paper's numbers, with paired tests),
CSV files of the summary, the paired tests and every run, and the paper's figures."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_ft.experiments.executors import RunOutcome, sweep
from recsim_ft.experiments.figures import paper_figures
from recsim_ft.experiments.runs import ERROR_FILE, write_atomic
from recsim_ft.experiments.specs import (
    AGENT_LABELS,
    TABLE_AGENTS,
    Setting,
    table_settings,
    table_specs,
)
from recsim_ft.experiments.stats import paired_tests, runs_frame, summarize
from recsim_ft.paper_results import METRICS as PAPER_METRICS


def _table_columns(metrics: Iterable[str]) -> list[str]:
    """The paper's columns (plus MAP@12 where measured) when present, else every metric; the CSV
    files keep every metric."""
    present = set(metrics)
    return [m for m in (*PAPER_METRICS, "MAP@12") if m in present] or sorted(present)


def markdown_table(
    summary: pd.DataFrame,
    tests: pd.DataFrame,
    labels: dict[str, str] | None = None,
    a: str = "mamba",
    b: str = "transformer",
) -> str:
    """The results as Markdown: per setting, mean ± CI half-width per agent, the paper's row under
    each agent it reports, and the paired-test p-values."""
    labels = labels or {}
    lines = []
    for setting, group in summary.groupby("setting", sort=False):
        metrics = _table_columns(group["metric"])
        n_seeds = int(group["n"].max())
        seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
        lines += [
            f"### {labels.get(setting, setting)} ({seeds}; mean ± 95% CI half-width)",
            "",
            "| agent | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        cells = group.set_index(["agent", "metric"])
        agents = [x for x in TABLE_AGENTS if x in set(group["agent"])] + sorted(
            set(group["agent"]) - set(TABLE_AGENTS)
        )
        for agent in agents:
            row = []
            for metric in metrics:
                if (agent, metric) not in cells.index:
                    row.append("")
                    continue
                cell = cells.loc[(agent, metric)]
                half = (cell["ci_high"] - cell["ci_low"]) / 2
                row.append(f"{cell['mean']:.3f}" + ("" if math.isnan(half) else f" ± {half:.3f}"))
            lines.append(f"| {AGENT_LABELS.get(agent, agent)} | " + " | ".join(row) + " |")
            paper = [
                cells.loc[(agent, m), "paper"] if (agent, m) in cells.index else None
                for m in metrics
            ]
            if any(p is not None and not pd.isna(p) for p in paper):
                lines.append(
                    "| &nbsp;&nbsp;paper | "
                    + " | ".join("" if p is None or pd.isna(p) else f"{p:.3f}" for p in paper)
                    + " |"
                )
        here = tests[tests["setting"] == setting] if len(tests) else tests
        if len(here):
            here = here.set_index("metric")
            lines += [
                "",
                f"Paired tests, {AGENT_LABELS.get(a, a)} − {AGENT_LABELS.get(b, b)} over seeds "
                "(paired t-test `scipy.stats.ttest_rel`; "
                "Wilcoxon signed-rank `scipy.stats.wilcoxon`):",
                "",
                "| metric | mean diff | t-test p | Wilcoxon p |",
                "|---|---|---|---|",
            ]
            for metric in [m for m in metrics if m in here.index]:
                t = here.loc[metric]
                p_values = f"{_p(t['t_pvalue'])} | {_p(t['wilcoxon_pvalue'])}"
                lines.append(f"| {metric} | {t['mean_diff']:+.3f} | {p_values} |")
        lines.append("")
    return "\n".join(lines)


def _p(p: float) -> str:
    return "n/a" if pd.isna(p) else f"{p:.3g}"


@dataclass
class Report:
    """The outputs of ``reproduce``: the outcomes, the summary frames and the files written."""

    outcomes: list[RunOutcome]
    summary: pd.DataFrame
    tests: pd.DataFrame
    markdown: str
    files: list[Path]
    notes: list[str]

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def report(
    outcomes: Sequence[RunOutcome],
    out: str | os.PathLike,
    stem: str,
    labels: dict[str, str] | None = None,
    figures: bool = True,
) -> Report:
    """Write ``<stem>.md``, ``<stem>.csv`` (summary), ``<stem>_paired.csv``, ``<stem>_runs.csv``
    (every run's metrics) and the figures into ``out``."""
    out = Path(out)
    labels = labels or {}
    runs = runs_frame(outcomes)
    summary, tests = summarize(runs), paired_tests(runs)
    markdown = markdown_table(summary, tests, labels)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        markdown += (
            "\n### Failed runs\n\n"
            + "\n".join(
                f"- `{o.run_dir}`: {o.error} (traceback in `{o.run_dir / ERROR_FILE}`)"
                for o in failed
            )
            + "\n"
        )
    files = [
        out / f"{stem}.md",
        out / f"{stem}.csv",
        out / f"{stem}_paired.csv",
        out / f"{stem}_runs.csv",
    ]
    for path, text in zip(
        files,
        (
            markdown,
            summary.to_csv(index=False),
            tests.to_csv(index=False),
            runs.to_csv(index=False),
        ),
        strict=True,
    ):
        write_atomic(path, text)
    notes = []
    if figures:
        try:
            files += paper_figures(outcomes, out, stem, labels)
        except ImportError:
            notes.append(
                "matplotlib is not installed: figures skipped (pip install 'recsim-ft[plot]')"
            )
    return Report(list(outcomes), summary, tests, markdown, files, notes)


def reproduce(
    table: int,
    out: str | os.PathLike,
    seeds: int = 5,
    settings: Sequence[Setting] | None = None,
    agents: Sequence[str] = TABLE_AGENTS,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
    figures: bool = True,
    **options: Any,
) -> Report:
    """Run (or continue) the sweep of the paper's Table ``table`` and write its report into ``out``.

    ``settings`` defaults to ``table_settings(table)``; ``options`` are RunSpec fields
    (``preset``, ``steps``, ``n_samples``, ``eval_every``, ``eval_users``, ...).
    """
    settings = table_settings(table) if settings is None else list(settings)
    specs = table_specs(settings, range(seeds), agents, **options)
    outcomes = sweep(specs, out, jobs=jobs, executor=executor, address=address, progress=progress)
    return report(
        outcomes, out, f"table{table}", {s.name: s.label for s in settings}, figures=figures
    )
