"""Candidate articles per customer, the first stage of the winners' two-stage recipe: each
source proposes up to ``n`` articles per customer, best first, and its recall says what share of
the target week's purchases it covers (a ranker can only find what some source proposed).

Sources (each ``(train, customers, n) -> (len(customers), n)`` article rows, -1 for none):

- ``recent``: the customer's own articles of the last ``days`` days, most recent first;
- ``same_product``: the other articles (colours, sizes) of the product codes the customer
  bought in the last ``days`` days, the product's most recent purchase first, then the
  article's sales in the last week;
- ``bought_together``: articles bought on the same day by the same customer as one of the
  customer's recent articles (trips of the last ``days`` days of everyone), by how often;
- ``best_sellers``: last week's best sellers, the same for everyone;
- ``two_tower``: a two-tower model's exact top ``n`` (``recsim_ft.competition.two_tower``).

A customer with no purchase in the window gets only the customer-independent sources
(best sellers, and the two-tower model, which reads the customer's features only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from recsim_ft.checks import check_int
from recsim_ft.competition.protocol import WEEK, WeekSplit, check_customers, check_rows
from recsim_ft.competition.strategies import broadcast, ranked_rows, recent_purchases, top_sellers
from recsim_ft.envs.hm.data import Transactions

#: candidates per customer at which recall is reported
RECALL_AT = (12, 50, 100, 200)
#: the window of a customer's own recent purchases (days)
DAYS = 28
#: partners kept per article in ``bought_together``
PARTNERS = 20

#: A candidate source: (transactions seen, customers sorted, n) -> (n_customers, n) articles
Source = Callable[[Transactions, np.ndarray, int], np.ndarray]


def recent(train: Transactions, customers: np.ndarray, n: int, days: int = DAYS) -> np.ndarray:
    """Each customer's own articles of the last ``days`` days, most recently bought first (then
    most bought, then lower row)."""
    customers = check_customers(customers, train.n_customers)
    return ranked_rows(
        recent_purchases(train, customers, days), customers, check_int("n", n, low=1)
    )


def same_product(product_codes: np.ndarray, days: int = DAYS) -> Source:
    """The source of the other articles of the product codes each customer bought in the last
    ``days`` days (``product_codes``: an integer code per article row, e.g.
    ``CatalogueFeatures.product_codes``): the product of the most recent purchase first, then
    the article's sales in the last week, then lower row; articles the customer bought in the
    window are left to ``recent``."""
    product_codes = np.asarray(product_codes)
    if product_codes.ndim != 1 or product_codes.dtype.kind not in "iu":
        raise ValueError(
            f"product_codes must be one integer code per article, got {product_codes.dtype} of "
            f"shape {product_codes.shape}"
        )

    def source(train: Transactions, customers: np.ndarray, n: int) -> np.ndarray:
        customers = check_customers(customers, train.n_customers)
        if len(product_codes) != train.n_articles:
            raise ValueError(
                f"product_codes has {len(product_codes):,} entries for {train.n_articles:,} "
                "articles: one per article row"
            )
        own = recent_purchases(train, customers, days)
        own["product"] = product_codes[own["article"].to_numpy()]
        products = own.groupby(["customer", "product"], sort=False)["day"].max().reset_index()
        last_week = train.days > int(train.days.max()) - WEEK
        sales = np.bincount(train.articles[last_week], minlength=train.n_articles)
        catalogue = pd.DataFrame(
            {"product": product_codes, "article": np.arange(len(product_codes)), "sales": sales}
        )
        found = products.merge(catalogue, on="product")
        bought = own.set_index(["customer", "article"]).index
        found = found[~found.set_index(["customer", "article"]).index.isin(bought)]
        found = found.sort_values(
            ["customer", "day", "sales", "article"], ascending=[True, False, False, True]
        )
        return ranked_rows(found, customers, check_int("n", n, low=1))

    return source


def bought_together(days: int = DAYS, partners: int = PARTNERS) -> Source:
    """The source of articles bought in one trip (one customer, one day) with the customer's
    recent articles, over everyone's trips of the last ``days`` days: an article's weight is
    the number of trips that paired it with one of the customer's articles of the window
    (each article keeps its ``partners`` most frequent partners), largest first."""
    check_int("days", days, low=1)
    check_int("partners", partners, low=1)

    def source(train: Transactions, customers: np.ndarray, n: int) -> np.ndarray:
        customers = check_customers(customers, train.n_customers)
        recent_rows = train.days > int(train.days.max()) - days
        trips = pd.DataFrame(
            {
                "customer": train.customers[recent_rows],
                "day": train.days[recent_rows],
                "article": train.articles[recent_rows],
            }
        ).drop_duplicates()
        pairs = trips.merge(trips, on=["customer", "day"], suffixes=("", "_with"))
        pairs = pairs[pairs["article"] != pairs["article_with"]]
        counts = pairs.groupby(["article", "article_with"]).size().rename("trips").reset_index()
        counts = counts.sort_values(
            ["article", "trips", "article_with"], ascending=[True, False, True]
        )
        counts = counts[counts.groupby("article").cumcount() < partners]
        own = recent_purchases(train, customers, days)[["customer", "article"]]
        found = own.merge(counts, on="article")
        found = found.groupby(["customer", "article_with"])["trips"].sum().reset_index()
        found = found.rename(columns={"article_with": "article"})
        found = found.sort_values(["customer", "trips", "article"], ascending=[True, False, True])
        return ranked_rows(found, customers, check_int("n", n, low=1))

    return source


def best_seller_source(train: Transactions, customers: np.ndarray, n: int) -> np.ndarray:
    """Last week's ``n`` best sellers, for everyone."""
    customers = check_customers(customers, train.n_customers)
    n = check_int("n", n, low=1)
    return broadcast(top_sellers(train, n), len(customers), n)


def _hits(candidates: np.ndarray, split: WeekSplit, n: int | None) -> np.ndarray:
    """For each of the target week's (customer, article) purchases, in the split's order,
    whether it is among the first ``n`` of the customer's ``candidates``."""
    candidates = np.asarray(candidates)
    if candidates.ndim != 2 or len(candidates) != len(split.customers):
        raise ValueError(
            f"candidates must be ({len(split.customers)}, n) articles, one row per customer of "
            f"the split, got shape {candidates.shape}"
        )
    if n is not None:
        candidates = candidates[:, : check_int("n", n, low=1)]
    n_articles = split.train.n_articles
    candidates = check_rows("candidates", candidates, n_articles, "articles", low=-1)
    rows = np.repeat(np.arange(len(split.customers)), np.diff(split.indptr))
    keys = np.arange(len(candidates))[:, None] * n_articles + candidates
    return np.isin(rows * n_articles + split.articles, keys[candidates >= 0])


def recall(candidates: np.ndarray, split: WeekSplit, n: int | None = None) -> float:
    """The share of the target week's (customer, article) purchases that are among the first
    ``n`` (default: all) of the customer's ``candidates`` (one row per ``split.customers``)."""
    return float(_hits(candidates, split, n).mean())


def recall_table(
    sources: Mapping[str, np.ndarray],
    split: WeekSplit,
    at: Sequence[int] = RECALL_AT,
    block: int = 50_000,
) -> pd.DataFrame:
    """Each source's recall at every ``at`` (its first N candidates), and the union's (every
    source's first N together), with the union's distinct candidates per customer (counted
    ``block`` customers at a time)."""
    if not sources:
        raise ValueError("no candidate source to measure")
    at = [check_int("at", n, low=1) for n in at]
    if not at:
        raise ValueError("at lists no number of candidates to measure recall at")
    hits = {name: {n: _hits(c, split, n) for n in at} for name, c in sources.items()}
    rows = {name: {f"recall@{n}": float(h[n].mean()) for n in at} for name, h in hits.items()}
    union: dict[str, float] = {}
    for n in at:
        union[f"recall@{n}"] = float(np.logical_or.reduce([h[n] for h in hits.values()]).mean())
        distinct = 0
        for start in range(0, len(split.customers), check_int("block", block, low=1)):
            together = np.concatenate([c[start : start + block, :n] for c in sources.values()], 1)
            together = np.sort(together, axis=1)
            new = np.ones_like(together, bool)
            new[:, 1:] = together[:, 1:] != together[:, :-1]
            distinct += int((new & (together >= 0)).sum())
        union[f"candidates@{n}"] = distinct / max(len(split.customers), 1)
    rows["union"] = union
    return pd.DataFrame.from_dict(rows, orient="index")


def rule_sources(product_codes: np.ndarray, days: int = DAYS) -> dict[str, Source]:
    """Every source but the two-tower model's, by name (``product_codes`` as in
    :func:`same_product`)."""
    return {
        "recent": lambda train, customers, n: recent(train, customers, n, days),
        "same_product": same_product(product_codes, days),
        "bought_together": bought_together(days),
        "best_sellers": best_seller_source,
    }


def recall_report(results: pd.DataFrame) -> str:
    """:func:`recall_table` rows of several target weeks (a ``week`` and a ``source`` column)
    as Markdown: each source's mean recall over the weeks at every N."""
    if results.empty:
        raise ValueError("no recall results to show")
    columns = [c for c in results.columns if c.startswith(("recall@", "candidates@"))]
    means = results.groupby("source", sort=False)[columns].mean()
    weeks = results["week"].unique()
    lines = [
        f"# Candidate recall: the share of the target week's purchases proposed ({len(weeks)} "
        f"week(s): {', '.join(weeks)})",
        "",
        "| source | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for source, row in means.iterrows():
        values = " | ".join("" if pd.isna(row[c]) else f"{row[c]:.4f}" for c in columns)
        lines.append(f"| {source} | {values} |")
    return "\n".join(lines) + "\n"
