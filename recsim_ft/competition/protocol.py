"""The competition's protocol: a target week of the transactions, everything before it seen,
and Kaggle's MAP@12 over the customers who bought that week."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsim_ft.checks import check_int
from recsim_ft.envs.hm.data import Transactions

#: articles predicted per customer, and the metric's cut-off
K = 12


#: the target's length in days
WEEK = 7


@dataclass(frozen=True)
class WeekSplit:
    """The transactions before a target week, and what each customer bought in it."""

    train: Transactions
    #: first day of the target week (days since 1970-01-01)
    first_day: int
    #: the customers who bought in the target week (rows of customers.csv), sorted
    customers: np.ndarray
    #: CSR of their distinct articles that week: articles[indptr[i]:indptr[i + 1]]
    indptr: np.ndarray
    articles: np.ndarray

    @property
    def week(self) -> str:
        """The target week as ``YYYY-MM-DD..YYYY-MM-DD``."""
        first = np.datetime64(self.first_day, "D")
        return f"{first}..{first + WEEK - 1}"


def check_rows(name: str, rows: np.ndarray, n: int, what: str, low: int = 0) -> np.ndarray:
    """``rows`` checked as integer rows of ``n`` ``what`` (``low=-1``: -1 for none too); the
    error names the first bad one and where it is."""
    rows = np.asarray(rows)
    if rows.dtype == bool or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"{name} must be integer rows of the {what}, got dtype {rows.dtype}")
    bad = (rows < low) | (rows >= n)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        place = where[0] if len(where) == 1 else list(where)
        none = " (or -1 for none)" if low == -1 else ""
        raise ValueError(f"{name}[{place}] = {rows[where]} is not a row of the {n:,} {what}{none}")
    return rows


def check_transactions(transactions: Transactions) -> Transactions:
    """``transactions``, checked: arrays of one length, every row a customer and an article of
    the files (a row beyond them would credit one customer's purchase to another)."""
    t = transactions
    if not len(t.customers) == len(t.articles) == len(t.days):
        raise ValueError(
            f"transactions have {len(t.customers)} customers, {len(t.articles)} articles and "
            f"{len(t.days)} days: one of each per transaction"
        )
    check_rows("transactions.customers", t.customers, t.n_customers, "customers")
    check_rows("transactions.articles", t.articles, t.n_articles, "articles")
    days = np.asarray(t.days)
    if days.dtype == bool or not np.issubdtype(days.dtype, np.integer):
        raise ValueError(
            f"transactions.days must be integer days since 1970-01-01, got dtype {days.dtype}"
        )
    return t


def check_customers(customers: np.ndarray, n_customers: int) -> np.ndarray:
    """The customers a strategy predicts for: distinct customer rows in increasing order, as
    :class:`WeekSplit` gives them."""
    customers = check_rows("customers", customers, n_customers, "customers")
    if customers.ndim != 1 or (np.diff(customers) <= 0).any():
        raise ValueError(
            "customers must be distinct customer rows in increasing order (as "
            "WeekSplit.customers), one prediction row each"
        )
    return customers


def split_week(transactions: Transactions, weeks_before_end: int = 0) -> WeekSplit:
    """The week that ends ``weeks_before_end`` weeks before the last day of the data (0: the
    last 7 days) as the target, and every transaction before it as what a strategy sees."""
    check_int("weeks_before_end", weeks_before_end, low=0)
    check_transactions(transactions)
    if len(transactions.days) == 0:
        raise ValueError("there are no transactions to split")
    last = int(transactions.days.max()) - WEEK * weeks_before_end
    first = last - WEEK + 1
    before = transactions.days < first
    if not before.any():
        span = int(transactions.days.max()) - int(transactions.days.min()) + 1
        most = (
            f"weeks_before_end at most {(span - 8) // 7}"
            if span >= 8
            else "more than a week of data is needed"
        )
        raise ValueError(
            f"weeks_before_end={weeks_before_end}: no transaction before the target week "
            f"starting {np.datetime64(first, 'D')}: the data spans {span} days ({most})"
        )
    target = (transactions.days >= first) & (transactions.days <= last)
    pairs = np.unique(
        transactions.customers[target].astype(np.int64) * transactions.n_articles
        + transactions.articles[target]
    )
    if len(pairs) == 0:
        raise ValueError(
            f"weeks_before_end={weeks_before_end}: nobody bought in the target week starting "
            f"{np.datetime64(first, 'D')}"
        )
    customers, starts = np.unique(pairs // transactions.n_articles, return_index=True)
    return WeekSplit(
        transactions.where(before),
        first,
        customers,
        np.append(starts, len(pairs)),
        pairs % transactions.n_articles,
    )


def map_at_k(predictions: np.ndarray, split: WeekSplit, k: int = K) -> float:
    """Kaggle's MAP@k of ``predictions`` ((n, >= k) article rows, one row per customer of
    ``split.customers``, -1 for none), over those customers.

    >>> import pandas as pd
    >>> t = Transactions(np.array([0, 0, 1]), np.array([3, 4, 3]), np.array([0, 9, 9]),
    ...                  pd.Index(["a", "b"]), np.arange(5))
    >>> split = split_week(t)  # customer 0 bought article 4, customer 1 article 3
    >>> map_at_k(np.array([[4, 3], [0, 3]]), split, k=2)  # (1 + 1/2) / 2
    0.75
    """
    k = check_int("k", k, low=1)
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape != (len(split.customers), predictions.shape[1]):
        raise ValueError(
            f"predictions must be (n_customers, k) = ({len(split.customers)}, k), got shape "
            f"{predictions.shape}"
        )
    n_articles = split.train.n_articles
    predictions = check_rows("predictions", predictions[:, :k], n_articles, "articles", low=-1)
    rows = np.repeat(np.arange(len(split.customers)), np.diff(split.indptr))
    truth = rows * n_articles + split.articles  # sorted: rows ascending, articles within
    keys = np.arange(len(predictions))[:, None] * n_articles + predictions
    found = np.searchsorted(truth, keys).clip(max=len(truth) - 1)
    hit = (truth[found] == keys) & (predictions >= 0)
    # an article predicted twice counts once, at its first place
    earlier = np.tril(np.ones((predictions.shape[1],) * 2, bool), -1)  # [j, i]: i before j
    hit &= ~((predictions[:, :, None] == predictions[:, None, :]) & earlier).any(axis=2)
    precision = np.cumsum(hit, axis=1) / np.arange(1, predictions.shape[1] + 1)
    bought = np.minimum(np.diff(split.indptr), k)
    return float(((precision * hit).sum(axis=1) / bought).mean())
