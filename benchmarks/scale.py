"""The whole H&M job at full size, stage by stage, by catalogue size: wall time and peak memory.

    python benchmarks/scale.py --items 1000 10000 all              # 1,371,980 customers
    python benchmarks/scale.py --items 1000 --customers 50000 --steps 100   # a quick look

For each catalogue size (``all``: every one of the stand-in's 105,542 articles), one fresh
process runs the stages a user runs, on the synthetic stand-in with ``--customers`` customers:

- ``env``: generate the Kaggle-format files (the first time; cached after) and build
  ``HMFashion-v0`` with that many articles;
- ``collect``: a log of ``--n`` events (``recsim_ft.data.collect``);
- ``train``: FT-Mamba under the ranking preset for ``--steps`` steps (no evaluations);
- ``embed``: every article and every customer through its tower (``recsim_ft.retrieval``);
- ``retrieve``: exact top 12 of the whole catalogue for every customer;
- ``score``: HR@10 and MAP@12 of ``--test-users`` test users (``recsim_ft.evaluate``).

Per stage: wall seconds and the process's peak resident memory during that stage (the kernel's
high-water mark, reset at the stage's start through ``/proc/self/clear_refs``). Every stage's
line is printed as it ends, so a run stopped part-way keeps what it measured; the last line is
one JSON object with every figure, the CPU and the thread count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from contextlib import contextmanager

import gymnasium as gym
import torch

import recsim_ft  # noqa: F401 (registers the envs)
from recsim_ft import cpu
from recsim_ft.agents import TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.evaluate import evaluate
from recsim_ft.memory import stage as measured
from recsim_ft.retrieval import ItemEmbeddings, embed_rows
from recsim_ft.train import TrainConfig


@contextmanager
def stage(name: str, figures: dict[str, dict[str, float]]):
    """``recsim_ft.memory.stage`` (its line on stderr), and its figures as a JSON line on
    stdout, which the parent process reads."""
    with measured(name, figures):
        yield
    print(json.dumps({"stage": name, **figures[name]}), flush=True)


def one_catalogue(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every stage for one catalogue size, in this process."""
    torch.set_num_threads(args.threads)
    figures: dict[str, dict[str, float]] = {}
    n_items = None if args.one == "all" else int(args.one)
    with stage("env", figures):
        env = gym.make("HMFashion-v0", n_items=n_items, n_customers=args.customers)
        rec_env = env.unwrapped
    with stage("collect", figures):
        log = collect(env, n=args.n, seed=0)
    with stage("train", figures):
        config = TrainConfig.from_preset(
            "ranking",
            steps=args.steps,
            eval_every=None,
            select_metric="none",
            threads=args.threads,
            checkpoint_every=None,
        )
        agent = TwoTowerAgent(env, "mamba", "ranking", config).fit(log, progress=None)
    with stage("embed", figures):
        items = ItemEmbeddings.from_model(agent.model_, rec_env.item_table(), progress=None)
        users = embed_rows(agent.model_, rec_env.customers(), progress=None)
    with stage("retrieve", figures):
        items.top_k(users, 12, progress=None)
    with stage("score", figures):
        metrics = evaluate(agent, env, n_users=args.test_users, seed=0)
    figures["sizes"] = {"items": items.n_items, "customers": len(users), "log": len(log)}
    figures["quality"] = {k: round(float(metrics[k]), 4) for k in ("HR@10", "MAP@12")}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", nargs="+", default=["1000", "10000", "all"])
    parser.add_argument("--customers", type=int, default=1_371_980)
    parser.add_argument("--n", type=int, default=160_000, help="logged events")
    parser.add_argument("--steps", type=int, default=2_000, help="training steps (ranking preset)")
    parser.add_argument("--test-users", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's catalogue size
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_catalogue(args)), flush=True)
        return
    print(
        f"{cpu.describe()}; torch {torch.__version__}, {args.threads} threads, "
        f"{args.customers:,} customers, {args.n:,} logged events, {args.steps:,} steps"
    )
    report = {}
    for size in args.items:
        print(f"-- {size} articles", flush=True)
        child = subprocess.Popen(
            [sys.executable, __file__, *sys.argv[1:], "--one", size],
            stdout=subprocess.PIPE,
            text=True,
        )
        results = []
        for line in child.stdout:  # each stage's line as it ends
            if line.startswith("RESULT "):
                results.append(json.loads(line[7:]))
            else:
                print(line, end="", flush=True)
        status = child.wait()
        report[size] = results[0] if results else {"exit_status": status}
    print(json.dumps({"cpu": cpu.cpu_model(), "threads": args.threads, **report}))


if __name__ == "__main__":
    main()
