"""``recsim-ft collect``: log the behaviour policy's interactions with an env."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsim_ft.cli.options import (
    UsageError,
    env_options,
    make_env_or_fail,
    non_negative_int,
    parse_env_kwargs,
    positive_int,
)
from recsim_ft.data import collect


def cmd_collect(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it")
    env = make_env_or_fail(args.env, parse_env_kwargs(args.env_kwargs))
    log = collect(env, n=args.n, seed=args.seed)
    log.save(out, overwrite=args.overwrite)
    dated = "" if log.times is None else f", dated {log.times.min()} .. {log.times.max()}"
    print(f"wrote {len(log):,} events of {args.env} to {out}{dated}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect", help="log interactions of the env's behaviour policy to a parquet file"
    )
    env_options(p, required=True)
    p.add_argument(
        "--n", type=positive_int, default=160_000, help="events to log (default: 160000)"
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the users, actions and rewards (default: 0)",
    )
    p.add_argument("--out", required=True, help="parquet file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_collect)
