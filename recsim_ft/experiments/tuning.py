"""The paper's learning-rate search: every (setting, embedder, lr) trained on a few seeds and
scored on validation users, never on the test users."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_ft.experiments.executors import RunOutcome, sweep
from recsim_ft.experiments.reports import MIN_SEEDS_FOR_CI, RANGE_NOTE, spread_cell
from recsim_ft.experiments.runs import to_json, write_atomic
from recsim_ft.experiments.specs import AGENT_LABELS, TUNE_AGENTS, Setting, table_specs
from recsim_ft.experiments.stats import mean_ci
from recsim_ft.models.presets import EMBEDDERS


@dataclass
class TuneReport:
    """A learning-rate search: ``table`` has one row per (setting, agent, lr) with the mean and CI
    of ``metric`` on the validation users; ``best`` maps (setting, agent) to the chosen lr."""

    outcomes: list[RunOutcome]
    metric: str
    table: pd.DataFrame
    best: dict[tuple[str, str], float]
    markdown: str
    files: list[Path]

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def tune(
    settings: Sequence[Setting],
    out: str | os.PathLike,
    lrs: Sequence[float],
    agents: Sequence[str] = TUNE_AGENTS,
    seeds: int = 2,
    first_seed: int = 1000,
    metric: str = "NDCG@10",
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
    **options: Any,
) -> TuneReport:
    """Choose the learning rate of each (setting, embedder) on **validation** users, as the paper
    did ("learning rates ... chosen through validation using a few seeds").

    Every (setting, agent, lr, seed) run trains with the paper's protocol otherwise and is scored
    on ``env.validation_users``, never on the test users, with seeds ``first_seed, ...``
    (by default not the seeds ``reproduce`` reports, so no training log is shared either); the
    lr with the best mean ``metric`` wins (ties: the smaller lr). Writes ``tune.md``,
    ``tune.csv`` and ``tune.json`` into ``out``; re-running continues the search like
    ``reproduce``.
    """
    if not lrs:
        raise ValueError("give at least one learning rate")
    bad = [a for a in agents if a not in EMBEDDERS]
    if bad:
        raise ValueError(
            f"only two-tower agents have a learning rate; got {bad}, choose from {EMBEDDERS}"
        )
    specs = [
        replace(spec, lr=float(lr), split="validation")
        for lr in lrs
        for spec in table_specs(settings, range(first_seed, first_seed + seeds), agents, **options)
    ]
    outcomes = sweep(specs, out, jobs=jobs, executor=executor, address=address, progress=progress)
    rows = []
    for (setting, agent, lr), group in _group_runs(outcomes, metric):
        mean, low, high = mean_ci(group, 0.95)
        rows.append(
            {
                "setting": setting,
                "agent": agent,
                "lr": lr,
                "n": len(group),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "min": min(group),
                "max": max(group),
            }
        )
    columns = ["setting", "agent", "lr", "n", "mean", "ci_low", "ci_high", "min", "max"]
    table = pd.DataFrame(rows, columns=columns)
    setting_order = {s.name: i for i, s in enumerate(settings)}
    table = table.sort_values(
        ["setting", "agent", "lr"],
        key=lambda col: col.map(setting_order) if col.name == "setting" else col,
        kind="stable",
    ).reset_index(drop=True)
    best = {}
    for (setting, agent), group in table.groupby(["setting", "agent"], sort=False):
        ranked = group.sort_values(["mean", "lr"], ascending=[False, True], kind="stable")
        best[(setting, agent)] = float(ranked["lr"].iloc[0])
    table["chosen"] = [best.get((r.setting, r.agent)) == r.lr for r in table.itertuples()]
    labels = {s.name: s.label for s in settings}
    lines = [
        f"Learning-rate search: mean {metric} on {options.get('eval_users', 100)} validation users "
        f"(never the test users), 95% CI half-width over seeds (below {MIN_SEEDS_FOR_CI} seeds: "
        "lowest–highest seed); chosen = best mean"
        + (f"; model options {options['model']}" if options.get("model") else "")
        + ".",
        "",
        f"| setting | embedder | lr | seeds | {metric} | chosen |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples():
        cell = spread_cell(r.mean, r.ci_low, r.ci_high, r.min, r.max, r.n)
        setting, agent = labels.get(r.setting, r.setting), AGENT_LABELS.get(r.agent, r.agent)
        lines.append(
            f"| {setting} | {agent} | {r.lr:g} | {r.n} | {cell} | {'yes' if r.chosen else ''} |"
        )
    if len(table) and table["n"].min() < MIN_SEEDS_FOR_CI:
        lines += ["", RANGE_NOTE]
    out = Path(out)
    markdown = "\n".join(lines) + "\n"
    files = [out / "tune.md", out / "tune.csv", out / "tune.json"]
    write_atomic(files[0], markdown)
    write_atomic(files[1], table.to_csv(index=False))
    write_atomic(
        files[2],
        to_json(
            {
                "metric": metric,
                "best": [{"setting": s, "agent": a, "lr": lr} for (s, a), lr in best.items()],
            }
        ),
    )
    return TuneReport(outcomes, metric, table, best, markdown, files)


def _group_runs(
    outcomes: Iterable[RunOutcome], metric: str
) -> Iterator[tuple[tuple[str, str, float], list[float]]]:
    """``metric`` of the finished runs grouped by (setting, agent, lr), in sweep order."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for o in outcomes:
        if o.status == "failed":
            continue
        if metric not in o.metrics:
            raise ValueError(f"metric {metric!r} was not measured; choose from {sorted(o.metrics)}")
        groups.setdefault((o.spec.setting, o.spec.agent, o.spec.lr), []).append(o.metrics[metric])
    return iter(groups.items())
