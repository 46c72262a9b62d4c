"""The commands of one model: ``train`` (and evaluate) it into a run directory, ``evaluate``
its saved model again, ``export`` it for serving; ``params`` counts the presets' parameters and
``info`` says what this machine runs."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from recsim_ft import experiments
from recsim_ft.agents.registry import names as agent_names
from recsim_ft.checks import check_int
from recsim_ft.cli.options import (
    UsageError,
    add_option,
    env_options,
    format_metrics,
    load_log,
    make_env_or_fail,
    model_options,
    non_negative_int,
    parse_env_kwargs,
    positive_int,
    threads_option,
    training_cluster,
    training_options,
)
from recsim_ft.experiments import RunDir, RunSpec, SavedRun
from recsim_ft.models import PRESETS, params_report
from recsim_ft.retrieval import export_model
from recsim_ft.train import CHECKPOINT_NAME


def cmd_params(args: argparse.Namespace) -> int:
    print(params_report(args.preset))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from recsim_ft.info import system_report  # imports the kernels' modules: only for this command

    print(system_report())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    env_id, env_kwargs = args.env, parse_env_kwargs(args.env_kwargs)
    if args.data is not None:
        log = load_log(args.data)
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
    env_kwargs = make_env_or_fail(env_id, env_kwargs).unwrapped.spec_kwargs
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
        changed = run_dir.differences(spec)
        if changed:  # before saying it resumes
            raise UsageError(
                f"cannot resume {run_dir}: it holds a run with other settings "
                f"({', '.join(changed)}); resume with its settings, or write to another directory"
            )
        saved = run_dir.progress()
        if not (run_dir / CHECKPOINT_NAME).exists():
            print(f"recsim-ft: no checkpoint in {run_dir}: training from step 0", file=sys.stderr)
        elif saved is not None:
            step, steps = saved
            print(f"recsim-ft: resuming {run_dir} at step {step:,} of {steps:,}", file=sys.stderr)
    try:
        with training_cluster(args.address, spec.train.workers):
            metrics = experiments.run(spec, run_dir, resume=args.resume, progress=not args.quiet)
    except Exception as err:
        if fresh:  # a run that failed leaves nothing behind, so the corrected command just runs
            shutil.rmtree(run_dir.path, ignore_errors=True)
        if isinstance(err, (ValueError, FloatingPointError)):  # other settings, divergence
            raise UsageError(str(err)) from None
        raise
    print(format_metrics(metrics))
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
    metrics = experiments.evaluate_saved_model(saved, n_users=args.users, seed=args.seed)
    print(format_metrics(metrics))
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


def train_interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves of a training run, and how to continue it."""
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="print what this machine runs: devices, threads, the Mamba block's kernels"
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("params", help="print the trainable parameters of each embedder and tower")
    p.add_argument(
        "--preset", choices=tuple(PRESETS), default="paper", help="the model (default: paper)"
    )
    p.set_defaults(func=cmd_params)

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
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="run seed: the logged data, the initial weights and the test users derive from it "
        "(default: 0)",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--data", help="train on this logged-interaction file instead of collecting")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    model_options(p)
    p.add_argument(
        "--address",
        help="the Ray cluster (host:port or auto) that --workers train on (default: "
        "RAY_ADDRESS, else a local Ray runtime of --workers CPUs)",
    )
    p.set_defaults(func=cmd_train, interrupted=train_interrupted)

    p = sub.add_parser("evaluate", help="re-evaluate the saved model of a run directory")
    p.add_argument("--run", required=True, help="run directory written by 'recsim-ft train'")
    add_option(
        p,
        "--users",
        "--n-users",
        type=positive_int,
        default=None,
        help="test users (default: as trained)",
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=None, help="test-user seed (default: as trained)"
    )
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
    p.add_argument(
        "--seed", type=non_negative_int, default=None, help="test-user seed (default: as trained)"
    )
    p.add_argument(
        "--no-onnx", action="store_true", help="no ONNX user tower (it needs the onnx extra)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    threads_option(p)
    p.set_defaults(func=cmd_export)
