"""What predicts the target week: the public notebooks' rules, and the adapters that make any
learned scorer or fitted agent a strategy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from recsim_ft.agents.base import Agent
from recsim_ft.checks import check_int
from recsim_ft.competition.protocol import WEEK, K, check_customers
from recsim_ft.envs.hm.data import Transactions
from recsim_ft.metrics import top_k
from recsim_ft.schema import Batch


def _ranked(weights: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` articles of largest weight, largest first (ties: lower row first)."""
    top = np.lexsort((np.arange(len(weights)), -weights))[:k]
    return top[weights[top] > 0]


def top_sellers(train: Transactions, k: int, days: int = WEEK) -> np.ndarray:
    """The (up to) ``k`` articles bought most in the last ``days`` days of ``train``."""
    recent = train.days > int(train.days.max()) - check_int("days", days, low=1)
    counts = np.bincount(train.articles[recent], minlength=train.n_articles)
    return _ranked(counts.astype(float), k)


def best_sellers(train: Transactions, customers: np.ndarray, k: int = K, days: int = WEEK):
    """The ``k`` articles bought most in the last ``days`` days of ``train``, for everyone."""
    customers, k = check_customers(customers, train.n_customers), check_int("k", k, low=1)
    return broadcast(top_sellers(train, k, days), len(customers), k)


def decayed_popularity(
    train: Transactions, customers: np.ndarray, k: int = K, half_life: float = 7.0
) -> np.ndarray:
    """The ``k`` articles of most purchases, each weighted ``0.5 ** (age / half_life)`` (age in
    days before the last day of ``train``), for everyone."""
    if not half_life > 0:
        raise ValueError(f"half_life must be positive, got {half_life!r}")
    customers, k = check_customers(customers, train.n_customers), check_int("k", k, low=1)
    age = int(train.days.max()) - train.days
    weights = np.bincount(train.articles, 0.5 ** (age / half_life), minlength=train.n_articles)
    return broadcast(_ranked(weights, k), len(customers), k)


def recent_purchases(train: Transactions, customers: np.ndarray, days: int) -> pd.DataFrame:
    """The distinct (customer, article) pairs of ``customers`` in the last ``days`` days of
    ``train``, with the last day and the count of each: most recent first per customer, then
    most bought, then lower row."""
    recent = train.days > int(train.days.max()) - check_int("days", days, low=1)
    wanted = np.zeros(train.n_customers, bool)
    wanted[customers] = True
    rows = recent & wanted[train.customers]
    own = pd.DataFrame(
        {
            "customer": train.customers[rows],
            "article": train.articles[rows],
            "day": train.days[rows],
        }
    )
    own = own.groupby(["customer", "article"], sort=False).agg(
        day=("day", "max"), n=("day", "size")
    )
    return own.reset_index().sort_values(
        ["customer", "day", "n", "article"], ascending=[True, False, False, True]
    )


def buy_again(train: Transactions, customers: np.ndarray, k: int = K, days: int = 28) -> np.ndarray:
    """Each customer's own articles of the last ``days`` days of ``train``, most recently bought
    first (then most bought, then lower row), filled with :func:`best_sellers`."""
    customers, k = check_customers(customers, train.n_customers), check_int("k", k, low=1)
    own = recent_purchases(train, customers, days)
    return then_best_sellers(own, train, customers, k)


def then_best_sellers(
    ranked: pd.DataFrame, train: Transactions, customers: np.ndarray, k: int
) -> np.ndarray:
    """:func:`ranked_rows` of ``ranked``'s (customer, article) rows, each customer's filled up
    to ``k`` with last week's best sellers they do not have yet."""
    fill = top_sellers(train, k)
    filled = pd.DataFrame(
        {"customer": np.repeat(customers, len(fill)), "article": np.tile(fill, len(customers))}
    )
    return ranked_rows(pd.concat([ranked[["customer", "article"]], filled]), customers, k)


def ranked_rows(ranked: pd.DataFrame, customers: np.ndarray, k: int) -> np.ndarray:
    """(len(customers), k) article rows from ``ranked``'s (customer, article) rows, each
    customer's in the frame's order, an article's repeats after its first dropped; -1 where a
    customer has fewer than ``k`` (``customers`` sorted, holding every customer of the frame)."""
    ranked = ranked[~ranked.duplicated(["customer", "article"])]
    place = ranked.groupby("customer", sort=False).cumcount().to_numpy()
    kept = place < k
    out = np.full((len(customers), k), -1, np.int64)
    row = np.searchsorted(customers, ranked["customer"].to_numpy()[kept])
    out[row, place[kept]] = ranked["article"].to_numpy()[kept]
    return out


def broadcast(articles: np.ndarray, n: int, k: int) -> np.ndarray:
    row = np.full(k, -1, np.int64)
    row[: len(articles)] = articles
    return np.tile(row, (n, 1))


#: A strategy: (transactions seen, customers sorted, k) -> (n, k) article rows, -1 for none
Strategy = Callable[[Transactions, np.ndarray, int], np.ndarray]


#: A learned model's side of a strategy: customer rows (n,) -> (n, articles) scores, higher
#: first; ``scorer_strategy`` ranks them.
Scorer = Callable[[np.ndarray], np.ndarray]


def scorer_strategy(fit: Callable[[Transactions], Scorer], block: int = 1024) -> Strategy:
    """Any learned scorer of customers x articles as a strategy: ``fit(train)`` learns from
    the transactions the strategy sees (never the target week) and returns a :data:`Scorer`;
    each customer gets the ``k`` articles of highest score, equal scores in article order (the
    ranking of ``recsim_ft.metrics.top_k``), ``block`` customers at a time so that memory holds
    ``block`` rows of scores, not one per customer.

    >>> t = Transactions(np.array([0, 1, 1]), np.array([2, 0, 2]), np.array([0, 0, 9]),
    ...                  pd.Index(["a", "b"]), np.arange(3))
    >>> def fit(train):  # everyone: the articles bought most
    ...     counts = np.bincount(train.articles, minlength=train.n_articles)
    ...     return lambda customers: np.tile(counts, (len(customers), 1))
    >>> scorer_strategy(fit)(t, np.array([0, 1]), 2)
    array([[2, 0],
           [2, 0]])
    """
    check_int("block", block, low=1)

    def strategy(train: Transactions, customers: np.ndarray, k: int) -> np.ndarray:
        customers = check_customers(customers, train.n_customers)
        score = fit(train)
        k_ranked = min(check_int("k", k, low=1), train.n_articles)
        out = np.full((len(customers), k), -1, np.int64)
        for start in range(0, len(customers), block):
            rows = customers[start : start + block]
            scores = np.asarray(score(rows))
            if scores.shape != (len(rows), train.n_articles):
                raise ValueError(
                    f"the scorer gave scores of shape {scores.shape} for {len(rows)} customers; "
                    f"expected ({len(rows)}, {train.n_articles}), one per article"
                )
            out[start : start + len(rows), :k_ranked] = top_k(scores, k_ranked)
        return out

    return strategy


def agent_strategy(
    fit: Callable[[Transactions], Agent],
    users: Callable[[np.ndarray], Batch],
    block: int = 1024,
) -> Strategy:
    """A fitted agent as a strategy: ``fit(train)`` returns an agent whose items are the
    articles (in the files' order), ``users(customers)`` the user rows it scores for those
    customers (e.g. ``HMFashion-v0``'s ``customers()`` rows); see :func:`scorer_strategy`."""

    def fit_scorer(train: Transactions) -> Scorer:
        agent = fit(train)
        return lambda customers: agent.checked_scores(users(customers))

    return scorer_strategy(fit_scorer, block)


STRATEGIES: dict[str, Strategy] = {
    "best_sellers": best_sellers,
    "decayed_popularity": decayed_popularity,
    "buy_again": buy_again,
}
