"""The H&M Personalized Fashion Recommendations competition's own protocol, on the Kaggle files
or the synthetic stand-in: for every customer, 12 articles they will buy in the week after the
data used, out of the whole catalogue, scored by MAP@12 over the customers who bought that week.

The paper's H&M figure is MAP@12 over 100 articles for 100 users, which says nothing about the
leaderboard (random ranking of 100 articles already scores about 0.03). Here the protocol is
the competition's, with the local validation its top teams used: the target is a week of the
data (by default the last), the strategies see only the transactions before it, and
:func:`map_at_k` scores as Kaggle does (the normaliser is min(m, 12), m the customer's distinct
articles that week; repeats of an article in a prediction count once). Several target weeks
(``weeks``) give a spread. The strategies are the public notebooks' baselines:

- ``best_sellers``: last week's best sellers, the same 12 for everyone (the "trending products
  weekly" notebooks, about 0.0225 public on the real data);
- ``decayed_popularity``: every purchase weighted by ``0.5 ** (age in days / half_life)``;
- ``buy_again``: the customer's own articles of the last ``days`` days, most recent first,
  filled with last week's best sellers.

A learned model enters the table through :func:`scorer_strategy` (any scorer of customers x
articles) or :func:`agent_strategy` (any fitted agent of ``recsim_ft.agents``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsim_ft.agents.base import Agent
from recsim_ft.checks import check_int
from recsim_ft.envs.hm_data import Transactions
from recsim_ft.metrics import top_k
from recsim_ft.schema import Batch

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


def split_week(transactions: Transactions, weeks_before_end: int = 0) -> WeekSplit:
    """The week that ends ``weeks_before_end`` weeks before the last day of the data (0: the
    last 7 days) as the target, and every transaction before it as what a strategy sees."""
    check_int("weeks_before_end", weeks_before_end, low=0)
    if len(transactions.days) == 0:
        raise ValueError("there are no transactions to split")
    last = int(transactions.days.max()) - WEEK * weeks_before_end
    first = last - WEEK + 1
    before = transactions.days < first
    if not before.any():
        raise ValueError(
            f"no transaction before the target week starting {np.datetime64(first, 'D')}: the "
            f"data spans {int(transactions.days.max()) - int(transactions.days.min()) + 1} days"
        )
    target = (transactions.days >= first) & (transactions.days <= last)
    pairs = np.unique(
        transactions.customers[target].astype(np.int64) * transactions.n_articles
        + transactions.articles[target]
    )
    if len(pairs) == 0:
        raise ValueError(f"nobody bought in the target week starting {np.datetime64(first, 'D')}")
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

    >>> from recsim_ft.envs.hm_data import Transactions
    >>> t = Transactions(np.array([0, 0, 1]), np.array([3, 4, 3]), np.array([0, 9, 9]),
    ...                  pd.Index(["a", "b"]), np.arange(5))
    >>> split = split_week(t)  # customer 0 bought article 4, customer 1 article 3
    >>> map_at_k(np.array([[4, 3], [0, 3]]), split, k=2)  # (1 + 1/2) / 2
    0.75
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape != (len(split.customers), predictions.shape[1]):
        raise ValueError(
            f"predictions must be (n_customers, k) = ({len(split.customers)}, k), got shape "
            f"{predictions.shape}"
        )
    predictions = predictions[:, :k]
    n_articles = split.train.n_articles
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


def _ranked(weights: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` articles of largest weight, largest first (ties: lower row first)."""
    top = np.lexsort((np.arange(len(weights)), -weights))[:k]
    return top[weights[top] > 0]


def _best_sellers(train: Transactions, k: int, days: int = WEEK) -> np.ndarray:
    """The (up to) ``k`` articles bought most in the last ``days`` days of ``train``."""
    recent = train.days > int(train.days.max()) - check_int("days", days, low=1)
    counts = np.bincount(train.articles[recent], minlength=train.n_articles)
    return _ranked(counts.astype(float), k)


def best_sellers(train: Transactions, customers: np.ndarray, k: int = K, days: int = WEEK):
    """The ``k`` articles bought most in the last ``days`` days of ``train``, for everyone."""
    return _broadcast(_best_sellers(train, k, days), len(customers), k)


def decayed_popularity(
    train: Transactions, customers: np.ndarray, k: int = K, half_life: float = 7.0
) -> np.ndarray:
    """The ``k`` articles of most purchases, each weighted ``0.5 ** (age / half_life)`` (age in
    days before the last day of ``train``), for everyone."""
    if not half_life > 0:
        raise ValueError(f"half_life must be positive, got {half_life!r}")
    age = int(train.days.max()) - train.days
    weights = np.bincount(train.articles, 0.5 ** (age / half_life), minlength=train.n_articles)
    return _broadcast(_ranked(weights, k), len(customers), k)


def buy_again(train: Transactions, customers: np.ndarray, k: int = K, days: int = 28) -> np.ndarray:
    """Each customer's own articles of the last ``days`` days of ``train``, most recently bought
    first (then most bought, then lower row), filled with :func:`best_sellers`."""
    recent = train.days > int(train.days.max()) - check_int("days", days, low=1)
    wanted = np.isin(train.customers, customers) & recent
    own = pd.DataFrame(
        {
            "customer": train.customers[wanted],
            "article": train.articles[wanted],
            "day": train.days[wanted],
        }
    )
    own = own.groupby(["customer", "article"], sort=False).agg(
        day=("day", "max"), n=("day", "size")
    )
    own = own.reset_index().sort_values(
        ["customer", "day", "n", "article"], ascending=[True, False, False, True]
    )
    fill = _best_sellers(train, k)
    filled = pd.DataFrame(
        {
            "customer": np.repeat(customers, len(fill)),
            "article": np.tile(fill, len(customers)),
        }
    )
    ranked = pd.concat([own[["customer", "article"]], filled], ignore_index=True)
    ranked = ranked.sort_values("customer", kind="stable")
    ranked = ranked[~ranked.duplicated(["customer", "article"])]
    ranked["place"] = ranked.groupby("customer").cumcount()
    ranked = ranked[ranked["place"] < k]
    out = np.full((len(customers), k), -1, np.int64)
    row = np.searchsorted(customers, ranked["customer"].to_numpy())
    out[row, ranked["place"].to_numpy()] = ranked["article"].to_numpy()
    return out


def _broadcast(articles: np.ndarray, n: int, k: int) -> np.ndarray:
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


def evaluate_weeks(
    transactions: Transactions,
    strategies: dict[str, Strategy] | None = None,
    weeks: int = 1,
    k: int = K,
) -> pd.DataFrame:
    """MAP@k of every strategy on each of the last ``weeks`` weeks of the data as the target
    (trained on everything before it): one row per (week, strategy) with the customers scored
    and the strategy's seconds."""
    strategies = STRATEGIES if strategies is None else strategies
    rows = []
    for back in range(check_int("weeks", weeks, low=1)):
        split = split_week(transactions, back)
        for name, strategy in strategies.items():
            start = time.perf_counter()
            predictions = strategy(split.train, split.customers, k)
            rows.append(
                {
                    "week": split.week,
                    "strategy": name,
                    f"MAP@{k}": map_at_k(predictions, split, k),
                    "customers": len(split.customers),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
    return pd.DataFrame(rows)


def markdown(results: pd.DataFrame, source: str, k: int = K) -> str:
    """:func:`evaluate_weeks`'s results as Markdown: each strategy's MAP@k per target week and
    their mean, ``source`` saying which data."""
    metric = f"MAP@{k}"
    table = results.pivot(index="strategy", columns="week", values=metric)
    table = table.loc[list(dict.fromkeys(results["strategy"]))]  # the strategies' order
    weeks = list(table.columns)[::-1]  # latest first
    customers = results.groupby("week")["customers"].first()
    lines = [
        f"# H&M competition protocol: {metric} ({source})",
        "",
        f"Target: one week of purchases, the strategies seeing every transaction before it; "
        f"{metric} as Kaggle scores it, over the customers who bought that week.",
        "",
        "| strategy | mean | " + " | ".join(weeks) + " |",
        "| --- | --- | " + " | ".join("---" for _ in weeks) + " |",
        "| customers scored | | " + " | ".join(f"{customers[w]:,}" for w in weeks) + " |",
    ]
    for name, row in table.iterrows():
        values = " | ".join(f"{row[w]:.4f}" for w in weeks)
        lines.append(f"| {name} | {row[weeks].mean():.4f} | {values} |")
    return "\n".join(lines) + "\n"
