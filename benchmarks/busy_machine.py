"""Train-step time on an idle machine and beside busy processes, by torch thread count: what a
user with other work running sees, and the evidence for one thread by default
(``recsim_ft/threads.py``).

    python benchmarks/busy_machine.py [--threads 1 2] [--busy 1] [--steps 20]

Paper config, Spotify shapes, batch 32, the trainer's step, FT-Mamba and FT-Transformer taking
turns step by step (``train_step.py``'s timing). "busy" starts ``--busy`` processes that each
spin one core in pure Python (no threads of their own) for the duration of the measurement.
Prints the median step time per (embedder, threads, condition) and the busy / idle ratio; the
last line is one JSON object. Run it on an otherwise idle machine: other load is the variable.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import torch
from train_step import build_model, random_users, shape_sets, time_steps

from recsim_ft.models import FeatureTensors
from recsim_ft.train import TrainStep, make_optimizer

SPIN = "while True: pass"


def measure(threads: int, steps: int, embedders: list[str]) -> dict[str, float]:
    """Median seconds per step of each embedder with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    user_schema, item_schema, item_table = shape_sets()["spotify"]
    rng = np.random.default_rng(0)
    n_rows, device = 4096, torch.device("cpu")
    users = FeatureTensors.from_batch(random_users(user_schema, n_rows, rng))
    items = FeatureTensors.from_batch(item_table)
    actions = torch.as_tensor(rng.integers(0, len(item_table), n_rows))
    rewards = torch.as_tensor(rng.integers(-1, 2, n_rows), dtype=torch.float32)
    train_steps = {}
    for embedder in embedders:
        model = build_model(embedder, user_schema, item_schema)
        optimizer = make_optimizer(model, lr=1e-4)
        train_steps[embedder] = TrainStep(model, optimizer, users, items, actions, rewards, 32)
    return time_steps(train_steps, n_rows, 32, steps, block=1, warmup=3, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--busy", type=int, default=1, help="spinning processes beside the steps")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--embedders", nargs="+", default=["mamba", "transformer"])
    args = parser.parse_args()
    report: dict[str, dict[str, float]] = {}
    print(f"torch {torch.__version__}, Spotify shapes, batch 32, median of {args.steps} steps")
    for condition in ("idle", "busy"):
        spinners = []
        if condition == "busy":
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
        try:
            for threads in args.threads:
                times = measure(threads, args.steps, args.embedders)
                for embedder, seconds in times.items():
                    key = f"{embedder}_{threads}t"
                    report.setdefault(key, {})[f"{condition}_ms"] = round(seconds * 1e3, 1)
                    ms = seconds * 1e3
                    print(f"{condition:5s} {key:16s} {ms:9.1f} ms", flush=True)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    for row in report.values():
        row["busy_over_idle"] = round(row["busy_ms"] / row["idle_ms"], 2)
    print(json.dumps({"busy_processes": args.busy, **report}))


if __name__ == "__main__":
    main()
