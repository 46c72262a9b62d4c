"""A Kaggle submission from any strategy: the week after the data as the target, every
transaction seen, 12 articles for every customer of customers.csv, in the competition's format
(``customer_id,prediction``, the prediction 12 space-separated ten-digit article ids)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_ft.checks import check_int
from recsim_ft.competition.protocol import K, check_rows, check_transactions
from recsim_ft.competition.strategies import Strategy
from recsim_ft.envs.hm.data import Transactions
from recsim_ft.fileio import atomic_path

#: the digits of an article id in the competition's files and submissions
ARTICLE_ID_DIGITS = 10


def submission_frame(strategy: Strategy, transactions: Transactions, k: int = K) -> pd.DataFrame:
    """``strategy``'s ``k`` articles for every customer of the files, trained on every
    transaction: one row per customer of customers.csv, in its order; a strategy's -1 (no
    article) is left out of the prediction."""
    check_transactions(transactions)
    k = check_int("k", k, low=1)
    customers = np.arange(transactions.n_customers)
    predictions = np.asarray(strategy(transactions, customers, k))
    if predictions.shape != (len(customers), k):
        raise ValueError(
            f"the strategy gave predictions of shape {predictions.shape} for "
            f"{len(customers):,} customers; expected ({len(customers):,}, {k})"
        )
    predictions = check_rows("predictions", predictions, transactions.n_articles, "articles", -1)
    ids = np.char.zfill(transactions.article_ids.astype(str), ARTICLE_ID_DIGITS)
    text = np.where(predictions >= 0, ids[np.maximum(predictions, 0)], "")
    joined = pd.DataFrame(text).agg(" ".join, axis=1).str.split().str.join(" ")
    return pd.DataFrame(
        {"customer_id": np.asarray(transactions.customer_ids), "prediction": joined.to_numpy()}
    )


def write_submission(
    strategy: Strategy,
    transactions: Transactions,
    path: str | os.PathLike,
    k: int = K,
    overwrite: bool = False,
) -> Path:
    """:func:`submission_frame` written to ``path`` as CSV (``.gz``: compressed), never
    replacing an existing file unless ``overwrite``, and never half written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    save_submission(submission_frame(strategy, transactions, k), path)
    return path


def save_submission(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a submission frame atomically (``.gz``: compressed)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, compression="gzip" if path.name.endswith(".gz") else None)
