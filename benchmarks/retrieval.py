"""Top-12 retrieval over a whole catalogue: exact (``ItemEmbeddings.top_k``, blocked matrix
products) against FAISS indexes (``ApproximateIndex``), time and recall, by catalogue size.

    python benchmarks/retrieval.py                                   # random embeddings
    python benchmarks/retrieval.py --run results/hm20k/runs/hm_20000/mamba-ranking/seed5

Random item and user embeddings (standard normal, dimension 32, FT-Mamba's output width) for
each ``--items`` size: the hard case for an approximate index, with no cluster structure to
exploit. ``--run``: also a trained model's own catalogue and ``--run-users`` of its test users
(their embeddings by its towers). Per catalogue: exact top-12 of ``--users`` users (seconds,
users per second, and the time for the H&M competition's 1,371,980 customers at that rate: the
blocked search is linear in users), then each index's build time, search time and recall@12
against exact. Last line: one JSON object with every figure, the CPU and the thread count.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from recsim_ft import cpu
from recsim_ft.experiments import RunDir
from recsim_ft.retrieval import ApproximateIndex, ItemEmbeddings, embed_rows, recall_at_k

HM_CUSTOMERS = 1_371_980
INDEXES = {
    "ivf": {"kind": "ivf"},
    "ivf_probe64": {"kind": "ivf", "n_probe": 64},
    "hnsw": {"kind": "hnsw"},
}


def trained(run_dir: str, n_users: int) -> tuple[ItemEmbeddings, np.ndarray]:
    """A finished two-tower run's catalogue and ``n_users`` of its test users, embedded."""
    saved = RunDir(run_dir).load()
    items = ItemEmbeddings.from_model(saved.model, saved.env.unwrapped.item_table())
    return items, embed_rows(saved.model, saved.users(n_users))


def measure(items: ItemEmbeddings, queries: np.ndarray, k: int) -> dict[str, float]:
    start = time.perf_counter()
    exact, _ = items.top_k(queries, k)
    seconds = time.perf_counter() - start
    figures = {
        "exact_s": round(seconds, 3),
        "exact_users_per_s": round(len(queries) / seconds),
        "exact_hm_customers_min": round(HM_CUSTOMERS / (len(queries) / seconds) / 60, 2),
    }
    for name, params in INDEXES.items():
        start = time.perf_counter()
        index = ApproximateIndex(items, **params)
        built = time.perf_counter() - start
        start = time.perf_counter()
        found, _ = index.search(queries, k)
        searched = time.perf_counter() - start
        figures |= {
            f"{name}_build_s": round(built, 2),
            f"{name}_search_s": round(searched, 3),
            f"{name}_recall": round(recall_at_k(found, exact), 4),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1_000, 10_000, 105_542])
    parser.add_argument("--users", type=int, default=20_000, help="queries per catalogue")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    parser.add_argument("--run", help="also a finished two-tower run's catalogue and test users")
    parser.add_argument(
        "--run-users", type=int, default=5_000, help="test users of --run (its pool may be small)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    print(
        f"{cpu.describe()}; torch {torch.__version__}, faiss {faiss.__version__}, "
        f"{args.threads} threads, {args.users:,} users, top {args.k}"
    )
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.users, args.dim), dtype=np.float32)
    report: dict[str, dict[str, float]] = {}
    cases = [
        (
            f"random_{n}",
            lambda n=n: (
                ItemEmbeddings(rng.standard_normal((n, args.dim), dtype=np.float32), np.zeros(n)),
                queries,
            ),
        )
        for n in args.items
    ]
    if args.run:
        cases.append(("trained", lambda: trained(args.run, args.run_users)))
    for name, make in cases:
        items, users = make()
        report[name] = {"n_items": items.n_items, **measure(items, users, args.k)}
        print(f"{name:14s} " + "  ".join(f"{k} {v}" for k, v in report[name].items()), flush=True)
    print(json.dumps({"cpu": cpu.cpu_model(), "threads": args.threads, **report}))


if __name__ == "__main__":
    main()
