"""Time of collecting the paper's 160,000 logged events, saving them as parquet and loading them.

    python benchmarks/collect_log.py [--n 160000] [--repeats 3]

Target: collection of 160,000 Spotify events in a second or two on a 2-core machine (it is
vectorised: no Python loop per event). Prints one line per env with the best of ``--repeats``
timings and the file size; the env construction time is reported apart, since it is paid once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import gymnasium as gym

import recsim_ft  # noqa: F401  (registers the envs)
from recsim_ft.data import InteractionLog, collect

SETTINGS = (
    ("Spotify-v0", {}),
    ("HMFashion-v0", {}),
    ("VaccineMessaging-v0", {"clusters": 25, "messages": 25}),
)


def best_of(repeats: int, fn, *args, **kwargs) -> tuple[float, object]:
    """Shortest wall time of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=160_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for env_id, kwargs in SETTINGS:
            make_s, env = best_of(1, gym.make, env_id, **kwargs)
            collect_s, log = best_of(args.repeats, collect, env, n=args.n, seed=0)
            path = Path(tmp) / f"{env_id}.parquet"
            save_s, _ = best_of(args.repeats, log.save, path, overwrite=True)
            load_s, _ = best_of(args.repeats, InteractionLog.load, path)
            print(
                f"{env_id:22s} n={args.n:,}  make {make_s:6.2f} s  collect {collect_s:6.2f} s  "
                f"save {save_s:5.2f} s  load {load_s:5.2f} s  "
                f"file {path.stat().st_size / 1e6:5.1f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
