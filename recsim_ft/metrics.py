"""Top-k ranking metrics from a score matrix and a relevance matrix, vectorised over users.

Every user ranks all items by score; the metrics compare the top ``k`` of that ranking with the
user's relevant items. For user ``u`` with relevant set ``Rel`` (``n_rel = |Rel|``) and hits
``h_j = [j-th ranked item in Rel]``, ``j = 1..k``:

======  =====================================================================================
P@k     ``sum(h) / k``
R@k     ``sum(h) / n_rel``
HR@k    ``1`` if any ``h_j``, else ``0``
MRR@k   ``1 / j`` of the first hit within the top ``k``, else ``0``
NDCG@k  ``sum(h_j / log2(j + 1))`` over its best value ``sum_{j <= min(k, n_rel)} 1 / log2(j + 1)``
MAP@k   ``sum(P@j * h_j) / min(k, n_rel)`` (the Kaggle H&M MAP@12 definition)
======  =====================================================================================

each averaged over users. Users without any relevant item have no defined recall or NDCG, so they
are left out of every average and counted in ``n_excluded``.

Ties in scores are broken by the lower item index, so that the same scores always give the same
ranking (a constant scorer recommends items ``0, 1, 2, ...``) whatever sorting algorithm numpy
picks. ``k`` larger than the number of items is an error rather than a silent clipping, because a
clipped P@k is not comparable with the same metric on a larger catalogue.

>>> scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.2, 0.7], [0.3, 0.2, 0.1]])
>>> relevant = np.array([[False, False, True], [True, False, False], [False, False, False]])
>>> m = ranking_metrics(scores, relevant, ks=(1, 2), metrics=("HR", "MRR", "MAP@3"))
>>> {key: round(value, 3) for key, value in m.items()}
{'HR@1': 0.0, 'HR@2': 1.0, 'MRR@1': 0.0, 'MRR@2': 0.5, 'MAP@3': 0.5, 'n_users': 2, 'n_excluded': 1}
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from recsim_ft.checks import check_int

METRICS = ("P", "R", "MRR", "HR", "NDCG", "MAP")
_METRIC_AT_K = re.compile(r"^([A-Z]+)@(\d+)$")


def metric_names(metrics: Sequence[str], ks: Sequence[int]) -> list[str]:
    """The names ``ranking_metrics`` reports for ``metrics`` at ``ks``.

    >>> metric_names(("HR", "MAP@12"), ks=(1, 10))
    ['HR@1', 'HR@10', 'MAP@12']
    """
    return [f"{name}@{k}" for name, k in parse_metrics(metrics, ks)]


def parse_metrics(metrics: Sequence[str], ks: Sequence[int]) -> list[tuple[str, int]]:
    """``(name, k)`` pairs of ``metrics``: a bare name (``"P"``) expands to every k in ``ks``, a
    name with its own k (``"MAP@12"``) stands for that one k only.

    >>> parse_metrics(("P", "MAP@12"), ks=(1, 5))
    [('P', 1), ('P', 5), ('MAP', 12)]
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    ks = tuple(ks)
    for k in ks:
        check_int(f"every k of ks={ks!r}", k, low=1)
    pairs: list[tuple[str, int]] = []
    for metric in metrics:
        match = _METRIC_AT_K.match(metric)
        name, own_k = (match.group(1), int(match.group(2))) if match else (metric, None)
        if name not in METRICS:
            raise ValueError(
                f"unknown metric {metric!r}; choose from {METRICS} (optionally with '@k')"
            )
        if own_k == 0:
            raise ValueError(f"metric {metric!r}: k must be a positive integer")
        for k in ks if own_k is None else (own_k,):
            if (name, int(k)) not in pairs:
                pairs.append((name, int(k)))
    if not pairs:
        raise ValueError(f"no metric to compute: metrics={tuple(metrics)!r}, ks={ks!r}")
    return pairs


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(n_users, k) int64 indices of the ``k`` best-scored items per row, ties to the lower index.

    >>> top_k(np.array([[0.0, 1.0, 1.0, 0.5]]), 3)
    array([[1, 2, 3]])
    """
    scores = check_scores(scores)
    n_items = scores.shape[1]
    check_int("k", k, low=1, high=n_items)
    # A stable sort of the negated scores keeps equal scores in index order.
    negated = -scores
    if k == n_items:
        return np.argsort(negated, axis=1, kind="stable").astype(np.int64)
    # Partition first (linear per user), then sort only the k chosen items. When a row's k-th best
    # score is shared with an item the partition left out, it may have left out the lower index:
    # those rows get the full stable sort.
    chosen = np.sort(np.argpartition(negated, k - 1, axis=1)[:, :k], axis=1)
    chosen_scores = np.take_along_axis(negated, chosen, axis=1)
    best_first = np.take_along_axis(
        chosen, np.argsort(chosen_scores, axis=1, kind="stable"), axis=1
    )
    kth = chosen_scores.max(axis=1, keepdims=True)
    ambiguous = (negated == kth).sum(axis=1) > (chosen_scores == kth).sum(axis=1)
    if ambiguous.any():
        best_first[ambiguous] = np.argsort(negated[ambiguous], axis=1, kind="stable")[:, :k]
    return best_first.astype(np.int64)


def check_scores(
    scores: np.ndarray, shape: tuple[int, int] | None = None, what: str = "scores"
) -> np.ndarray:
    """``scores`` as a 2-D real array (of ``shape`` when given); a ValueError names ``what`` and,
    for NaN scores, the first user that has one."""
    scores = np.asarray(scores)
    if (
        scores.ndim != 2
        or scores.shape[1] == 0
        or (shape is not None and scores.shape != tuple(shape))
    ):
        expected = (
            "a 2-D (n_users, n_items) array"
            if shape is None
            else f"shape (n_users, n_items) = {tuple(shape)}"
        )
        raise ValueError(f"{what}: expected {expected}, got shape {scores.shape}")
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be real numbers, got dtype {scores.dtype}")
    if scores.dtype.kind != "f":  # negating unsigned or bool scores would not reverse their order
        scores = scores.astype(np.float64)
    nan_rows = np.isnan(scores).any(axis=1)
    if nan_rows.any():
        raise ValueError(
            f"{what} contain NaN for {int(nan_rows.sum())} user(s), first at row "
            f"{int(np.argmax(nan_rows))}"
        )
    return scores


def ranking_metrics(
    scores: np.ndarray,
    relevant: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    metrics: Sequence[str] = METRICS,
) -> dict[str, float | int]:
    """Mean top-k ranking metrics over the users that have at least one relevant item.

    Args:
        scores: (n_users, n_items) real scores, higher is better; NaN is an error.
        relevant: (n_users, n_items) bool (or 0/1) relevance of each item to each user.
        ks: cut-offs for the bare metric names in ``metrics``.
        metrics: names from ``METRICS``, each computed at every k in ``ks``, or ``"NAME@k"`` for
            one extra cut-off (e.g. ``"MAP@12"``).

    Returns:
        ``{"P@1": ..., ..., "n_users": evaluated users, "n_excluded": users with no relevant
        item}``, metric keys in the order of ``metrics`` then ``ks``.
    """
    scores = check_scores(scores)
    relevant = np.asarray(relevant)
    if relevant.shape != scores.shape:
        raise ValueError(f"relevant has shape {relevant.shape}, scores have shape {scores.shape}")
    if relevant.dtype != bool:
        bad = ~np.isin(relevant, (0, 1))
        if bad.any():
            raise ValueError(
                f"relevant must be boolean or 0/1, got {relevant[bad][0]!r} at "
                f"(user, item) {tuple(int(i) for i in np.argwhere(bad)[0])}"
            )
        relevant = relevant.astype(bool)
    pairs = parse_metrics(metrics, ks)
    n_items = scores.shape[1]
    k_max = max(k for _, k in pairs)
    if k_max > n_items:
        raise ValueError(
            f"k={k_max} is larger than the number of items ({n_items}); evaluate with cut-offs "
            f"of at most {n_items} (ks=..., recsim-ft train --ks)"
        )

    n_relevant = relevant.sum(axis=1)
    keep = n_relevant > 0
    if not keep.any():
        raise ValueError(
            f"none of the {len(scores)} users has a relevant item; the metrics are undefined"
        )
    scores, relevant, n_relevant = scores[keep], relevant[keep], n_relevant[keep]

    hits = np.take_along_axis(relevant, top_k(scores, k_max), axis=1)  # (n, k_max) bool
    n_hits = np.cumsum(hits, axis=1)  # hits within top j
    position = np.arange(1, k_max + 1)
    first_hit = np.where(hits.any(axis=1), np.argmax(hits, axis=1) + 1, k_max + 1)
    discount = 1.0 / np.log2(position + 1)
    dcg = np.cumsum(hits * discount, axis=1)
    ideal_dcg = np.cumsum(discount)
    precision_sum = np.cumsum(hits * n_hits / position, axis=1)

    def at(name: str, k: int) -> np.ndarray:
        found = n_hits[:, k - 1]
        n_best = np.minimum(n_relevant, k)
        if name == "P":
            return found / k
        if name == "R":
            return found / n_relevant
        if name == "HR":
            return found > 0
        if name == "MRR":
            return np.where(first_hit <= k, 1.0 / first_hit, 0.0)
        if name == "NDCG":
            return dcg[:, k - 1] / ideal_dcg[n_best - 1]
        return precision_sum[:, k - 1] / n_best  # MAP

    out: dict[str, float | int] = {f"{name}@{k}": float(np.mean(at(name, k))) for name, k in pairs}
    out["n_users"] = int(keep.sum())
    out["n_excluded"] = int((~keep).sum())
    return out
