"""How fast, and in how much memory, HMFashion-v0 loads full-size Kaggle files.

Writes synthetic files in the Kaggle format (``recsim_ft.envs.hm.synthetic``; at ``--scale 1``
1.37M customers, 105k articles and about 31.8M transactions, 3.5 GB of CSV) as CSV and as
parquet, then builds ``HMFashion-v0`` from each in a fresh subprocess, twice: the first load
processes the files and writes the cache, the second reads the cache. Prints wall time and the
subprocess's peak resident memory (``ru_maxrss``) of each.

Targets (full scale, 2 CPU cores): peak memory < 4 GB, first CSV load < 3 min, cached load < 10 s.

Usage::

    python benchmarks/hm_load.py --scale 0.05          # quick check (about 70k customers)
    python benchmarks/hm_load.py --dir /big/disk/hm    # full size; keeps the files there for reruns
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recsim_ft.envs.hm.data import find_kaggle_files
from recsim_ft.envs.hm.synthetic import FULL_N_CUSTOMERS, write_kaggle_files


def child(data_dir: str, cache_dir: str) -> None:
    """Build the env from ``data_dir`` and print wall time and peak RSS as JSON."""
    start = time.perf_counter()
    from recsim_ft.envs.hm.env import HMFashionEnv

    env = HMFashionEnv(data_dir, cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_mb,
                "transactions": env.data_summary["transactions"],
                "eligible_test_users": env.data_summary["eligible_test_users"],
            }
        )
    )


def measure(data_dir: Path, cache_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(data_dir), str(cache_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the full customer count"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to write the files (default: a temp dir, removed)",
    )
    parser.add_argument(
        "--formats", nargs="+", default=["csv", "parquet"], choices=["csv", "parquet"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    root = args.dir or Path(tempfile.mkdtemp(prefix="hm_bench_"))
    n_customers = max(1, round(FULL_N_CUSTOMERS * args.scale))
    print(
        f"HMFashion-v0 load benchmark: {n_customers:,} customers (scale {args.scale}), "
        f"files in {root}"
    )
    try:
        for fmt in args.formats:
            data_dir = root / fmt
            start = time.perf_counter()
            try:
                paths = write_kaggle_files(
                    data_dir, n_customers=n_customers, fmt=fmt, seed=args.seed
                )
                action = "generated"
            except (
                FileExistsError
            ):  # a given --dir from an earlier run: the files are reused as they are
                paths = find_kaggle_files(data_dir)
                action = "reusing"
            size_mb = sum(p.stat().st_size for p in paths.values()) / 2**20
            print(f"{fmt:8s} {action} {size_mb:,.0f} MiB in {time.perf_counter() - start:,.1f} s")
            cache_dir = Path(
                tempfile.mkdtemp(prefix="hm_bench_cache_")
            )  # empty: the first load is a real one
            for label in ("first load", "cached load"):
                result = measure(data_dir, cache_dir)
                print(
                    f"{fmt:8s} {label:12s} {result['seconds']:7.1f} s  "
                    f"peak RSS {result['peak_mb']:7,.0f} MiB  "
                    f"({result['transactions']:,} transactions, "
                    f"{result['eligible_test_users']:,} customers with >= 5 purchases "
                    "among the items)"
                )
            shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
