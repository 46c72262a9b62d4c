"""What a Kaggle-format H&M transactions table shows about time, repurchase and taste: the
figures the dated synthetic stand-in is checked against (``docs/hm_synthetic.md``). They take
the real files' frames as well, so the same figures can be set beside the real data's.

Each takes ``transactions`` with the Kaggle columns ``t_dat`` (date or YYYY-MM-DD string),
``customer_id`` and ``article_id``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _weeks(transactions: pd.DataFrame) -> pd.Series:
    """Week index of each row, counted from the first day of the table."""
    day = pd.to_datetime(transactions["t_dat"])
    return ((day - day.min()).dt.days // 7).rename("week")


def repeat_share(transactions: pd.DataFrame) -> float:
    """Share of purchases of an article the same customer bought on an earlier day."""
    day = pd.to_datetime(transactions["t_dat"])
    first = day.groupby([transactions["customer_id"], transactions["article_id"]]).transform("min")
    return float((day > first).mean())


def weekly_rank_correlation(transactions: pd.DataFrame, lag: int = 1, top: int = 100) -> float:
    """Median over weeks w of the Spearman correlation between the purchase counts of week w and
    of week w + ``lag``, over the ``top`` articles most purchased overall. Drift shows as a
    correlation that falls with the lag; a static popularity gives the same at every lag (below
    1 by sampling noise alone). A week without purchases is a week of zeros: the pairs with it
    have no correlation and are left out, and the lag still counts it."""
    articles = transactions["article_id"].value_counts().index[:top]
    weeks = _weeks(transactions)
    counts = (
        transactions[transactions["article_id"].isin(articles)]
        .groupby([weeks, "article_id"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=range(weeks.max() + 1), columns=articles, fill_value=0)
    )
    ranks = counts.rank(axis=1).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant week: no correlation
        pairs = [np.corrcoef(a, b)[0, 1] for a, b in zip(ranks[:-lag], ranks[lag:], strict=True)]
    return float(np.nanmedian(pairs))


def new_article_share(transactions: pd.DataFrame, weeks: int = 4) -> float:
    """Mean over weeks (after the first ``weeks``) of the share of a week's purchases whose
    article was first sold within the last ``weeks`` weeks; weeks without purchases have no
    share and are left out."""
    week = _weeks(transactions)
    first_week = week.groupby(transactions["article_id"]).transform("min")
    new = (week - first_week < weeks).groupby(week).mean()
    return float(new[new.index >= weeks].mean())


def taste_concentration(
    transactions: pd.DataFrame, articles: pd.DataFrame, column: str, min_purchases: int = 10
) -> float:
    """Mean over customers with at least ``min_purchases`` purchases of the largest share of
    their purchases in one value of the article attribute ``column`` (e.g. index_group_name): 1
    when every customer sticks to one value, the population's largest share when taste plays no
    part."""
    value = transactions["article_id"].map(articles.set_index("article_id")[column])
    counts = pd.crosstab(transactions["customer_id"], value)
    counts = counts[counts.sum(axis=1) >= min_purchases]
    return float((counts.max(axis=1) / counts.sum(axis=1)).mean())
