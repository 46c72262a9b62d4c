"""A trained two-tower model's item embeddings, computed once, and exact top-k retrieval over the
whole catalogue by blocked matrix products.

A two-tower model scores user ``u`` and item ``j`` as ``e_u . e_j + prior_j`` (the prior is the
popularity term ``T log q`` of a softmax trained with ``popularity_prior``, else zero), so
serving needs the item side once: :class:`ItemEmbeddings` holds it, and its :meth:`top_k`
ranks the catalogue for many users a block of users at a time, so memory stays bounded by
``block_scores`` floats whatever the number of users and items.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recsim_ft.checks import check_choice, check_int
from recsim_ft.fileio import atomic_path
from recsim_ft.models import TwoTower
from recsim_ft.progress import progress_bar
from recsim_ft.schema import Batch

#: Scores held at once by :meth:`ItemEmbeddings.top_k` (16 MiB of float32): users per block =
#: this // n_items.
BLOCK_SCORES = 1 << 22
#: The files of :meth:`ItemEmbeddings.save` in a folder.
VECTORS_FILE, PRIOR_FILE, MANIFEST_FILE = "items.npy", "item_prior.npy", "items.json"
#: the files of a whole export (``recsim_ft.retrieval.export``) that pair items with a user tower
USER_TOWER, EXPORT_MANIFEST = "user_tower.onnx", "export.json"


def save_array(path: Path, array: np.ndarray) -> None:
    """``array`` as an ``.npy`` file at ``path``, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def embed_rows(
    model: TwoTower,
    rows: Batch,
    side: str = "users",
    batch_rows: int = 4096,
    progress: bool | None = False,
) -> np.ndarray:
    """(n, d) float32 embeddings of ``rows`` by the model's user or item tower (``side``), in eval
    mode and blocks of ``batch_rows``, so any number of rows fits in memory; ``progress`` as
    ``recsim_ft.progress.progress_bar`` takes it (default: none)."""
    check_choice("side", side, ("users", "items"))
    check_int("batch_rows", batch_rows, low=1)
    embed = model.embed_users if side == "users" else model.embed_items
    was_training = model.training
    model.eval()
    parts = []
    bar = progress_bar(progress, total=len(rows.ids), desc=f"embed {side}", unit=side[:-1])
    try:
        with torch.no_grad(), bar:
            for start in range(0, len(rows.ids), batch_rows):
                parts.append(embed(rows[start : start + batch_rows]).float().cpu().numpy())
                bar.update(len(parts[-1]))
    finally:
        model.train(was_training)
    width = model.config.d_out
    return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)


def _break_ties(block: Tensor, best: Tensor, index: Tensor, rows: Tensor) -> None:
    """Rows ``rows`` of a block whose k-th score is shared with an item ``topk`` left out (it may
    have left out the lower index): their top k again, in place, from every item scoring at least
    the k-th, by score, then index. Items of equal features have equal embeddings, so a trained
    model's catalogue ties often; sorting whole rows made such a search 25x slower."""
    k = best.shape[1]
    scores = block[rows]
    row, item = torch.nonzero(scores >= best[rows, k - 1 :], as_tuple=True)  # item ascending
    value = scores[row, item]
    order = torch.argsort(value, descending=True, stable=True)
    order = order[torch.argsort(row[order], stable=True)]
    row, item, value = row[order], item[order], value[order]
    place = torch.arange(len(row)) - torch.searchsorted(row, torch.arange(len(rows)))[row]
    keep = place < k  # every such row has more than k candidates
    best[rows[row[keep]], place[keep]] = value[keep]
    index[rows[row[keep]], place[keep]] = item[keep]


@dataclass(frozen=True)
class ItemEmbeddings:
    """Every item's embedding (row ``j`` = item ``j``, the env's action ``j``) and score prior.

    Examples:
        >>> items = ItemEmbeddings(np.eye(3, dtype=np.float32), np.array([0, 0, 5], np.float32))
        >>> ids, scores = items.top_k(np.array([[1.0, 0.0, 0.0]], np.float32), k=2)
        >>> ids.tolist(), scores.tolist()
        ([[2, 0]], [[5.0, 1.0]])
    """

    vectors: np.ndarray
    prior: np.ndarray

    def __post_init__(self) -> None:
        vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        prior = np.ascontiguousarray(self.prior, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0 or vectors.shape[1] == 0:
            raise ValueError(
                f"item vectors must be a non-empty (n_items, d) array, got shape {vectors.shape}"
            )
        if prior.shape != (len(vectors),):
            raise ValueError(
                f"the item prior must hold one value per item ({len(vectors):,}), got shape "
                f"{prior.shape}"
            )
        for name, array in (("item vectors", vectors), ("item prior", prior)):
            bad = np.flatnonzero(~np.isfinite(array).reshape(len(vectors), -1).all(axis=1))
            if len(bad):
                raise ValueError(f"the {name} are not finite at item {int(bad[0])}")
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "prior", prior)

    @classmethod
    def from_model(
        cls,
        model: TwoTower,
        item_table: Batch,
        batch_rows: int = 4096,
        progress: bool | None = False,
    ) -> ItemEmbeddings:
        """The embeddings of ``item_table`` (e.g. ``env.item_table()``) by ``model``'s item tower,
        with its item prior (zero when it has none; a model with a prior takes only the
        catalogue it was trained on, ``TwoTower.check_catalogue``)."""
        model.check_catalogue(item_table)  # its prior is for its own catalogue's rows
        vectors = embed_rows(model, item_table, "items", batch_rows, progress)
        prior = model.item_prior.detach().float().cpu().numpy()
        return cls(vectors, prior if len(prior) else np.zeros(len(vectors), np.float32))

    @property
    def n_items(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def check_queries(self, queries: np.ndarray) -> np.ndarray:
        """``queries`` as a C-contiguous float32 (n, dim) array, else a ValueError naming the
        problem (its shape, or the first row that is not finite)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(
                f"queries must be user embeddings of shape (n, {self.dim}), got shape "
                f"{queries.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(queries).all(axis=1))
        if len(bad):
            raise ValueError(f"query row {int(bad[0])} is not finite")
        return queries

    def top_k(
        self,
        queries: np.ndarray,
        k: int,
        block_scores: int = BLOCK_SCORES,
        progress: bool | None = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` items per query: (n, k) int64 item indices, best first, and their
        float32 scores ``q . e_j + prior_j``; equal scores in index order (the ranking of
        :func:`recsim_ft.metrics.top_k` on the full score matrix); a query whose scores are not
        finite (they overflow float32) is an error naming it. Memory:
        ``block_scores`` scores at a time (users per block = block_scores // n_items).
        ``progress`` as ``recsim_ft.progress.progress_bar`` takes it (default: none)."""
        queries = self.check_queries(queries)
        k = check_int("k", k, low=1, high=self.n_items)
        check_int("block_scores", block_scores, low=1)
        items, prior = torch.from_numpy(self.vectors).T, torch.from_numpy(self.prior)
        ids = np.empty((len(queries), k), np.int64)
        scores = np.empty((len(queries), k), np.float32)
        rows = max(1, min(len(queries), block_scores // self.n_items))
        # one buffer for every block: a fresh one each block would be fresh pages, whose faults
        # cost more than the product
        buffer = torch.empty(rows, self.n_items)
        # one score past the k-th tells whether the k-th is tied with an item left out
        extra = int(k < self.n_items)
        bar = progress_bar(progress, total=len(queries), desc=f"top {k}", unit="query")
        with torch.no_grad(), bar:
            for start in range(0, len(queries), rows):
                users = torch.from_numpy(queries[start : start + rows])
                block = torch.addmm(prior, users, items, out=buffer[: len(users)])
                best, index = torch.topk(block, k + extra, dim=1)
                # NaN and +inf rank first: a row with one has it among its best
                overflow = ~torch.isfinite(best).all(dim=1)
                if overflow.any():
                    row = start + int(torch.nonzero(overflow)[0])
                    raise ValueError(
                        f"query row {row}: its scores are not finite (the product of its "
                        "embedding and an item's overflows float32); no ranking of them holds"
                    )
                tied = (best[:, k - 1] == best[:, -1]) & bool(extra)
                best, index = best[:, :k], index[:, :k]
                # equal scores in index order: sort by index, then stably by score
                index, by_index = index.sort(dim=1)
                best, by_score = best.gather(1, by_index).sort(dim=1, descending=True, stable=True)
                index = index.gather(1, by_score)
                if tied.any():
                    _break_ties(block, best, index, torch.nonzero(tied).squeeze(1))
                ids[start : start + len(block)] = index.numpy()
                scores[start : start + len(block)] = best.numpy()
                bar.update(len(block))
        return ids, scores

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``items.npy`` (n_items, dim), ``item_prior.npy`` and ``items.json`` (what they
        are, for a service that reads them without recsim-ft) into ``directory``; refuse to
        replace existing files unless ``overwrite``."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"{directory} is a file; item embeddings are saved to a folder")
        files = [directory / name for name in (VECTORS_FILE, PRIOR_FILE, MANIFEST_FILE)]
        others = [EXPORT_MANIFEST, USER_TOWER]
        if any((directory / name).exists() for name in others):
            # replacing the items alone would pair them with another model's user tower
            raise FileExistsError(
                f"{directory} holds a model's export ({', '.join(others)}); replace it whole "
                "with recsim_ft.retrieval.export_model, or save the items to another folder"
            )
        existing = [str(p) for p in files if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{', '.join(existing)} exist(s); pass overwrite=True to replace")
        manifest = {
            "n_items": self.n_items,
            "dim": self.dim,
            "score": f"user_embedding . {VECTORS_FILE}[j] + {PRIOR_FILE}[j]",
            "rows": "row j is item j, the env's action j",
        }
        for path, array in zip(files[:2], (self.vectors, self.prior), strict=True):
            save_array(path, array)
        with atomic_path(files[2]) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ItemEmbeddings:
        """What :meth:`save` wrote into ``directory``."""
        directory = Path(directory)
        path = directory / VECTORS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no {VECTORS_FILE} in {directory}: not a folder of saved item embeddings"
            )
        try:
            return cls(np.load(path), np.load(directory / PRIOR_FILE))
        except (OSError, ValueError) as err:
            raise ValueError(f"{directory}: damaged item embeddings ({err})") from err
