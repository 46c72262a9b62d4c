"""The report of a sweep: Markdown tables (ours beside the paper's numbers, with paired tests),
CSV files of the summary, the paired tests and every run, and the paper's figures.

``reproduce`` reports every finished run of the table in its output directory, not only the runs
of the command at hand: re-running it with fewer agents or seeds adds to the table and never
shrinks it, and the figures always match the table."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_ft.experiments.executors import RunOutcome, sweep
from recsim_ft.experiments.figures import FIGURES, figure_path, paper_figures
from recsim_ft.experiments.rundir import DONE_MARKER, ERROR_FILE, RunDir, finished, write_atomic
from recsim_ft.experiments.runs import add_scoring_cost
from recsim_ft.experiments.specs import (
    TABLE_AGENTS,
    RunSpec,
    Setting,
    agent_label,
    row_order,
    table_settings,
    table_specs,
)
from recsim_ft.experiments.stats import costs_frame, paired_tests, runs_frame, summarize
from recsim_ft.paper_results import METRICS as PAPER_METRICS


def _table_columns(metrics: Iterable[str]) -> list[str]:
    """The paper's columns (plus MAP@12 where measured) when present, else every metric; the CSV
    files keep every metric."""
    present = set(metrics)
    return [m for m in (*PAPER_METRICS, "MAP@12") if m in present] or sorted(present)


#: From this many seeds on a cell shows the 95% CI half-width; below it the range over seeds
#: (with 2 seeds the t-based half-width is 12.7 standard errors, often wider than [0, 1]).
MIN_SEEDS_FOR_CI = 3
#: What the tables say under a cell that shows the range over seeds.
RANGE_NOTE = (
    f"Cells with fewer than {MIN_SEEDS_FOR_CI} seeds show the mean (lowest–highest seed) "
    "instead of the 95% CI half-width, which with 2 seeds is 12.7 standard errors (often wider "
    "than the whole [0, 1] range of a metric): run more seeds before reading anything into a "
    "difference."
)


def spread_cell(mean: float, ci_low: float, ci_high: float, low: float, high: float, n: int) -> str:
    """A table cell over ``n`` seeds: ``mean ± CI half-width`` from ``MIN_SEEDS_FOR_CI`` seeds
    on, ``mean (lowest–highest)`` below, the mean alone for one seed.

    >>> spread_cell(0.5, 0.4, 0.6, 0.3, 0.7, 5), spread_cell(0.5, -0.7, 1.7, 0.4, 0.6, 2)
    ('0.500 ± 0.100', '0.500 (0.400–0.600)')
    """
    if n >= MIN_SEEDS_FOR_CI:
        return f"{mean:.3f} ± {(ci_high - ci_low) / 2:.3f}"
    return f"{mean:.3f}" + (f" ({low:.3f}–{high:.3f})" if n > 1 else "")


def _count(low: int, high: int, noun: str) -> str:
    """``5 seeds``, ``1 seed``, ``2-5 seeds``."""
    return f"{low}{'' if low == high else f'-{high}'} {noun}{'' if high == 1 else 's'}"


#: The cost columns of a table: (name in ``runs.COSTS``, heading, format of the mean over seeds).
COST_COLUMNS = (
    ("fit_seconds", "fit s", "{:.3g}"),
    ("score_ms_per_1000_users", "score ms / 1k users", "{:.3g}"),
)


def markdown_table(
    summary: pd.DataFrame,
    tests: pd.DataFrame,
    labels: dict[str, str] | None = None,
    users: dict[str, tuple[int, int, int]] | None = None,
    costs: pd.DataFrame | None = None,
) -> str:
    """The results as Markdown: per setting, mean ± CI half-width per agent (the range over seeds
    below ``MIN_SEEDS_FOR_CI`` seeds), the paper's row under each agent it reports, what each
    agent cost (mean over seeds: seconds to fit on the log, milliseconds to score 1,000 test
    users; from ``costs``, a ``stats.costs_frame``), and the paired-test p-values of each pair in
    ``tests``. ``users`` gives per setting the (fewest, most) test users scored per seed and the
    number drawn, for the heading."""
    labels, users = labels or {}, users or {}
    mean_costs = (
        costs.groupby(["setting", "agent", "cost"])["value"].mean()
        if costs is not None and len(costs)
        else pd.Series(dtype=float)
    )
    lines = []
    for setting, group in summary.groupby("setting", sort=False):
        metrics = _table_columns(group["metric"])
        here_costs = {k[1:]: v for k, v in mean_costs.items() if k[0] == setting}
        cost_columns = [c for c in COST_COLUMNS if any(k[1] == c[0] for k in here_costs)]
        seeds = _count(int(group["n"].min()), int(group["n"].max()), "seed")
        scored = ""
        if setting in users:
            fewest, most, drawn = users[setting]
            scored = (
                f"; all {drawn} test users per seed scored"
                if fewest == drawn
                else f"; {_count(fewest, most, 'test user')} of {drawn} per seed scored "
                "(users who like no item are left out)"
            )
        if group["n"].min() >= MIN_SEEDS_FOR_CI:
            cell_kind = "mean ± 95% CI half-width"
        elif group["n"].max() < MIN_SEEDS_FOR_CI:
            cell_kind = "mean (lowest–highest seed)"
        else:
            cell_kind = f"mean ± 95% CI half-width, below {MIN_SEEDS_FOR_CI} seeds (lowest–highest)"
        lines += [
            f"### {labels.get(setting, setting)} ({seeds}{scored}; {cell_kind})",
            "",
            "| agent | " + " | ".join([*metrics, *(c[1] for c in cost_columns)]) + " |",
            "|---" * (len(metrics) + len(cost_columns) + 1) + "|",
        ]
        cells = group.set_index(["agent", "metric"])
        agents = sorted(set(group["agent"]), key=row_order)
        n_seeds = group.groupby("agent")["n"].max()
        for agent in agents:
            row = []
            for metric in metrics:
                if (agent, metric) not in cells.index:
                    row.append("")
                    continue
                cell = cells.loc[(agent, metric)]
                row.append(
                    spread_cell(
                        cell["mean"],
                        cell["ci_low"],
                        cell["ci_high"],
                        cell["min"],
                        cell["max"],
                        int(cell["n"]),
                    )
                )
            for name, _, form in cost_columns:
                cost = here_costs.get((agent, name))
                row.append("" if cost is None else form.format(cost))
            label = agent_label(agent)
            if group["n"].min() != group["n"].max():
                label += f" ({_count(n_seeds[agent], n_seeds[agent], 'seed')})"
            lines.append(f"| {label} | " + " | ".join(row) + " |")
            paper = [
                cells.loc[(agent, m), "paper"] if (agent, m) in cells.index else None
                for m in metrics
            ]
            if any(p is not None and not pd.isna(p) for p in paper):
                lines.append(
                    "| &nbsp;&nbsp;paper | "
                    + " | ".join("" if p is None or pd.isna(p) else f"{p:.3f}" for p in paper)
                    + " |" * (len(cost_columns) + 1)
                )
        if cost_columns:
            lines += [
                "",
                "Costs: seconds to fit on the logged events (collecting them not included; "
                "runs made before the cost columns include it) and milliseconds to score every "
                "item for 1,000 test users, mean over seeds, on the machine that ran them.",
            ]
        here = tests[tests["setting"] == setting] if len(tests) else tests
        for (a, b), pair in here.groupby(["a", "b"], sort=False) if len(here) else ():
            pair = pair.set_index("metric")
            lines += [
                "",
                f"Paired tests, {agent_label(a)} − {agent_label(b)} over seeds "
                "(paired t-test `scipy.stats.ttest_rel`; "
                "Wilcoxon signed-rank `scipy.stats.wilcoxon`):",
                "",
                "| metric | mean diff | t-test p | Wilcoxon p |",
                "|---|---|---|---|",
            ]
            for metric in [m for m in metrics if m in pair.index]:
                t = pair.loc[metric]
                p_values = f"{_p(t['t_pvalue'])} | {_p(t['wilcoxon_pvalue'])}"
                lines.append(f"| {metric} | {t['mean_diff']:+.3f} | {p_values} |")
        if group["n"].min() < MIN_SEEDS_FOR_CI:
            lines += ["", RANGE_NOTE]
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


def _users_scored(outcomes: Iterable[RunOutcome]) -> dict[str, tuple[int, int, int]]:
    """Per setting: the fewest and most test users scored in one seed, and the number drawn."""
    scored: dict[str, list[int]] = {}
    drawn = {}
    for o in outcomes:
        if o.status != "failed" and "n_users" in o.metrics:
            scored.setdefault(o.spec.setting, []).append(int(o.metrics["n_users"]))
            drawn[o.spec.setting] = o.spec.train.eval_users
    return {s: (min(n), max(n), drawn[s]) for s, n in scored.items()}


def report(
    outcomes: Sequence[RunOutcome],
    out: str | os.PathLike,
    stem: str,
    labels: dict[str, str] | None = None,
    figures: bool = True,
) -> Report:
    """Write ``<stem>.md``, ``<stem>.csv`` (summary), ``<stem>_paired.csv``, ``<stem>_runs.csv``
    (every run's metrics), ``<stem>_costs.csv`` (every run's costs) and the figures into
    ``out``; a figure of an earlier report that this one cannot draw is removed rather than left
    beside a table it no longer matches."""
    out = Path(out)
    labels = labels or {}
    runs, costs = runs_frame(outcomes), costs_frame(outcomes)
    summary, tests = summarize(runs), paired_tests(runs)
    markdown = markdown_table(summary, tests, labels, _users_scored(outcomes), costs)
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
    notes, drawn = [], []
    if figures:
        try:
            drawn = paper_figures(outcomes, out, stem, labels)
        except ImportError:
            notes.append(
                "matplotlib is not installed: figures skipped (pip install 'recsim-ft[plot]')"
            )
    for name, caption in FIGURES.items():
        path = figure_path(out, stem, name)
        if path in drawn:
            markdown += f"\n`{path.name}`: {caption}\n"
        elif path.exists():
            path.unlink()
            notes.append(f"removed {path}, drawn by an earlier run: it no longer matches the table")
    files = [
        out / f"{stem}.md",
        out / f"{stem}.csv",
        out / f"{stem}_paired.csv",
        out / f"{stem}_runs.csv",
        out / f"{stem}_costs.csv",
    ]
    for path, text in zip(
        files,
        (
            markdown,
            summary.to_csv(index=False),
            tests.to_csv(index=False),
            runs.to_csv(index=False),
            costs.to_csv(index=False),
        ),
        strict=True,
    ):
        write_atomic(path, text)
    return Report(list(outcomes), summary, tests, markdown, files + drawn, notes)


def _earlier_runs(
    out: Path,
    settings: Sequence[Setting],
    specs: Sequence[RunSpec],
    agent_params: dict[str, dict[str, Any]],
    tuned: dict[str, dict[str, dict[str, Any]]],
    options: dict[str, Any],
    presets: Sequence[str],
) -> list[RunOutcome]:
    """The finished runs in ``out`` of ``settings`` (any agent, any seed) that ``specs`` do not
    name: what earlier commands added to the table. Each must be the run these ``options`` make
    for its agent, seed, preset and precision (``finished`` names any difference), so one table
    never mixes runs made with other settings; models trained with a preset not in ``presets``
    belong to another table and are left out; a model at another precision, with the
    popularity prior or with other early stopping is a row of its own (``RunSpec.row``), so a
    table re-run with ``--precision bf16``, ``--popularity-prior`` or ``--select-metric`` shows
    both."""
    by_name = {s.name: s for s in settings}
    requested = {spec.relative_dir() for spec in specs}
    earlier = []
    for done in sorted((out / "runs").glob(f"*/*/seed*/{DONE_MARKER}")):
        run_dir = done.parent
        saved = RunDir(run_dir).spec()
        if saved.setting not in by_name or saved.train.eval_split != "test":
            continue
        if saved.trains_model and saved.preset not in presets:
            continue
        params = {saved.agent: agent_params[saved.agent]} if saved.agent in agent_params else {}
        (spec,) = table_specs(
            [by_name[saved.setting]],
            [saved.seed],
            [saved.agent],
            params,
            tuned,
            **{
                **options,
                "preset": saved.preset,
                "precision": saved.train.precision,
                "popularity_prior": saved.train.popularity_prior,
                "select_metric": saved.train.select_metric,
            },
        )
        if spec.relative_dir() not in requested and finished(spec, run_dir):
            earlier.append(RunOutcome(spec, run_dir, "reused", RunDir(run_dir).metrics()))
    return earlier


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
    agent_params: dict[str, dict[str, Any]] | None = None,
    tuned: dict[str, dict[str, dict[str, Any]]] | None = None,
    presets: Sequence[str] | None = None,
    **options: Any,
) -> Report:
    """Run (or continue) the sweep of the paper's Table ``table`` and write its report into ``out``.

    ``presets`` trains the two-tower models under each of these presets (e.g. ``("paper",
    "ranking")``; one row per model and preset, the baselines once); None: ``options``'s
    ``preset``, else the paper's.

    ``settings`` defaults to ``table_settings(table)``; ``options`` are RunSpec fields
    (``preset``, ``steps``, ``n_samples``, ``eval_every``, ``eval_users``, ...),
    ``agent_params`` the hyperparameters of strong baselines by agent (e.g. ``{"linear":
    {"ridge": 10.0}}``; unset ones take the agent's defaults) and ``tuned`` those of each
    setting (``{setting: {agent: params}}``, e.g. ``tuned_params(tune.json)``), which take
    precedence. The report covers every finished run of the table's settings in ``out`` (see the
    module docstring).
    """
    out = Path(out)
    settings = table_settings(table) if settings is None else list(settings)
    # the table's other settings too, with the ones asked for as given (e.g. H&M on other data)
    known = list({s.name: s for s in [*table_settings(table), *settings]}.values())
    agent_params, tuned = agent_params or {}, tuned or {}
    if presets is None:
        presets = [options.get("preset", "paper")]
    elif "preset" in options:
        raise ValueError("give the presets as presets=[...] or as preset=..., not both")
    elif not presets or len(set(presets)) < len(presets):
        raise ValueError(f"presets must name each preset once, got {list(presets)}")
    options = {k: v for k, v in options.items() if k != "preset"}
    specs = []
    for i, preset in enumerate(presets):  # the baselines once: they have no preset
        specs += [
            spec
            for spec in table_specs(
                settings, range(seeds), agents, agent_params, tuned, preset=preset, **options
            )
            if spec.trains_model or i == 0
        ]
    earlier = _earlier_runs(
        out, known, specs, agent_params, tuned, options, presets
    )  # before any work: may refuse the --out
    outcomes = sweep(specs, out, jobs=jobs, executor=executor, address=address, progress=progress)
    for o in [*outcomes, *earlier]:
        if o.status != "failed" and o.spec.trains_model:
            add_scoring_cost(o.run_dir)  # a run made before the cost columns
    position = {s.name: i for i, s in enumerate(known)}
    outcomes = sorted(
        [*outcomes, *earlier],
        key=lambda o: (position[o.spec.setting], o.spec.seed, row_order(o.spec.row)),
    )
    return report(outcomes, out, f"table{table}", {s.name: s.label for s in known}, figures)
