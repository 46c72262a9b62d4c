"""An approximate nearest-neighbour index over :class:`ItemEmbeddings` for serving, on FAISS (the
``retrieval`` extra: ``pip install recsim-ft[retrieval]``), with its recall against the exact
top-k measured, never assumed.

The score ``e_u . e_j + prior_j`` is an inner product in one more dimension: item rows
``[e_j, prior_j]`` against query rows ``[e_u, 1]``, so the index ranks exactly what the model
ranks, prior included; where the prior varies, IVF and HNSW search it as Euclidean distance after
one more coordinate (``space``, see ``__init__``), as inner products mislead their k-means and
graphs. Kinds: ``"flat"``
(exhaustive: exact, the reference), ``"ivf"`` (an inverted file of ``n_lists`` k-means cells,
``n_probe`` of them searched per query) and ``"hnsw"`` (a graph of ``hnsw_m`` links per point,
``ef_search`` candidates per query).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from recsim_ft.checks import check_choice, check_int
from recsim_ft.fileio import atomic_path
from recsim_ft.retrieval.catalogue import ItemEmbeddings

KINDS = ("flat", "ivf", "hnsw")
#: Bounds of the HNSW parameters (FAISS's own advice is M of 4 to 64, efSearch in the hundreds):
#: beyond them the graph's memory or a search's time grows without a gain in recall.
MAX_HNSW_M, MAX_EF_SEARCH = 512, 65_536


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "the approximate index needs FAISS: pip install 'recsim-ft[retrieval]' "
            "(or faiss-cpu); exact retrieval (ItemEmbeddings.top_k) needs nothing more"
        ) from err
    return faiss


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of the share of the exact top k (``exact``, (n, k)) that ``found`` (n, k)
    holds, in any order; -1 in ``found`` (no item) counts as a miss. By ids: where several items
    tie at the k-th score, :meth:`ApproximateIndex.recall` counts any of them.

    >>> recall_at_k(np.array([[1, 2], [3, -1]]), np.array([[2, 1], [3, 4]]))
    0.75
    """
    found, exact = np.asarray(found), np.asarray(exact)
    for name, ids in (("found", found), ("exact", exact)):
        if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} must be integer item ids, got dtype {ids.dtype}")
    if found.shape != exact.shape or found.ndim != 2:
        raise ValueError(
            f"found and exact must be (n, k) arrays of one shape, got {found.shape} and "
            f"{exact.shape}"
        )
    if found.size == 0:
        raise ValueError("no queries: recall is undefined over zero queries")
    # is each exact id among its row's found ids? Every row's ids shifted into a range of its
    # own (a -1 below it), sorted once: one search for all rows, in memory linear in n * k (a
    # comparison of every pair took n * k * k)
    shift = (np.arange(len(exact)) * (int(max(found.max(), exact.max())) + 2))[:, None]
    pool = np.sort(found + shift, axis=None)
    keys = exact + shift
    at = np.searchsorted(pool, keys).clip(max=len(pool) - 1)
    return float((pool[at] == keys).mean())


class ApproximateIndex:
    """A FAISS index of a catalogue's item embeddings, searched by user embeddings.

    Building is deterministic: the k-means of ``"ivf"`` is seeded with ``seed``, and
    ``"hnsw"`` inserts its items on one thread (its graph depends on the insertion order).
    Searching uses FAISS's threads.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> items = ItemEmbeddings(rng.normal(size=(500, 8)), np.zeros(500))
        >>> index = ApproximateIndex(items, kind="ivf", n_lists=8, n_probe=8)
        >>> users = rng.normal(size=(20, 8)).astype(np.float32)
        >>> index.recall(users, k=10)
        1.0
    """

    def __init__(
        self,
        items: ItemEmbeddings,
        kind: str = "ivf",
        *,
        n_lists: int | None = None,
        n_probe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        seed: int = 0,
        space: str = "auto",
    ) -> None:
        if not isinstance(items, ItemEmbeddings):
            raise TypeError(
                f"items must be ItemEmbeddings (ItemEmbeddings(vectors, prior), or "
                f"ItemEmbeddings.from_model(model, item_table)), got {type(items).__name__}"
            )
        faiss = _faiss()
        self.items, self.kind = items, check_choice("kind", kind, KINDS)
        # one point per distinct (embedding, prior): items of equal features share both, and a
        # graph of many equal points searches badly (HNSW found 15% of a trained H&M model's
        # top 12 before); search expands each point found into its items, in index order
        rows, group = np.unique(
            np.hstack([items.vectors, items.prior[:, None]]), axis=0, return_inverse=True
        )
        # inner products are no distance: a graph or k-means over them links every point to
        # those of largest norm, here the most negative priors (the least bought items) when the
        # prior varies. One more coordinate sqrt(M^2 - |x|^2), 0 for queries, makes the nearest
        # point in Euclidean distance the one of largest inner product (Bachrach et al. 2014).
        # Without a prior it costs recall (HNSW over 105k random vectors 0.987 -> 0.736), so
        # "auto" takes it only where the prior varies.
        space = check_choice("space", space, ("auto", "inner", "euclidean"))
        if space == "auto":
            space = "euclidean" if np.ptp(items.prior) > 0 else "inner"
        self.space = "inner" if kind == "flat" else space
        if self.space == "euclidean":
            squared = (rows.astype(np.float64) ** 2).sum(axis=1)
            rows = np.hstack([rows, np.sqrt(squared.max() - squared)[:, None]])
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        self._members = np.argsort(group, kind="stable")  # items by point, index order within
        self._sizes = np.bincount(group, minlength=len(rows))
        self._starts = np.concatenate(([0], np.cumsum(self._sizes)[:-1]))
        dim, n_points = rows.shape[1], len(rows)
        metric = faiss.METRIC_L2 if self.space == "euclidean" else faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
            index.add(rows)
        elif kind == "ivf":
            # FAISS's k-means wants >= 39 items per cell; 4 sqrt(n) cells is its usual advice
            default = max(1, min(round(4 * math.sqrt(n_points)), n_points // 39))
            n_lists = check_int("n_lists", default if n_lists is None else n_lists, low=1)
            n_lists = min(n_lists, n_points)
            quantizer = (
                faiss.IndexFlatL2(dim) if metric == faiss.METRIC_L2 else faiss.IndexFlatIP(dim)
            )
            index = faiss.IndexIVFFlat(quantizer, dim, n_lists, metric)
            index.cp.seed = check_int("seed", seed, low=0)
            index.train(rows)
            index.add(rows)
            index.nprobe = min(check_int("n_probe", n_probe, low=1), n_lists)
        else:
            # FAISS allocates M links per point up front: M = 100,000 asks for gigabytes
            links = check_int("hnsw_m", hnsw_m, low=2, high=MAX_HNSW_M)
            index = faiss.IndexHNSWFlat(dim, links, metric)
            index.hnsw.efSearch = check_int("ef_search", ef_search, low=1, high=MAX_EF_SEARCH)
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                index.add(rows)
            finally:
                faiss.omp_set_num_threads(threads)
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items per query as the index finds them: (n, k) int64 item indices, best
        first (items of one embedding and prior in index order), and their float32 scores; an
        index that finds fewer than k items pads with -1 and -inf."""
        queries = self.items.check_queries(queries)
        k = check_int("k", k, low=1, high=self.items.n_items)
        columns = [queries, np.ones((len(queries), 1), np.float32)]
        if self.space == "euclidean":
            columns.append(np.zeros((len(queries), 1), np.float32))
        augmented = np.hstack(columns)
        # k points hold at least k items
        _, points = self.index.search(np.ascontiguousarray(augmented), min(k, len(self._sizes)))
        sizes = np.where(points >= 0, self._sizes[points.clip(min=0)], 0)
        ends = np.cumsum(sizes, axis=1)  # items held by the points up to each column
        place = np.arange(k)
        # the point holding each place: how many points end at or before it, one search over
        # every row at once (each row's ends shifted into a range of its own), memory n * k
        shift = (np.arange(len(ends)) * (int(ends[:, -1].max()) + k + 1))[:, None]
        column = np.searchsorted((ends + shift).ravel(), (place + shift).ravel(), side="right")
        column = column.reshape(len(ends), k) - (np.arange(len(ends)) * ends.shape[1])[:, None]
        found = column < points.shape[1]
        column = column.clip(max=points.shape[1] - 1)
        before = np.take_along_axis(ends - sizes, column, axis=1)
        point = np.take_along_axis(points, column, axis=1).clip(min=0)
        ids = np.where(found, self._members[self._starts[point] + place - before], -1)
        scores = np.einsum("nd,nkd->nk", queries, self.items.vectors[ids.clip(min=0)])
        scores = np.where(found, scores + self.items.prior[ids.clip(min=0)], -np.inf)
        return ids.astype(np.int64), scores.astype(np.float32)

    def recall(self, queries: np.ndarray, k: int) -> float:
        """Recall@k of :meth:`search` against the exact top k (:meth:`ItemEmbeddings.top_k`):
        the share of the items found that belong in it, an item whose score equals the exact
        k-th score counting as belonging (items of equal features have equal embeddings, and
        which of them makes the cut is arbitrary; without ties this is :func:`recall_at_k`)."""
        queries = self.items.check_queries(queries)
        found, _ = self.search(queries, k)
        kth = self.items.top_k(queries, k)[1][:, -1:]
        vectors = self.items.vectors[found.clip(min=0)]
        scores = np.einsum("nd,nkd->nk", queries, vectors) + self.items.prior[found.clip(min=0)]
        tolerance = 1e-5 * np.maximum(1.0, np.abs(kth))  # float32 sums in another order
        return float(((found >= 0) & (scores >= kth - tolerance)).mean())

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the FAISS index to one file (``faiss.read_index`` reads it back). Its points are
        the distinct rows ``[e_j, prior_j]`` (and, in the "euclidean" ``space``, one more
        coordinate), its queries ``[e_u, 1]`` (and a 0). Refuses to replace an existing file
        unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        with atomic_path(path) as tmp:
            _faiss().write_index(self.index, str(tmp))
        return path
