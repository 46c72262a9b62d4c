"""The ``recsim-ft`` command line: a thin layer over ``recsim_ft.data``, ``recsim_ft.models`` and
``recsim_ft.experiments``.

    recsim-ft collect   --env Spotify-v0 --n 160000 --seed 0 --out spotify.parquet
    recsim-ft params    --preset paper
    recsim-ft train     --env Spotify-v0 --embedder mamba --seed 0 --out runs/spotify-mamba
    recsim-ft evaluate  --run runs/spotify-mamba
    recsim-ft reproduce --table 1 --settings spotify --seeds 2 --steps 1500 --out results/quick
    recsim-ft tune      --table 2 --settings k25_m25 --lrs 1e-5 1e-4 --seeds 2 --out results/tune
    recsim-ft info

Bad input (unknown env id, malformed kwargs, a missing file or run directory, an output that
already exists) ends with a one-line ``recsim-ft: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from recsim_ft import competition, experiments
from recsim_ft.agents.registry import names as agent_names
from recsim_ft.checks import check_int
from recsim_ft.data import InteractionLog, collect
from recsim_ft.envs import make_env
from recsim_ft.envs.hm_data import UNKNOWN_IDS, read_transactions
from recsim_ft.envs.hm_synthetic import synthetic_files
from recsim_ft.experiments import RunDir, RunSpec, SavedRun
from recsim_ft.experiments.tuning import param_value
from recsim_ft.fileio import atomic_path
from recsim_ft.models import PRESETS, params_report
from recsim_ft.retrieval import export_model
from recsim_ft.threads import default_threads, use_threads
from recsim_ft.train import CHECKPOINT_NAME, PRESET_FIELDS, Option, TrainConfig, run_options


class UsageError(Exception):
    """Bad user input: reported as one line, exit status 2."""


def parse_env_kwargs(values: Sequence[str] | None, option: str = "--env-kwargs") -> dict[str, Any]:
    """``--env-kwargs`` (or ``option``) as one JSON object or ``key=value`` pairs (values parsed
    as JSON when they are JSON, ``True``/``False``/``None`` as Python's, else kept as strings).

    >>> parse_env_kwargs(['{"clusters": 25}'])
    {'clusters': 25}
    >>> parse_env_kwargs(["clusters=25", "data_dir=/tmp/hm", "p_match=0.9"])
    {'clusters': 25, 'data_dir': '/tmp/hm', 'p_match': 0.9}
    >>> parse_env_kwargs(["cache=False", "n_items=None", "session=true"])
    {'cache': False, 'n_items': None, 'session': True}
    """
    if not values:
        return {}
    if len(values) == 1 and values[0].lstrip().startswith("{"):
        try:
            kwargs = json.loads(values[0])
        except json.JSONDecodeError as err:
            raise UsageError(
                f"{option} is not valid JSON ({err.msg} at column {err.colno}): {values[0]}"
            ) from None
        if not isinstance(kwargs, dict):
            raise UsageError(f"{option} must be a JSON object, got {values[0]}")
        return kwargs
    kwargs = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects a JSON object or key=value pairs, got {item!r}")
        if key in kwargs:
            raise UsageError(
                f"{option} sets {key} twice ({kwargs[key]!r} and {raw!r}); give it once"
            )
        if raw in _PYTHON_CONSTANTS:  # cache=False as Python spells it, beside JSON's false
            kwargs[key] = _PYTHON_CONSTANTS[raw]
            continue
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    return kwargs


_PYTHON_CONSTANTS = {"True": True, "False": False, "None": None}


def _make_env(env_id: str, kwargs: dict[str, Any]):
    """The env, or a usage error naming the bad id or the bad ``--env-kwargs`` argument (the env's
    own argument checks name it, e.g. ``clusters must be a positive integer, got 'abc' (str)``)."""
    try:
        return make_env(env_id, kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _load_log(path: str) -> InteractionLog:
    try:
        return InteractionLog.load(path)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None


# -- commands -----------------------------------------------------------------------------------
def cmd_collect(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it")
    env = _make_env(args.env, parse_env_kwargs(args.env_kwargs))
    log = collect(env, n=args.n, seed=args.seed)
    log.save(out, overwrite=args.overwrite)
    dated = "" if log.times is None else f", dated {log.times.min()} .. {log.times.max()}"
    print(f"wrote {len(log):,} events of {args.env} to {out}{dated}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    print(params_report(args.preset))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    env_id, env_kwargs = args.env, parse_env_kwargs(args.env_kwargs)
    if args.data is not None:
        log = _load_log(args.data)
        if env_id is not None and env_id != log.env_id:
            raise UsageError(
                f"--env {env_id} does not match the env of --data {args.data} ({log.env_id})"
            )
        if env_kwargs and env_kwargs != log.env_kwargs:
            raise UsageError(
                f"--env-kwargs {env_kwargs} do not match those of --data {args.data} "
                f"({log.env_kwargs})"
            )
        env_id, env_kwargs = log.env_id, log.env_kwargs
    elif env_id is None:
        raise UsageError("give --env (and optionally --env-kwargs) or --data FILE")
    # check the id and kwargs before touching the run directory; run with the kwargs that rebuild
    # the env (a seed drawn for seed=None included), so evaluate meets the env it trained in
    env_kwargs = _make_env(env_id, env_kwargs).unwrapped.spec_kwargs
    run_dir = RunDir(args.out)
    try:
        fresh = run_dir.prepare(overwrite=args.overwrite, resume=args.resume)
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        spec = RunSpec(
            env_id,
            args.embedder,
            args.seed,
            env_kwargs,
            preset=args.preset,
            n_samples=args.n,
            model=parse_env_kwargs(args.model, "--model"),
            data=None if args.data is None else str(Path(args.data).resolve()),
            **training_options(args),
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    if spec.train.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {spec.train.device}: CUDA is not available on this machine")
    if args.resume:
        saved = run_dir.progress()
        if not (run_dir / CHECKPOINT_NAME).exists():
            print(f"recsim-ft: no checkpoint in {run_dir}: training from step 0", file=sys.stderr)
        elif saved is not None:
            step, steps = saved
            print(f"recsim-ft: resuming {run_dir} at step {step:,} of {steps:,}", file=sys.stderr)
    try:
        metrics = experiments.run(spec, run_dir, resume=args.resume, progress=not args.quiet)
    except Exception as err:
        if fresh:  # a run that failed leaves nothing behind, so the corrected command just runs
            shutil.rmtree(run_dir.path, ignore_errors=True)
        if isinstance(err, (ValueError, FloatingPointError)):  # other settings, divergence
            raise UsageError(str(err)) from None
        raise
    print(_format_metrics(metrics))
    print(f"run written to {run_dir}")
    return 0


def _saved_run(path: str) -> SavedRun:
    """The finished two-tower run in ``path``, or a usage error saying why it is not one."""
    try:
        return RunDir(path).load()
    except (FileNotFoundError, ValueError) as err:  # no run, no model file, a damaged file
        raise UsageError(str(err)) from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    saved = _saved_run(args.run)
    metrics = experiments.evaluate_saved_model(saved, n_users=args.n_users, seed=args.seed)
    print(_format_metrics(metrics))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    saved = _saved_run(args.run)
    try:
        n_users = check_int("--users", args.users, low=0)
        manifest = export_model(
            saved.model,
            saved.env.unwrapped.item_table(),
            args.out,
            users=saved.users(n_users, args.seed) if n_users else None,
            onnx=not args.no_onnx,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        raise UsageError(str(err)) from None
    parts = [f"{manifest['n_items']:,} item embeddings (dim {manifest['dim']})"]
    if "n_users" in manifest:
        parts.append(f"{manifest['n_users']:,} user embeddings")
    check = manifest.get("user_tower_check")
    if check is not None and check["max_abs_difference"] is None:
        parts.append("user tower as ONNX (not checked: no onnxruntime)")
    elif check is not None:
        parts.append(
            f"user tower as ONNX (checked on {check['checked_users']} users: max difference "
            f"{check['max_abs_difference']:.2g})"
        )
    print(f"{args.out}: " + ", ".join(parts))
    return 0


def cmd_hm_competition(args: argparse.Namespace) -> int:
    out = Path(args.out)
    files = [out / "competition.md", out / "competition.csv"]
    existing = [str(f) for f in files if f.exists()]
    if existing and not args.overwrite:
        raise UsageError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")
    unknown = [s for s in args.strategies or () if s not in competition.STRATEGIES]
    if unknown:
        raise UsageError(f"unknown strategy {unknown}; choose from {tuple(competition.STRATEGIES)}")
    if args.hm_data is not None:
        source, data = f"the Kaggle files in {args.hm_data}", args.hm_data
    else:
        data = synthetic_files(args.customers, seed=args.seed, dynamics=True)
        source = f"the synthetic stand-in, {args.customers:,} customers, seed {args.seed}"
    try:
        transactions = read_transactions(data, args.hm_unknown_ids or "drop")
        strategies = {
            name: competition.STRATEGIES[name] for name in args.strategies or competition.STRATEGIES
        }
        results = competition.evaluate_weeks(transactions, strategies, weeks=args.weeks)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    text = competition.markdown(results, source)
    for path, content in zip(files, (text, results.to_csv(index=False)), strict=True):
        with atomic_path(path) as tmp:
            tmp.write_text(content)
    print(text, end="")
    return 0


def _settings_and_agents(
    args: argparse.Namespace, default_agents: Sequence[str], allowed_agents: Sequence[str]
) -> tuple[list, Sequence[str]]:
    """The table's settings (only ``--settings`` when given) and the agents, checked."""
    tables = args.table if isinstance(args.table, list) else [args.table]
    _distinct("--table", tables)
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
        _distinct("--settings", args.settings)
        known = {s.name: s for s in settings}
        unknown = [name for name in args.settings if name not in known]
        if unknown:
            raise UsageError(
                f"unknown setting(s) {unknown} for table {' and '.join(map(str, tables))}; "
                f"choose from {sorted(known)}"
            )
        settings = [known[name] for name in args.settings]
    agents = args.agents or default_agents
    _distinct("--agents", agents)
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
        _distinct(f"--grid {name}", grid[name])
    return grid


def _distinct(option: str, values: Sequence[Any]) -> None:
    """Refuse a list option that names a value twice: a sweep would count its runs twice."""
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise UsageError(
            f"{option} names {', '.join(map(repr, repeated))} more than once; give each value once"
        )


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
    print(result.markdown)
    for note in result.notes:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 1 if result.failed else 0


def cmd_tune(args: argparse.Namespace) -> int:
    settings, agents = _settings_and_agents(
        args, experiments.TUNE_AGENTS, experiments.TUNABLE_AGENTS
    )
    training = parse_training_grid(args.grid)
    if args.lrs is not None:
        _distinct("--lrs", args.lrs)
        if "lr" in training:
            raise UsageError("give learning rates either as --lrs or as --grid lr=..., not both")
    lrs = args.lrs if args.lrs is not None or training else DEFAULT_TUNE_LRS
    try:
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
    print(result.markdown)
    for outcome in result.failed:
        print(f"failed: {outcome.run_dir}: {outcome.error}")
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 1 if result.failed else 0


def _format_metrics(metrics: dict[str, float]) -> str:
    return "\n".join(
        f"{k:>10s}  {v:.4f}" if isinstance(v, float) else f"{k:>10s}  {v}"
        for k, v in metrics.items()
    )


# -- parser -------------------------------------------------------------------------------------
def add_training_options(p: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """One ``--the-name`` option per run option of ``TrainConfig`` (``recsim_ft.train.Option``:
    its help line, its parser, and its default, the preset's where a preset may set it), but
    those in ``exclude``; every default is None, so ``training_options`` passes only what was
    given."""
    for name, option in run_options().items():
        if name in exclude:
            continue
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_argument_type(option.parse),
            choices=option.choices,
            metavar=option.metavar,
            nargs="+" if option.many else None if option.alone is None else "?",
            const=option.alone,
            default=None,
            help=f"{option.help} ({_default_text(name, option)})",
        )


def _default_text(name: str, option: Option) -> str:
    """``default: 32``, or for an option a preset may set, every preset's value."""

    def text(value: Any) -> str:
        if value is None:
            return option.none
        if name == "popularity_prior" and isinstance(value, bool):
            return "on" if value else "off"
        return " ".join(map(str, value)) if isinstance(value, tuple) else f"{value}"

    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
    if not option.preset:
        return f"default: {text(default)}"
    values = {preset: TrainConfig.from_preset(preset) for preset in PRESETS}
    differs = {p: getattr(c, name) for p, c in values.items() if getattr(c, name) != default}
    if not differs:
        return f"default: the preset's, {text(default)}"
    return "default: the preset's; " + ", ".join(
        f"{preset}: {text(value)}" for preset, value in {"paper": default, **differs}.items()
    )


def _argument_type(parse: Any) -> Any:
    """``parse`` as an argparse type: its ``ValueError`` becomes argparse's usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options given on the command line (``add_training_options``), by field name."""
    given = {name: getattr(args, name, None) for name in run_options()}
    return {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in given.items()
        if value is not None
    }


def _positive_int(text: str) -> int:
    """argparse type of the count options: the text as an integer, checked like every count."""
    try:
        return check_int("the value", int(text), low=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    """argparse type of the options that may be 0."""
    try:
        return check_int("the value", int(text), low=0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None


def cmd_info(args: argparse.Namespace) -> int:
    from recsim_ft.info import system_report  # imports the kernels' modules: only for this command

    print(system_report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsim-ft", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def env_options(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument(
            "--env",
            required=required,
            help="env id, e.g. Spotify-v0, HMFashion-v0, VaccineMessaging-v0",
        )
        p.add_argument(
            "--env-kwargs",
            nargs="+",
            metavar="KWARGS",
            help="env kwargs as a JSON object ('{\"clusters\": 25}') or key=value pairs",
        )

    p = sub.add_parser(
        "collect", help="log interactions of the env's behaviour policy to a parquet file"
    )
    env_options(p, required=True)
    p.add_argument(
        "--n", type=_positive_int, default=160_000, help="events to log (default: 160000)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="parquet file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser(
        "info", help="print what this machine runs: devices, threads, the Mamba block's kernels"
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("params", help="print the trainable parameters of each embedder and tower")
    p.add_argument("--preset", choices=tuple(PRESETS), default="paper")
    p.set_defaults(func=cmd_params)

    def threads_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--threads",
            type=_positive_int,
            default=None,
            help="CPU threads per run (default: 1, or RECSIM_FT_THREADS; more threads pay only on "
            "an idle machine, see recsim_ft/threads.py)",
        )

    def run_options(
        p: argparse.ArgumentParser, several_presets: bool = False, exclude: Sequence[str] = ()
    ) -> None:
        p.add_argument(
            "--preset",
            choices=tuple(PRESETS),
            default=["paper"] if several_presets else "paper",
            nargs="+" if several_presets else None,
            help="the model and its training (default: paper, the paper's model and protocol; "
            "ranking: the paper's model trained for ranking, see recsim_ft.models.presets; "
            "quick: a small model)"
            + (
                "; several: one row per model and preset (e.g. --preset paper ranking)"
                if several_presets
                else ""
            ),
        )
        add_training_options(p, exclude)
        p.add_argument(
            "--n",
            type=_positive_int,
            default=None,
            help="logged events to collect per run (default: the paper's, 160000)",
        )
        p.add_argument(
            "--model",
            nargs="+",
            metavar="KWARGS",
            help="model options over the preset, JSON or key=value (e.g. mamba_residual=true)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        threads_option(p)

    p = sub.add_parser(
        "train", help="train and evaluate one two-tower model, saved to a run directory"
    )
    env_options(p, required=False)
    p.add_argument(
        "--embedder",
        choices=agent_names(trains_model=True),
        default="mamba",
        help="the towers' encoder (default: mamba, FT-Mamba)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--data", help="train on this logged-interaction file instead of collecting")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    run_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate the saved model of a run directory")
    p.add_argument("--run", required=True, help="run directory written by 'recsim-ft train'")
    p.add_argument(
        "--n-users", type=_positive_int, default=None, help="test users (default: as trained)"
    )
    p.add_argument("--seed", type=int, default=None, help="test-user seed (default: as trained)")
    threads_option(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "export",
        help="export a run's model for serving: item embeddings, user tower as ONNX, test users",
    )
    p.add_argument("--run", required=True, help="run directory written by 'recsim-ft train'")
    p.add_argument("--out", required=True, help="folder to write (see recsim_ft.retrieval)")
    p.add_argument(
        "--users",
        type=int,
        default=0,
        help="also the embeddings of this many test users (default: none)",
    )
    p.add_argument("--seed", type=int, default=None, help="test-user seed (default: as trained)")
    p.add_argument(
        "--no-onnx", action="store_true", help="no ONNX user tower (it needs the onnx extra)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    threads_option(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "hm-competition",
        help="the H&M competition's protocol: 12 articles per customer for a week, MAP@12, "
        "baseline strategies (Kaggle files or the synthetic stand-in)",
    )
    p.add_argument("--hm-data", help="directory of the Kaggle H&M files")
    p.add_argument(
        "--customers",
        type=_positive_int,
        default=100_000,
        help="customers of the synthetic stand-in, without --hm-data (default: 100,000)",
    )
    p.add_argument("--seed", type=int, default=0, help="the synthetic stand-in's seed")
    p.add_argument(
        "--weeks", type=_positive_int, default=3, help="target weeks, the last ones (default 3)"
    )
    p.add_argument("--strategies", nargs="+", metavar="NAME", help="default: all of them")
    p.add_argument("--hm-unknown-ids", choices=UNKNOWN_IDS)
    p.add_argument("--out", required=True, help="folder for competition.md and .csv")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_hm_competition)

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
            help=None if tables is None else "the tables whose settings are searched together",
        )
        p.add_argument(
            "--settings",
            "--envs",
            nargs="+",
            metavar="NAME",
            help="only these settings (table 1: spotify hm, and hm_20k: H&M with 20,000 "
            "articles, run only when named; table 2: k25_m25 k25_m50 ...)",
        )
        p.add_argument(
            "--agents",
            nargs="+",
            metavar="AGENT",
            help=f"only these agents (default: {' '.join(agents)})",
        )
        p.add_argument(
            "--seeds",
            type=_positive_int,
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
            "--jobs", type=_positive_int, default=1, help="parallel processes (local executor)"
        )
        p.add_argument("--executor", choices=("local", "ray"), default="local")
        p.add_argument("--address", help="Ray cluster address (default: start a local Ray runtime)")
        p.add_argument(
            "--out", required=True, help="results directory (re-running continues the sweep)"
        )
        run_options(p, several_presets, exclude=exclude)

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
    p.set_defaults(func=cmd_reproduce)

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
    p.set_defaults(func=cmd_tune)
    return parser


#: The learning rates ``tune`` tries without ``--lrs`` or ``--grid``: the paper's search.
DEFAULT_TUNE_LRS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]


_SWEEP_HINTS = {
    command: f"; run the same command again to continue the {what} (finished runs are kept; "
    "with the local executor an interrupted run continues from its checkpoint)"
    for command, what in (("reproduce", "sweep"), ("tune", "search"))
}


def _interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves behind and how to continue."""
    if args.command != "train":
        return "recsim-ft: interrupted" + _SWEEP_HINTS.get(args.command, "")
    saved = RunDir(args.out).progress()
    if saved is None:
        return (
            "recsim-ft: interrupted before the first training step, so there is nothing to "
            "continue; run the same command with --resume to start again"
        )
    step, steps = saved
    return (
        f"recsim-ft: interrupted at step {step:,} of {steps:,}, saved in {args.out}; "
        "run the same command with --resume to continue from there"
    )


def _threads_from_environment() -> int:
    try:
        return default_threads()
    except ValueError as err:
        raise UsageError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``recsim-ft``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's own usage errors (status 2)
        return int(exit_.code or 0)
    try:
        threads = getattr(args, "threads", None) or _threads_from_environment()
        with use_threads(threads):
            return args.func(args)
    except UsageError as err:
        print(f"recsim-ft: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as err:  # bad input found below the command layer
        if os.environ.get("RECSIM_FT_TRACEBACK"):
            raise
        print(
            f"recsim-ft: error: {err} (RECSIM_FT_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line on how to continue, no traceback
        print(_interrupted(args), file=sys.stderr)
        return 130
