"""The commands of many runs: ``reproduce`` a paper table, ``tune`` learning rates, training
or the strong baselines' hyperparameters on validation users."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

from recsim_ft import experiments
from recsim_ft.cli.options import (
    UsageError,
    distinct,
    model_options,
    parse_env_kwargs,
    positive_int,
    training_cluster,
    training_options,
)
from recsim_ft.envs.hm.data import UNKNOWN_IDS
from recsim_ft.experiments.tuning import param_value
from recsim_ft.train import PRESET_FIELDS

#: The learning rates ``tune`` tries without ``--lrs`` or ``--grid``: the paper's search.
DEFAULT_TUNE_LRS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]


def _settings_and_agents(
    args: argparse.Namespace, default_agents: Sequence[str], allowed_agents: Sequence[str]
) -> tuple[list, Sequence[str]]:
    """The table's settings (only ``--settings`` when given) and the agents, checked."""
    tables = args.table if isinstance(args.table, list) else [args.table]
    distinct("--table", tables)
    settings = [
        s
        for t in tables
        for s in experiments.table_settings(t, hm_data=args.hm_data, extra=bool(args.settings))
    ]
    if args.hm_unknown_ids is not None:
        if args.hm_data is None:
            raise UsageError("--hm-unknown-ids applies to the Kaggle files: give --hm-data too")
        settings = [  # only when given, so that the specs of earlier sweeps stay as they were
            dataclasses.replace(s, env_kwargs={**s.env_kwargs, "unknown_ids": args.hm_unknown_ids})
            if s.env_id == "HMFashion-v0"
            else s
            for s in settings
        ]
    if args.settings:
        distinct("--settings", args.settings)
        known = {s.name: s for s in settings}
        unknown = [name for name in args.settings if name not in known]
        if unknown:
            raise UsageError(
                f"unknown setting(s) {unknown} for table {' and '.join(map(str, tables))}; "
                f"choose from {sorted(known)}"
            )
        settings = [known[name] for name in args.settings]
    agents = args.agents or default_agents
    distinct("--agents", agents)
    bad = [a for a in agents if a not in allowed_agents]
    if bad:
        raise UsageError(f"unknown agent(s) {bad}; choose from {tuple(allowed_agents)}")
    return settings, agents


def parse_agent_params(values: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``--params`` as ``{agent: {name: value}}``, from ``AGENT.NAME=VALUE`` words.

    >>> parse_agent_params(["linear.ridge=10", "gbdt.learning_rate=0.05", "gbdt.max_leaf_nodes=63"])
    {'linear': {'ridge': 10}, 'gbdt': {'learning_rate': 0.05, 'max_leaf_nodes': 63}}
    """
    params: dict[str, dict[str, Any]] = {}
    for key, value in parse_env_kwargs(values, "--params").items():
        agent, dot, name = key.partition(".")
        if not dot or not name:
            raise UsageError(
                f"--params expects AGENT.NAME=VALUE (e.g. linear.ridge=10), got {key!r}"
            )
        if agent not in experiments.BASELINE_GRIDS:
            raise UsageError(
                f"--params: {agent!r} has no hyperparameters to set; "
                f"choose from {tuple(experiments.BASELINE_GRIDS)}"
            )
        params.setdefault(agent, {})[name] = value
    return params


def parse_training_grid(values: Sequence[str] | None) -> dict[str, list[Any]]:
    """``--grid`` as ``{field: [values]}``, from ``FIELD=V1,V2`` words, each read as
    ``param_value`` reads it (so a tuned report's words and ``--grid``'s mean the same).

    >>> parse_training_grid(["lr=1e-3,3e-3", "popularity_prior=true,false", "select_metric=none"])
    {'lr': [0.001, 0.003], 'popularity_prior': [True, False], 'select_metric': ['none']}
    """
    grid: dict[str, list[Any]] = {}
    for word in values or ():
        name, equals, listed = word.partition("=")
        if not equals or not listed:
            raise UsageError(f"--grid expects FIELD=V1,V2 (e.g. lr=1e-3,3e-3), got {word!r}")
        if name not in PRESET_FIELDS:
            raise UsageError(
                f"--grid: {name!r} is not a training field; choose from {PRESET_FIELDS}"
            )
        if name in grid:
            raise UsageError(f"--grid names {name!r} twice; list its values once, comma-separated")
        grid[name] = [param_value(name, v) for v in listed.split(",")]
        distinct(f"--grid {name}", grid[name])
    return grid


def _training_cluster(args: argparse.Namespace) -> Any:
    """Where the runs' training on ``--workers`` goes: with the local executor, each run's to
    the cluster at ``--address`` (else a local Ray runtime per run); the Ray executor's runs are
    Ray tasks already, which do not start Ray Train groups of their own."""
    workers = getattr(args, "workers", None)
    if args.executor == "ray":
        if workers is not None:
            raise UsageError(
                "--workers trains each run on Ray Train workers, and --executor ray runs every "
                "run as a Ray task: use --executor local (with --address for a cluster)"
            )
        return contextlib.nullcontext()
    return training_cluster(args.address, workers)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``RunSpec`` fields every sweep command takes from ``run_options`` (``reproduce``'s
    several presets apart)."""
    return dict(
        **({} if isinstance(args.preset, list) else {"preset": args.preset}),
        **training_options(args),
        n_samples=args.n,
        model=parse_env_kwargs(args.model, "--model"),
    )


def cmd_reproduce(args: argparse.Namespace) -> int:
    settings, agents = _settings_and_agents(args, experiments.TABLE_AGENTS, experiments.AGENTS)
    try:
        with _training_cluster(args):
            result = experiments.reproduce(
                args.table,
                args.out,
                seeds=args.seeds,
                settings=settings,
                agents=agents,
                jobs=args.jobs,
                executor=args.executor,
                address=args.address,
                progress=not args.quiet,
                agent_params=parse_agent_params(args.params),
                tuned=None if args.tuned is None else experiments.tuned_params(args.tuned),
                presets=args.preset,
                **_run_options(args),
            )
    except (ValueError, RuntimeError) as err:  # bad options, a clashing earlier sweep, missing ray
        raise UsageError(str(err)) from None
    return _report(result, [f"note: {note}" for note in result.notes])


def cmd_tune(args: argparse.Namespace) -> int:
    settings, agents = _settings_and_agents(
        args, experiments.TUNE_AGENTS, experiments.TUNABLE_AGENTS
    )
    training = parse_training_grid(args.grid)
    if args.lrs is not None:
        distinct("--lrs", args.lrs)
        if "lr" in training:
            raise UsageError("give learning rates either as --lrs or as --grid lr=..., not both")
    lrs = args.lrs if args.lrs is not None or training else DEFAULT_TUNE_LRS
    try:
        with _training_cluster(args):
            result = experiments.tune(
                settings,
                args.out,
                lrs=lrs,
                training=training,
                agents=agents,
                seeds=args.seeds,
                first_seed=args.first_seed,
                metric=args.metric,
                jobs=args.jobs,
                executor=args.executor,
                address=args.address,
                progress=not args.quiet,
                **_run_options(args),
            )
    except (ValueError, RuntimeError) as err:
        raise UsageError(str(err)) from None
    return _report(result, [f"failed: {o.run_dir}: {o.error}" for o in result.failed])


def _report(result: Any, lines: list[str]) -> int:
    """Print a sweep's table, ``lines`` and the files it wrote; exit status 1 if a run failed."""
    print(result.markdown)
    for line in lines:
        print(line)
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 1 if result.failed else 0


def sweep_interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves of a sweep, and how to continue it."""
    what = "sweep" if args.command == "reproduce" else "search"
    return (
        f"recsim-ft: interrupted; run the same command again to continue the {what} (finished "
        "runs are kept; with the local executor an interrupted run continues from its "
        "checkpoint)"
    )


def sweep_options(
    p: argparse.ArgumentParser,
    agents: Sequence[str],
    seeds: int,
    tables: str | None = None,
    several_presets: bool = False,
    exclude: Sequence[str] = (),
) -> None:
    p.add_argument(
        "--table",
        type=int,
        choices=(1, 2),
        required=True,
        nargs=tables,
        help="the paper table: 1 (Spotify, H&M) or 2 (vaccine messaging)"
        if tables is None
        else "the tables whose settings are searched together: 1 (Spotify, H&M), 2 (vaccine)",
    )
    p.add_argument(
        "--settings",
        "--envs",
        nargs="+",
        metavar="NAME",
        help="only these settings (table 1: spotify hm, and, run only when named, hm_20k: "
        "H&M with 20,000 articles, hm_ids and hm_20k_ids: their articles told apart by "
        "article_id; table 2: k25_m25 k25_m50 ...)",
    )
    p.add_argument(
        "--agents",
        nargs="+",
        metavar="AGENT",
        help=f"only these agents (default: {' '.join(agents)})",
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=seeds,
        help=f"seeds per setting (default: {seeds})",
    )
    p.add_argument(
        "--hm-data", help="directory of the Kaggle H&M files (default: the synthetic stand-in)"
    )
    p.add_argument(
        "--hm-unknown-ids",
        choices=UNKNOWN_IDS,
        help="H&M transactions naming customers or articles missing from their files: drop "
        "them, with a warning (the default), or stop with an error",
    )
    p.add_argument(
        "--jobs", type=positive_int, default=1, help="parallel processes (local executor)"
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where the runs go: local (--jobs processes on this machine, the default) or ray "
        "(a Ray cluster: --address, or a local Ray runtime; needs the ray extra)",
    )
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray runtime)")
    p.add_argument(
        "--out", required=True, help="results directory (re-running continues the sweep)"
    )
    model_options(p, several_presets, exclude=exclude)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="run a paper table: every setting, embedder and seed, plus baselines"
    )
    # a table reports the test users at its settings' cut-offs
    sweep_options(
        p, experiments.TABLE_AGENTS, seeds=5, several_presets=True, exclude=("ks", "eval_split")
    )
    p.add_argument(
        "--params",
        nargs="+",
        metavar="AGENT.NAME=VALUE",
        help="hyperparameters of the strong baselines, as 'recsim-ft tune' chose them (e.g. "
        "linear.ridge=10 gbdt.learning_rate=0.05; default: each agent's own)",
    )
    p.add_argument(
        "--tuned",
        metavar="TUNE_JSON",
        help="the strong baselines' hyperparameters per setting from the tune.json of "
        "'recsim-ft tune --agents gbdt linear segment_popularity' (over --params)",
    )
    p.set_defaults(func=cmd_reproduce, interrupted=sweep_interrupted)

    p = sub.add_parser(
        "tune",
        help="choose each embedder's learning rate, or each strong baseline's hyperparameters "
        "(gbdt, linear, segment_popularity: a grid each), on validation users (never the test "
        "users)",
    )
    # on validation users, with --lrs or --grid for the learning rates
    sweep_options(
        p, experiments.TUNE_AGENTS, seeds=2, tables="+", exclude=("ks", "eval_split", "lr")
    )
    p.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        default=None,
        help="learning rates to try (default without --grid: "
        + " ".join(f"{lr:g}" for lr in DEFAULT_TUNE_LRS)
        + ")",
    )
    p.add_argument(
        "--grid",
        nargs="+",
        metavar="FIELD=V1,V2",
        help="search the two-tower training instead: every combination of these values of "
        f"{', '.join(PRESET_FIELDS)} over --preset (e.g. --preset ranking --grid "
        "lr=1e-3,3e-3 schedule=constant,cosine); the report also chooses one training for every "
        "setting and embedder",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=1000,
        help="seeds first_seed.. (default 1000: not the seeds reproduce reports)",
    )
    p.add_argument(
        "--metric", default="NDCG@10", help="validation metric to maximise (default: NDCG@10)"
    )
    p.set_defaults(func=cmd_tune, interrupted=sweep_interrupted)
