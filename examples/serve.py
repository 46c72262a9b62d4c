"""Train a two-tower model, hand it to a service, and answer the way the service would: with
onnxruntime and numpy only, no recsim-ft and no torch.

    python examples/serve.py                      # H&M, 20,000 articles, FT-Mamba, ranking preset
    python examples/serve.py --embedder transformer
    python examples/serve.py --smoke

``export_model`` writes the item embeddings and prior (``items.npy``, ``item_prior.npy``) and the
user tower as an ONNX graph (``user_tower.onnx``, checked against the model). ``answer`` below is
all a service needs: the user's features in, the top 12 articles out. The table compares its
answers with the model's own ranking, times both, and measures a FAISS index's recall against
the exact top 12 (``recsim_ft.retrieval.ApproximateIndex``, the ``retrieval`` extra).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
from common import (
    at_least,
    example_parser,
    needs_extra,
    output_paths,
    parse_example_args,
    print_table,
)

from recsim_ft.agents import TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.metrics import top_k
from recsim_ft.retrieval import ApproximateIndex, ItemEmbeddings, embed_rows, export_model
from recsim_ft.train import TrainConfig

K = 12  # the articles each answer holds: the competition's 12


def answer(folder: Path, numeric: np.ndarray, categorical: np.ndarray, k: int = K) -> np.ndarray:
    """What a service runs: the user tower's ONNX graph, then the exact top k by numpy."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "user_tower.onnx"))
    users = session.run(None, {"numeric": numeric, "categorical": categorical})[0]
    scores = users @ np.load(folder / "items.npy").T + np.load(folder / "item_prior.npy")
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, 1), 1), 1)


def main() -> None:
    parser = example_parser(__doc__)
    parser.add_argument("--embedder", default="mamba", choices=("mamba", "transformer"))
    parser.add_argument(
        "--items", type=at_least(K), default=20_000, help=f"H&M articles (at least {K})"
    )
    parser.add_argument("--steps", type=at_least(1), default=2_000, help="training steps")
    parser.add_argument("--users", type=at_least(1), default=2_000, help="test users to answer")
    parser.add_argument(
        "--customers", type=at_least(1), default=50_000, help="customers in the env's population"
    )
    parser.add_argument("--samples", type=at_least(1), default=160_000, help="logged events")
    args = parse_example_args(
        parser,
        smoke={"items": 500, "steps": 20, "users": 200, "customers": 20_000, "samples": 20_000},
    )
    exported = ["serve/items.npy", "serve/item_prior.npy", "serve/user_tower.onnx"]
    paths = output_paths(args.out, ["serve.csv", *exported], args.overwrite)
    with needs_extra("onnx"):
        import onnxruntime  # noqa: F401
    with needs_extra("retrieval"):
        import faiss  # noqa: F401

    env = gym.make("HMFashion-v0", n_items=args.items, n_customers=args.customers)
    config = TrainConfig.from_preset("ranking", steps=args.steps, seed=args.seed)
    try:  # before any data is generated: the test pool is known as soon as the env is
        users = env.unwrapped.test_users(args.users, seed=args.seed)
    except ValueError as err:
        parser.error(f"--users {args.users}: {err}; ask for fewer or pass more --customers")
    try:
        config.evaluation_users(env)
    except ValueError as err:
        parser.error(f"training's evaluation users: {err}; pass more --customers")
    log = collect(env, n=args.samples, seed=args.seed)
    agent = TwoTowerAgent(env, args.embedder, "ranking", config).fit(log, progress=False)

    folder = (args.out or Path(tempfile.mkdtemp(prefix="recsim_ft_serve_"))) / "serve"
    export_model(agent.model_, env.unwrapped.item_table(), folder, overwrite=args.overwrite)
    start = time.perf_counter()
    served = answer(folder, users.numeric.astype(np.float32), users.categorical)
    served_s = time.perf_counter() - start
    start = time.perf_counter()
    ranked = top_k(agent.score_items(users), K)
    model_s = time.perf_counter() - start
    queries = embed_rows(agent.model_, users)
    items = ItemEmbeddings.load(folder)
    exact = items.top_k(queries, K)[1]

    def same_scores(found: np.ndarray) -> float:
        """Users whose 12 answers score as the exact top 12 do (items of equal features tie,
        so the ids may differ where the scores cannot)."""
        scores = np.einsum("nd,nkd->nk", queries, items.vectors[found]) + items.prior[found]
        return float(np.isclose(np.sort(scores, 1), np.sort(exact, 1), atol=1e-4).all(1).mean())

    rows = {
        "service: load + answer (onnxruntime, numpy)": (served_s, same_scores(served), None),
        "model.score_all + top_k": (model_s, same_scores(ranked), None),
    }
    for kind in ("ivf", "hnsw"):
        index = ApproximateIndex(items, kind)
        start = time.perf_counter()
        found, _ = index.search(queries, K)
        searched = time.perf_counter() - start
        rows[f"FAISS {kind}, embeddings given"] = (
            searched,
            same_scores(found),
            index.recall(queries, K),
        )
    table = pd.DataFrame(rows, index=["seconds", "exact top 12", "recall@12"]).T
    print_table(
        f"H&M, {items.n_items:,} articles, {args.embedder}: {len(users.ids):,} test users answered",
        table,
    )
    if paths:
        table.to_csv(paths["serve.csv"], index_label="how")
        print(f"wrote {paths['serve.csv']}")


if __name__ == "__main__":
    main()
