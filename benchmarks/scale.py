"""The whole H&M job at full size, stage by stage, by catalogue size: wall time and peak memory.

    python benchmarks/scale.py --items 1000 10000 all              # 1,371,980 customers
    python benchmarks/scale.py --items 1000 --customers 50000 --steps 100   # a quick look
    python benchmarks/scale.py --items all --workers 2              # and on 2 Ray workers
    python benchmarks/scale.py --items all --workers 2 --two-node   # a simulated 2-node cluster
    python benchmarks/scale.py --items all --workers 16 --address auto   # a real cluster
    python benchmarks/scale.py --items all --workers 2 --id-updates sparse --train-only

For each catalogue size (``all``: every one of the stand-in's 105,542 articles), one fresh
process runs the stages a user runs, on the synthetic stand-in with ``--customers`` customers:

- ``env``: generate the Kaggle-format files (the first time; cached after) and build
  ``HMFashion-v0`` with that many articles;
- ``collect``: a log of ``--n`` events (``recsim_ft.data.collect``);
- ``train``: FT-Mamba under the ranking preset for ``--steps`` steps (no evaluations);
- ``embed``: every article and every customer through its tower (``recsim_ft.retrieval``);
- ``retrieve``: exact top 12 of the whole catalogue for every customer;
- ``score``: HR@10 and MAP@12 of ``--test-users`` test users (``recsim_ft.evaluate``).

With ``--workers N`` each catalogue size then runs again, in a second fresh process, on N Ray
workers of one thread each (the ``ray`` extra): ``train`` data-parallel on Ray Train
(``TrainConfig.workers``), ``embed + retrieve`` sharded across Ray Data workers
(``recsim_ft.retrieval.sharded_top_k``), and ``check``: the sharded answers for 20,000
customers drawn across all blocks against one process's ``top_k`` for them (equal arrays, or
the run fails). The Ray runtime is a local one of N CPUs, the cluster at ``--address``, or with
``--two-node`` a simulated cluster of two nodes of N / 2 CPUs each on this machine
(``ray.cluster_utils.Cluster``). The ratios printed are the Ray stage's wall time over the
single process's (``embed + retrieve`` against the sum of both), and the training steps per
second inside the workers (without Ray's start-up) against the single process's.
``--id-updates sparse`` trains the id tables row-wise (``TrainConfig.id_updates``) in both;
``--train-only`` skips embedding and retrieval (and the check).

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
import numpy as np
import torch

import recsim_ft  # noqa: F401 (registers the envs)
from recsim_ft import cpu
from recsim_ft.agents import TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.evaluate import evaluate
from recsim_ft.memory import stage as measured
from recsim_ft.retrieval import ItemEmbeddings, embed_rows
from recsim_ft.retrieval.sharded import sharded_top_k
from recsim_ft.train import ID_UPDATES, TrainConfig


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
            threads=1 if args.on_ray else args.threads,
            checkpoint_every=None,
            workers=args.workers if args.on_ray else None,
            id_updates=args.id_updates,
        )
        agent = TwoTowerAgent(env, "mamba", "ranking", config).fit(log, progress=None)
    figures["rates"] = {"train_steps_per_s": round(agent.result_.steps_per_s, 3)}
    model, item_table, customers = agent.model_, rec_env.item_table(), rec_env.customers()
    if args.on_ray and not args.train_only:
        with stage("embed + retrieve", figures):
            ids = sharded_top_k(model, item_table, customers, 12, args.workers)[0]
        with stage("check", figures):  # 20,000 customers across all blocks, as one process
            rows = np.sort(np.random.default_rng(0).choice(len(ids), 20_000, replace=False))
            items = ItemEmbeddings.from_model(model, item_table, progress=None)
            alone = items.top_k(embed_rows(model, customers[rows], progress=None), 12)[0]
            np.testing.assert_array_equal(ids[rows], alone)
    elif not args.train_only:
        with stage("embed", figures):
            items = ItemEmbeddings.from_model(model, item_table, progress=None)
            users = embed_rows(model, customers, progress=None)
        with stage("retrieve", figures):
            items.top_k(users, 12, progress=None)
    with stage("score", figures):
        metrics = evaluate(agent, env, n_users=args.test_users, seed=0)
    figures["sizes"] = {"items": len(item_table), "customers": len(customers), "log": len(log)}
    figures["quality"] = {k: round(float(metrics[k]), 4) for k in ("HR@10", "MAP@12")}
    return figures


def start_cluster(args: argparse.Namespace) -> None:
    """The Ray runtime of the ``--workers`` run: the cluster at ``--address``, a simulated
    two-node one (``--two-node``), or a local one (``recsim_ft.parallel.start_ray``)."""
    from recsim_ft.parallel import start_ray

    if args.two_node:
        from ray.cluster_utils import Cluster

        each = max(1, args.workers // 2)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": each})
        cluster.add_node(num_cpus=args.workers - each)
        cluster.wait_for_nodes()
        args.address = cluster.address
    start_ray(args.workers, args.address)


def run_child(size: str, extra: list[str]) -> dict:
    """One catalogue size in a fresh process; its lines printed as they come."""
    child = subprocess.Popen(
        [sys.executable, __file__, *sys.argv[1:], "--one", size, *extra],
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
    return results[0] if results else {"exit_status": status}


def ratios(alone: dict, on_ray: dict) -> dict[str, float]:
    """The Ray run's wall time per stage over the single process's, and the training rate."""
    if "train" not in alone or "train" not in on_ray:
        return {}
    seconds = {stage: figures["s"] for stage, figures in alone.items() if "s" in figures}
    out = {
        "train wall": on_ray["train"]["s"] / seconds["train"],
        "train steps/s": on_ray["rates"]["train_steps_per_s"] / alone["rates"]["train_steps_per_s"],
    }
    if "embed + retrieve" in on_ray and "retrieve" in seconds:
        out["embed + retrieve wall"] = on_ray["embed + retrieve"]["s"] / (
            seconds["embed"] + seconds["retrieve"]
        )
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", nargs="+", default=["1000", "10000", "all"])
    parser.add_argument("--customers", type=int, default=1_371_980)
    parser.add_argument("--n", type=int, default=160_000, help="logged events")
    parser.add_argument("--steps", type=int, default=2_000, help="training steps (ranking preset)")
    parser.add_argument("--test-users", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, help="also run on this many Ray workers")
    parser.add_argument("--address", help="the Ray cluster of --workers (default: a local one)")
    parser.add_argument("--two-node", action="store_true", help="a simulated 2-node cluster")
    parser.add_argument("--id-updates", choices=ID_UPDATES, default="dense")
    parser.add_argument("--train-only", action="store_true", help="no embedding and retrieval")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's catalogue size
    parser.add_argument("--on-ray", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        if args.on_ray:
            start_cluster(args)
        print("RESULT " + json.dumps(one_catalogue(args)), flush=True)
        return
    print(
        f"{cpu.describe()}; torch {torch.__version__}, {args.threads} threads, "
        f"{args.customers:,} customers, {args.n:,} logged events, {args.steps:,} steps, "
        f"{args.id_updates} id updates"
    )
    report = {}
    for size in args.items:
        print(f"-- {size} articles, one process, {args.threads} threads", flush=True)
        report[size] = {"one process": run_child(size, [])}
        if args.workers:
            where = "a simulated 2-node cluster" if args.two_node else args.address or "local"
            print(f"-- {size} articles, {args.workers} Ray workers ({where})", flush=True)
            on_ray = run_child(size, ["--on-ray"])
            report[size]["ray"] = on_ray
            report[size]["ray / one process"] = ratios(report[size]["one process"], on_ray)
            print(json.dumps({"ray / one process": report[size]["ray / one process"]}), flush=True)
    print(json.dumps({"cpu": cpu.cpu_model(), "threads": args.threads, **report}))


if __name__ == "__main__":
    main()
