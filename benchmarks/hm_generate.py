"""How fast, and in how much memory, the synthetic H&M stand-in writes its files, with and
without the dynamics (drift, new articles, seasons, repurchases, taste; ``dynamics=True``).

Each mode runs in a fresh subprocess writing parquet (``write_kaggle_files``, chunks of 100,000
customers) to a temporary folder: wall time and peak resident memory (``ru_maxrss``) of the
whole process, the catalogue's construction included. Target (issue 28, full size: 1.37M
customers, 31.8M transactions, 2 cores): <= 60 s and <= 4 GB with the dynamics.

``--env`` then builds ``HMFashion-v0`` over the whole catalogue (``n_items=None``) from the
stand-in, twice, each in a fresh subprocess with an empty cache folder the first time: the first
writes the files and processes them, the second reads both caches. Target: <= 60 s the first
time, <= 10 s from the cache.

    python benchmarks/hm_generate.py --env            # full size, both modes, then the env
    python benchmarks/hm_generate.py --scale 0.05     # quick check
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


def child(n_customers: int, dynamics: bool) -> None:
    """Write the files once and print seconds, peak RSS and the transaction count as JSON."""
    import pyarrow.parquet as pq

    from recsim_ft.envs.hm_synthetic import write_kaggle_files

    out = Path(tempfile.mkdtemp(prefix="hm_generate_"))
    try:
        start = time.perf_counter()
        paths = write_kaggle_files(out, n_customers, fmt="parquet", dynamics=dynamics)
        seconds = time.perf_counter() - start
        rows = pq.ParquetFile(paths["transactions"]).metadata.num_rows
        size = sum(p.stat().st_size for p in paths.values())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {"seconds": seconds, "peak_mb": peak_mb, "transactions": rows, "mib": size / 2**20}
        )
    )


def env_child(n_customers: int, cache_dir: str) -> None:
    """Build HMFashion-v0 over the whole catalogue; print seconds and peak RSS as JSON."""
    start = time.perf_counter()
    from recsim_ft.envs.hm import HMFashionEnv

    env = HMFashionEnv(n_customers=n_customers, n_items=None, cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "items": env.n_items}))


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full customers")
    parser.add_argument(
        "--modes", nargs="+", choices=("plain", "dynamics"), default=["plain", "dynamics"]
    )
    parser.add_argument("--env", action="store_true", help="also time HMFashion-v0, all items")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--env-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1] == "dynamics")
        return
    if args.env_child:
        env_child(int(args.env_child[0]), args.env_child[1])
        return
    from recsim_ft import cpu
    from recsim_ft.envs.hm_synthetic import FULL_N_CUSTOMERS

    n_customers = max(1, round(FULL_N_CUSTOMERS * args.scale))
    print(f"{cpu.describe()}; {n_customers:,} customers (scale {args.scale}), parquet")
    report = {"cpu": cpu.cpu_model(), "n_customers": n_customers}
    for mode in args.modes:
        report[mode] = r = run_child("--child", str(n_customers), mode)
        print(
            f"{mode:9s} {r['seconds']:6.1f} s  peak RSS {r['peak_mb']:7,.0f} MiB  "
            f"{r['transactions']:,} transactions, {r['mib']:,.0f} MiB of parquet",
            flush=True,
        )
    if args.env:
        cache_dir = tempfile.mkdtemp(prefix="hm_generate_env_")
        try:
            for label in ("env_first", "env_cached"):
                report[label] = r = run_child("--env-child", str(n_customers), cache_dir)
                print(
                    f"{label:10s} {r['seconds']:6.1f} s  peak RSS {r['peak_mb']:7,.0f} MiB  "
                    f"HMFashion-v0 over all {r['items']:,} items",
                    flush=True,
                )
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
