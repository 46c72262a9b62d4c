"""The paper's learning-rate search, and the hyperparameter search of the strong baselines: every
(setting, agent, candidate) fitted on a few seeds and scored on validation users, never on the
test users."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_ft.agents.registry import names, trains_model
from recsim_ft.experiments.executors import RunOutcome, sweep
from recsim_ft.experiments.reports import MIN_SEEDS_FOR_CI, RANGE_NOTE, spread_cell
from recsim_ft.experiments.rundir import to_json, write_atomic
from recsim_ft.experiments.specs import (
    AGENT_LABELS,
    BASELINE_GRIDS,
    TUNE_AGENTS,
    RunSpec,
    Setting,
    table_specs,
)
from recsim_ft.experiments.stats import mean_ci
from recsim_ft.metrics import metric_names
from recsim_ft.protocol import protocol_of
from recsim_ft.train import PRESET_FIELDS

#: What ``tune`` can search: the two-tower models (their training) and every agent with
#: hyperparameters (their grid).
TUNABLE_AGENTS = names(trains_model=True) + tuple(BASELINE_GRIDS)


@dataclass
class TuneReport:
    """A search: ``table`` has one row per (setting, agent, candidate: an lr or the
    hyperparameters of a strong baseline) with the mean and CI of ``metric`` on the validation
    users; ``best`` maps (setting, embedder) to the chosen lr, ``best_training`` to the chosen
    values of the training grid, ``best_params`` (setting, strong baseline) to the chosen
    hyperparameters; ``shared`` is the one training chosen for every setting and embedder (None
    without embedders)."""

    outcomes: list[RunOutcome]
    metric: str
    table: pd.DataFrame
    best: dict[tuple[str, str], float]
    markdown: str
    files: list[Path]
    best_params: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    best_training: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    shared: dict[str, Any] | None = None

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def tune(
    settings: Sequence[Setting],
    out: str | os.PathLike,
    lrs: Sequence[float] = (),
    agents: Sequence[str] = TUNE_AGENTS,
    seeds: int = 2,
    first_seed: int = 1000,
    metric: str = "NDCG@10",
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
    grids: dict[str, dict[str, Sequence[Any]]] | None = None,
    training: dict[str, Sequence[Any]] | None = None,
    **options: Any,
) -> TuneReport:
    """Choose the learning rate of each (setting, embedder) on **validation** users, as the paper
    did ("learning rates ... chosen through validation using a few seeds"), and the
    hyperparameters of each (setting, strong baseline) likewise, over every combination of its
    grid (``grids[agent]``, else ``BASELINE_GRIDS[agent]``).

    Every (setting, agent, candidate, seed) run follows the paper's protocol otherwise and is
    scored on ``env.validation_users``, never on the test users, with seeds ``first_seed, ...``
    (by default not the seeds ``reproduce`` reports, so no training log is shared either); the
    candidate with the best mean ``metric`` wins (ties: the smaller lr, or the earlier
    combination of the grid, whose first values are the agent's defaults). Writes ``tune.md``,
    ``tune.csv`` and ``tune.json`` into ``out``; re-running continues the search like
    ``reproduce``.

    ``training`` searches the two-tower models' training instead of their lr alone: a grid over
    ``PRESET_FIELDS`` (``{"lr": [1e-3, 3e-3], "schedule": ["constant", "cosine"]}``; ``lrs``
    then must be empty), every combination over ``options`` (e.g. ``preset="ranking"``). Besides
    the best candidate of each (setting, embedder), the report then chooses the one candidate
    for every setting and embedder (``TuneReport.shared``): the best mean over (setting,
    embedder) of its ``metric`` as a share of that pair's best candidate's, so that no setting
    weighs more for having a larger metric.
    """
    tunable = TUNABLE_AGENTS
    bad = [a for a in agents if a not in tunable]
    if bad:
        raise ValueError(
            f"only two-tower agents (a learning rate) and strong baselines (hyperparameters) "
            f"are tuned; got {bad}, choose from {tunable}"
        )
    training = dict(training or {})
    unknown = sorted(set(training) - set(PRESET_FIELDS))
    if unknown:
        raise ValueError(f"training has no field {unknown}; choose from {PRESET_FIELDS}")
    for name, values in training.items():
        if not len(values):
            raise ValueError(f"training[{name!r}] lists no value")
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:
            raise ValueError(f"training[{name!r}] names {repeated} more than once")
    if lrs and training:
        raise ValueError("give learning rates either as lrs or in training['lr'], not both")
    if lrs:
        training = {"lr": [float(lr) for lr in lrs]}
    if not training and any(map(trains_model, agents)):
        raise ValueError("give at least one learning rate (or a training grid)")
    for setting in settings:  # before any training: a typo must not cost the whole search
        protocol = protocol_of(setting.env_id)
        measured = metric_names(protocol.metrics, setting.ks)
        if metric not in measured:
            raise ValueError(
                f"metric {metric!r} was not measured in {setting.label}; choose from {measured}"
            )
    seed_range = range(first_seed, first_seed + seeds)
    specs = []
    for values in itertools.product(*training.values()):
        candidate = dict(zip(training, values, strict=True))
        specs += [
            replace(spec, eval_split="validation")
            for spec in table_specs(
                settings,
                seed_range,
                [a for a in agents if trains_model(a)],
                **{**options, **candidate},
            )
        ]
    for agent in (a for a in agents if a in BASELINE_GRIDS):
        grid = (grids or {}).get(agent, BASELINE_GRIDS[agent])
        for values in itertools.product(*grid.values()):
            params = dict(zip(grid, values, strict=True))
            specs += [
                replace(spec, params=params, eval_split="validation")
                for spec in table_specs(settings, seed_range, [agent], **options)
            ]
    _refuse_same_runs(specs)
    outcomes = sweep(specs, out, jobs=jobs, executor=executor, address=address, progress=progress)
    rows = []
    for (setting, agent, lr, params), group in _group_runs(outcomes, metric, tuple(training)):
        mean, low, high = mean_ci(group, 0.95)
        rows.append(
            {
                "setting": setting,
                "agent": agent,
                "lr": lr,
                "params": params,
                "n": len(group),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "min": min(group),
                "max": max(group),
            }
        )
    columns = ["setting", "agent", "lr", "params", "n", "mean", "ci_low", "ci_high", "min", "max"]
    table = pd.DataFrame(rows, columns=columns)
    setting_order = {s.name: i for i, s in enumerate(settings)}
    table = table.sort_values(
        ["setting", "agent", "lr"],
        key=lambda col: col.map(setting_order) if col.name == "setting" else col,
        kind="stable",
    ).reset_index(drop=True)
    chosen_rows = []
    for _, group in table.groupby(["setting", "agent"], sort=False):
        ranked = group.sort_values(["mean", "lr"], ascending=[False, True], kind="stable")
        chosen_rows.append(ranked.index[0])
    table["chosen"] = table.index.isin(chosen_rows)
    best, best_params, best_training = {}, {}, {}
    for r in table[table["chosen"]].itertuples():
        if r.agent in BASELINE_GRIDS:
            best_params[(r.setting, r.agent)] = _params_of(r.params)
        else:
            best[(r.setting, r.agent)] = float(r.lr)
            best_training[(r.setting, r.agent)] = _params_of(r.params)
    shared, shares = _shared_candidate(table)
    labels = {s.name: s.label for s in settings}
    search = (
        "Hyperparameter"
        if best_params
        else "Learning-rate"
        if set(training) == {"lr"}
        else "Training"
    )
    lines = [
        f"{search} search: mean {metric} on {options.get('eval_users', 100)} validation users "
        f"(never the test users), 95% CI half-width over seeds (below {MIN_SEEDS_FOR_CI} seeds: "
        "lowest–highest seed); chosen = best mean"
        + (f"; model options {options['model']}" if options.get("model") else "")
        + ".",
        "",
        f"| setting | agent | lr / hyperparameters | seeds | {metric} | chosen |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples():
        cell = spread_cell(r.mean, r.ci_low, r.ci_high, r.min, r.max, r.n)
        setting, agent = labels.get(r.setting, r.setting), AGENT_LABELS.get(r.agent, r.agent)
        lr_only = trains_model(r.agent) and set(training) == {"lr"}
        candidate = f"{r.lr:g}" if lr_only else r.params
        lines.append(
            f"| {setting} | {agent} | {candidate} | {r.n} | {cell} | {'yes' if r.chosen else ''} |"
        )
    if len(table) and table["n"].min() < MIN_SEEDS_FOR_CI:
        lines += ["", RANGE_NOTE]
    if shares is not None and len(shares) > 1:
        lines += [
            "",
            f"One training for every setting and embedder: each candidate's mean {metric} as a "
            "share of the best candidate's in the same (setting, embedder), over the "
            f"{int(shares['groups'].max())} (setting, embedder) pairs.",
            "",
            "| training | mean share | worst share | chosen |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.Index} | {r.mean:.3f} | {r.worst:.3f} | "
            f"{'yes' if r.Index == params_text(shared) else ''} |"
            for r in shares.itertuples()
        ]
    for setting in dict.fromkeys(s for s, _ in best_params):
        chosen = " ".join(
            f"{agent}.{word}"
            for (where, agent), params in best_params.items()
            if where == setting
            for word in params_text(params).split()
        )
        lines += [
            "",
            f"{labels.get(setting, setting)}: `recsim-ft reproduce ... --params {chosen}`",
        ]
    if best_params:
        where = Path(out) / "tune.json"
        lines += ["", f"Every setting at once: `recsim-ft reproduce ... --tuned {where}`"]
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
                "best": [{"setting": s, "agent": a, "lr": lr} for (s, a), lr in best.items()]
                + [
                    {"setting": s, "agent": a, "params": params}
                    for (s, a), params in best_params.items()
                ],
                "best_training": [
                    {"setting": s, "agent": a, "training": fields}
                    for (s, a), fields in best_training.items()
                ],
                "shared_training": shared,
            }
        ),
    )
    return TuneReport(
        outcomes, metric, table, best, markdown, files, best_params, best_training, shared
    )


def _refuse_same_runs(specs: Sequence[RunSpec]) -> None:
    """Refuse two candidates that are one run under two spellings (``lr=none`` is the protocol's
    learning rate, e.g. 1e-4 on Spotify): the search would train it twice and count it as two."""
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        lr = protocol_of(spec.env_id).lr if spec.train.lr is None else spec.train.lr
        key = json.dumps({**spec.to_dict(), "lr": lr}, sort_keys=True)
        other = seen.setdefault(key, spec)
        if other.relative_dir() != spec.relative_dir():
            raise ValueError(
                f"{other.relative_dir().parent} and {spec.relative_dir().parent} are the same run "
                f"(lr none is the protocol's {lr:g} there); list each value once"
            )


def tuned_params(path: str | os.PathLike) -> dict[str, dict[str, dict[str, Any]]]:
    """The hyperparameters ``tune`` chose for the strong baselines, from its ``tune.json``, as
    ``reproduce(tuned=...)`` takes them: ``{setting: {agent: params}}`` (learning rates are left
    out: the tables train with the protocol's, which ``tune`` kept)."""
    path = Path(path)
    try:
        best = json.loads(path.read_text())["best"]
        return {
            entry["setting"]: {
                other["agent"]: dict(other["params"])
                for other in best
                if other["setting"] == entry["setting"] and "params" in other
            }
            for entry in best
            if "params" in entry
        }
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a tune.json written by recsim-ft tune ({err!r})") from None


def params_text(params: dict[str, Any]) -> str:
    """Hyperparameters as ``key=value`` words, as tables show them and ``--params`` takes them.

    >>> params_text({"ridge": 10.0, "prior": 1, "popularity_prior": True, "lr": None})
    'lr=none popularity_prior=true prior=1 ridge=10'
    """

    def text(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return str(value).lower()
        return value if isinstance(value, str) else f"{value:g}"

    return " ".join(f"{key}={text(value)}" for key, value in sorted(params.items()))


def _params_of(text: str) -> dict[str, Any]:
    """The hyperparameters ``params_text`` wrote."""
    return {key: param_value(key, value) for key, value in (w.split("=") for w in text.split())}


def param_value(key: str, text: str) -> Any:
    """One ``key=value`` word's value, as ``params_text`` writes it and ``--grid`` takes it:
    numbers as numbers (int where whole and written without a point), true / false as
    booleans, none as None (the preset's); ``select_metric``'s values are metric names, and its
    none is no early stopping.

    >>> [param_value("steps", "2000"), param_value("lr", "1e-3"), param_value("loss", "bce")]
    [2000, 0.001, 'bce']
    >>> [param_value("popularity_prior", "none"), param_value("select_metric", "none")]
    [None, 'none']
    """
    if key == "select_metric":
        return text
    if text.lower() in ("true", "false", "none"):
        return None if text.lower() == "none" else text.lower() == "true"
    try:
        number = float(text)
    except ValueError:  # a word: a schedule, a loss
        return text
    return int(number) if number.is_integer() and "." not in text else number


def _group_runs(
    outcomes: Iterable[RunOutcome], metric: str, training: Sequence[str] = ()
) -> Iterator[tuple[tuple[str, str, float | None, str], list[float]]]:
    """``metric`` of the finished runs grouped by (setting, agent, lr, candidate as
    ``params_text``: a baseline's hyperparameters, a model's values of the ``training`` fields),
    in sweep order."""
    groups: dict[tuple[str, str, float | None, str], list[float]] = {}
    for o in outcomes:
        if o.status == "failed":
            continue
        if metric not in o.metrics:
            raise ValueError(f"metric {metric!r} was not measured; choose from {sorted(o.metrics)}")
        spec = o.spec
        candidate = (
            {name: getattr(spec.train, name) for name in training}
            if spec.trains_model
            else spec.params
        )
        lr = protocol_of(spec.env_id).lr if spec.train.lr is None else spec.train.lr
        key = (spec.setting, spec.agent, lr, params_text(candidate))
        groups.setdefault(key, []).append(o.metrics[metric])
    return iter(groups.items())


def _shared_candidate(table: pd.DataFrame) -> tuple[dict[str, Any] | None, pd.DataFrame | None]:
    """The two-tower training candidate with the best mean, over (setting, embedder), of its
    mean metric as a share of that pair's best candidate's, among candidates run in every pair;
    and the shares of every candidate (``mean``, ``worst``, ``groups``), best first."""
    models = table[table["agent"].map(trains_model)]
    if models.empty:
        return None, None
    best = models.groupby(["setting", "agent"])["mean"].transform("max")
    share = (models["mean"] / best).where(best > 0, 1.0)
    shares = share.groupby(models["params"], sort=False).agg(
        mean="mean", worst="min", groups="count"
    )
    everywhere = shares[shares["groups"] == shares["groups"].max()]
    ranked = everywhere.sort_values("mean", ascending=False, kind="stable")
    return _params_of(ranked.index[0]), ranked
