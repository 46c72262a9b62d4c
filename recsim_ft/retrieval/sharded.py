"""Every user's embedding and exact top k over the whole catalogue, in blocks of users across
Ray workers (Ray Data's ``map_batches``; the ``ray`` extra): for a job whose users outgrow one
machine's time. The answers are the single process's, array for array: each worker embeds its
block in the same ``batch_rows`` batches as :func:`embed_rows` does (so every user's embedding is
computed by the same operations) and ranks it with :meth:`ItemEmbeddings.top_k`, and the blocks
come back in order (``preserve_order``, and checked).
"""

from __future__ import annotations

import copy

import numpy as np

from recsim_ft.checks import check_int
from recsim_ft.models import TwoTower
from recsim_ft.parallel import start_ray
from recsim_ft.retrieval.catalogue import ItemEmbeddings, embed_rows
from recsim_ft.schema import Batch

#: users per Ray task (a multiple of the embedding batch, so that batches align with one process)
BLOCK_ROWS = 1 << 16


class _Retriever:
    """A Ray Data worker: the model and the item embeddings once, then blocks of users."""

    def __init__(self, model: TwoTower, items: ItemEmbeddings, users: Batch, k: int, rows: int):
        import torch

        torch.set_num_threads(1)  # one CPU per worker, as Ray schedules it
        self.model, self.items, self.users, self.k, self.rows = model, items, users, k, rows

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = int(block["start"][0])
        users = self.users[start : start + self.rows]
        ids, scores = self.items.top_k(embed_rows(self.model, users), self.k)
        return {"start": np.full(len(ids), start), "ids": ids, "scores": scores}


def sharded_top_k(
    model: TwoTower,
    item_table: Batch,
    users: Batch,
    k: int,
    workers: int = 2,
    address: str | None = None,
    block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` items of every user of ``users``: (n, k) item indices best first and
    their scores, equal to ``ItemEmbeddings.from_model(model, item_table).top_k(embed_rows(model,
    users), k)``, computed in blocks of ``block_rows`` users (a multiple of 4,096) by ``workers``
    Ray workers (on the cluster at ``address``, else a local runtime)."""
    k = check_int("k", k, low=1)
    block_rows = check_int("block_rows", block_rows, low=4096)
    if block_rows % 4096:
        raise ValueError(
            f"block_rows must be a multiple of 4,096 (embed_rows' batch), got {block_rows}"
        )
    items = ItemEmbeddings.from_model(model, item_table)
    k = check_int("k", k, low=1, high=items.n_items)
    ray = start_ray(workers, address, purpose="sharded retrieval")
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True
    starts = np.arange(0, len(users.ids), block_rows)
    dataset = ray.data.from_items([{"start": int(s)} for s in starts]).map_batches(
        _Retriever,
        fn_constructor_args=(copy.deepcopy(model).cpu(), items, users, k, block_rows),
        batch_size=1,
        concurrency=workers,
        num_cpus=1,
    )
    parts = [batch for batch in dataset.iter_batches(batch_size=None, batch_format="numpy")]
    if not parts:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    order = np.concatenate([part["start"] for part in parts])
    if (np.diff(order) < 0).any():  # preserve_order is the contract: never a silent shuffle
        raise RuntimeError("Ray Data returned the blocks of users out of order")
    ids = np.concatenate([part["ids"] for part in parts]).astype(np.int64)
    scores = np.concatenate([part["scores"] for part in parts]).astype(np.float32)
    return ids, scores
