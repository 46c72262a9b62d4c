"""``recsim-ft hm-competition``: the H&M competition's protocol on the Kaggle files or the
synthetic stand-in."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsim_ft import competition
from recsim_ft.cli.options import UsageError, add_option, non_negative_int, positive_int
from recsim_ft.envs.hm.data import UNKNOWN_IDS, read_transactions
from recsim_ft.envs.hm.synthetic import synthetic_files
from recsim_ft.fileio import atomic_path


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
        data = synthetic_files(args.users, seed=args.seed, dynamics=True)
        source = f"the synthetic stand-in, {args.users:,} customers, seed {args.seed}"
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hm-competition",
        help="the H&M competition's protocol: 12 articles per customer for a week, MAP@12, "
        "baseline strategies (Kaggle files or the synthetic stand-in)",
    )
    p.add_argument("--hm-data", help="directory of the Kaggle H&M files")
    add_option(
        p,
        "--users",
        "--customers",
        type=positive_int,
        default=100_000,
        help="customers of the synthetic stand-in, without --hm-data (default: 100,000)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="the synthetic stand-in's seed")
    p.add_argument(
        "--weeks", type=positive_int, default=3, help="target weeks, the last ones (default 3)"
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        metavar="NAME",
        help=f"default: all of them ({' '.join(competition.STRATEGIES)})",
    )
    p.add_argument(
        "--hm-unknown-ids",
        choices=UNKNOWN_IDS,
        help="transactions naming customers or articles missing from their files: drop them, "
        "with a warning (the default), or stop with an error",
    )
    p.add_argument("--out", required=True, help="folder for competition.md and .csv")
    p.add_argument(
        "--overwrite", action="store_true", help="replace competition.md and .csv in --out"
    )
    p.set_defaults(func=cmd_hm_competition)
