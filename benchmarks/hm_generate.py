"""How fast, and in how much memory, the synthetic H&M stand-in writes its files: plain, with the
dynamics (drift, new articles, seasons, repurchases, taste; ``dynamics=True``) and with the
shopping trips (``trips=True``).

Each mode runs in a fresh subprocess writing parquet (``write_kaggle_files``, chunks of 100,000
customers) to a temporary folder: wall time and peak resident memory (``ru_maxrss``) of the
whole process, the catalogue's construction included. Target (issue 28, full size: 1.37M
customers, 31.8M transactions, 2 cores): <= 60 s and <= 4 GB with the dynamics (issue 28) and
with the trips (issue 41).

``--env`` then builds ``HMFashion-v0`` over the whole catalogue (``n_items=None``) from the
stand-in, twice, each in a fresh subprocess with an empty cache folder the first time: the first
writes the files and processes them, the second reads both caches. Target: <= 60 s the first
time, <= 10 s from the cache.

``--protocol`` then runs the paper's protocol over the whole catalogue in one more subprocess
(the env from the cache of ``--env``): 160,000 dated events collected, popularity, segment
popularity and FT-Mamba under the ``paper`` and ``ranking`` presets trained on them (one torch
thread), each evaluated on 100 test users over every article; it prints each run's fit seconds
and metrics, the log's date range, and the peak RSS of the whole process (issue 28: collect and
the trainer work at ``n_items=None``).

    python benchmarks/hm_generate.py --env            # full size, all three modes, then the env
    python benchmarks/hm_generate.py --modes plain --env --protocol   # and the protocol
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


def child(n_customers: int, mode: str) -> None:
    """Write the files once and print seconds, peak RSS and the transaction count as JSON."""
    import pyarrow.parquet as pq

    from recsim_ft.envs.hm.synthetic import write_kaggle_files

    out = Path(tempfile.mkdtemp(prefix="hm_generate_"))
    try:
        start = time.perf_counter()
        paths = write_kaggle_files(
            out, n_customers, fmt="parquet", dynamics=mode == "dynamics", trips=mode == "trips"
        )
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
    from recsim_ft.envs.hm.env import HMFashionEnv

    env = HMFashionEnv(n_customers=n_customers, n_items=None, cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "items": env.n_items}))


#: the training curve's test-user evaluation only at the end: one evaluation embeds all 105,542
#: articles (about 4 s on one thread), so the default of one every 500 steps would add minutes
CURVE_END_ONLY = 100_000


def protocol_child(n_customers: int, cache_dir: str) -> None:
    """Collect, fit and evaluate over the whole catalogue; print the runs and peak RSS as JSON."""
    import gymnasium as gym
    import torch

    from recsim_ft.data import collect
    from recsim_ft.experiments import RunSpec, sweep
    from recsim_ft.experiments.rundir import RunDir

    torch.set_num_threads(1)
    kwargs = {"n_customers": n_customers, "n_items": None, "cache_dir": cache_dir}
    start = time.perf_counter()
    log = collect(gym.make("HMFashion-v0", **kwargs), seed=0)
    collect_seconds = time.perf_counter() - start
    out = Path(tempfile.mkdtemp(prefix="hm_protocol_"))
    try:
        specs = [
            RunSpec("HMFashion-v0", agent, 0, kwargs, "hm_all", **extra)
            for agent, extra in [
                ("popularity", {}),
                ("segment_popularity", {}),
                ("mamba", {"preset": "paper", "eval_every": CURVE_END_ONLY}),
                ("mamba", {"preset": "ranking", "eval_every": CURVE_END_ONLY}),
            ]
        ]
        outcomes = sweep(specs, out, progress=False)
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            raise SystemExit(f"{failed[0].spec.row} failed: {failed[0].error}")
        runs = {
            o.spec.row: {
                "fit_seconds": RunDir(o.run_dir).costs()["fit_seconds"],
                **{k: o.metrics[k] for k in ("HR@1", "HR@10", "MAP@12")},
            }
            for o in outcomes
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "events": len(log),
                "items": log.n_items,
                "first_day": str(log.times.min()),
                "last_day": str(log.times.max()),
                "collect_seconds": collect_seconds,
                "runs": runs,
                "peak_mb": peak_mb,
            }
        )
    )


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full customers")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("plain", "dynamics", "trips"),
        default=["plain", "dynamics", "trips"],
    )
    parser.add_argument("--env", action="store_true", help="also time HMFashion-v0, all items")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--protocol", action="store_true", help="also collect, fit and evaluate (needs --env)"
    )
    parser.add_argument("--env-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--protocol-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1])
        return
    if args.env_child:
        env_child(int(args.env_child[0]), args.env_child[1])
        return
    if args.protocol_child:
        protocol_child(int(args.protocol_child[0]), args.protocol_child[1])
        return
    if args.protocol and not args.env:
        parser.error("--protocol builds on the caches of --env: pass both")
    from recsim_ft import cpu
    from recsim_ft.envs.hm.synthetic import FULL_N_CUSTOMERS

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
            if args.protocol:
                report["protocol"] = r = run_child("--protocol-child", str(n_customers), cache_dir)
                print(
                    f"protocol: {r['events']:,} events over {r['items']:,} items, dated "
                    f"{r['first_day']} .. {r['last_day']}, collected in "
                    f"{r['collect_seconds']:.1f} s; peak RSS {r['peak_mb']:,.0f} MiB",
                    flush=True,
                )
                for row, run in r["runs"].items():
                    print(
                        f"  {row:22s} fit {run['fit_seconds']:7.1f} s  HR@1 {run['HR@1']:.3f}  "
                        f"HR@10 {run['HR@10']:.3f}  MAP@12 {run['MAP@12']:.4f}",
                        flush=True,
                    )
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
