"""What a Kaggle-format H&M transactions table shows about time, repurchase and taste: the
figures the dated synthetic stand-in is checked against (``docs/hm_synthetic.md``). They take
the real files' frames as well, so the same figures can be set beside the real data's.

Each takes ``transactions`` with the Kaggle columns ``t_dat`` (date or YYYY-MM-DD string),
``customer_id`` and ``article_id``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa

from recsim_ft.checks import check_int


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


# --- What a week looks like: buyers, baskets, activity, repurchase (issue 41) ------------------
# Weeks here are counted back from the table's last day, as the competition counts them: week 0
# is the last 7 days (the target week), week 1 the 7 before, and so on.

#: The real data's figures (public analyses of the full Kaggle data, approximate; several scaled
#: from a 6% customer sample) and the band the stand-in's weeks are held to (``None``: no band,
#: the figure is shown for comparison only). Keys are the rows of :func:`week_figures`.
REAL_WEEKS: dict[str, tuple[float, tuple[float, float] | None]] = {
    "weekly buyers (share of customers, last 8 weeks)": (0.055, (0.03, 0.08)),
    "rows per buying customer in a week (last 8 weeks)": (3.5, (2.5, 4.5)),
    "rows per customer per week (mean over the span)": (31_788_324 / 1_371_980 / (734 / 7), None),
    "purchases of articles first sold in the last week": (0.044, (0.02, 0.08)),
    "customers without a purchase in the last 13 weeks": (0.50, (0.40, 0.60)),
    "same article again within 1 week": (0.051, None),
    "same article again within 2 weeks": (0.062, None),
    "same article again within 3 weeks": (0.066, (0.04, 0.09)),
    "same product code again within 1 week": (0.068, None),
    "same product code again within 2 weeks": (0.085, None),
    "same product code again within 3 weeks": (0.094, None),
    "same product type again within 1 week": (0.108, None),
    "same product type again within 2 weeks": (0.143, None),
    "same product type again within 3 weeks": (0.165, None),
}


#: below this many buyers in a week, :func:`week_figures` warns that its figures are noise
FEWEST_WEEKLY_BUYERS = 1000


def _codes(values: pd.Series) -> np.ndarray:
    """Integer codes of ``values`` (a categorical's own codes, else factorized)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(np.int64)
    return pd.factorize(values)[0].astype(np.int64)


def _check_transactions(transactions: pd.DataFrame) -> None:
    """A frame with the Kaggle columns the figures read, and rows."""
    if not isinstance(transactions, pd.DataFrame):
        raise ValueError(
            f"transactions must be a pandas DataFrame, got {type(transactions).__name__}"
        )
    missing = [c for c in ("t_dat", "customer_id", "article_id") if c not in transactions.columns]
    if missing:
        raise ValueError(
            f"transactions has no column {missing[0]!r} (the Kaggle columns t_dat, customer_id, "
            f"article_id are needed; it has {list(transactions.columns)})"
        )
    if transactions.empty:
        raise ValueError("transactions has no rows")


def _weeks_back(transactions: pd.DataFrame) -> np.ndarray:
    """Week of each row counted back from the table's last day (0: the last 7 days)."""
    _check_transactions(transactions)
    day = pd.to_datetime(transactions["t_dat"])
    return ((day.max() - day).dt.days // 7).to_numpy(np.int64)


def _n_customers(transactions: pd.DataFrame, n_customers: int | None) -> int:
    buyers = transactions["customer_id"].nunique()
    if n_customers is None:
        return buyers
    if isinstance(n_customers, bool) or not isinstance(n_customers, int | np.integer):
        raise ValueError(f"n_customers must be an int, got {n_customers!r}")
    if n_customers < buyers:
        raise ValueError(
            f"n_customers={n_customers:,} is fewer than the {buyers:,} customers who buy in "
            "transactions; pass the number of rows of customers.csv"
        )
    return int(n_customers)


def weekly_buyers(
    transactions: pd.DataFrame, weeks: int = 8, n_customers: int | None = None
) -> pd.Series:
    """Share of the ``n_customers`` customers (default: those with a purchase in the table) who
    buy in each of the last ``weeks`` weeks; indexed by week back (0: the last)."""
    check_int("weeks", weeks, low=1)
    back = _weeks_back(transactions)
    customer = _codes(transactions["customer_id"])
    recent = back < weeks
    pairs = pd.DataFrame({"week": back[recent], "customer": customer[recent]}).drop_duplicates()
    buyers = pairs["week"].value_counts().reindex(range(weeks), fill_value=0).sort_index()
    return (buyers / _n_customers(transactions, n_customers)).rename("weekly buyers")


def basket_sizes(transactions: pd.DataFrame, weeks: int = 8) -> pd.Series:
    """Rows per buying customer in each of the last ``weeks`` weeks (rows / distinct buyers)."""
    check_int("weeks", weeks, low=1)
    back = _weeks_back(transactions)
    recent = back < weeks
    frame = pd.DataFrame(
        {"week": back[recent], "customer": _codes(transactions["customer_id"])[recent]}
    )
    grouped = frame.groupby("week")["customer"]
    return (grouped.size() / grouped.nunique()).reindex(range(weeks)).rename("basket size")


def rows_per_week(transactions: pd.DataFrame, n_customers: int | None = None) -> float:
    """Rows per customer per week over the table's span (its first to its last day), of the
    ``n_customers`` customers (default: those with a purchase in the table)."""
    _check_transactions(transactions)
    day = pd.to_datetime(transactions["t_dat"])
    weeks = ((day.max() - day.min()).days + 1) / 7
    return len(transactions) / weeks / _n_customers(transactions, n_customers)


def first_sold_share(transactions: pd.DataFrame, week: int = 0) -> float:
    """Share of week ``week``'s purchases (counted back; 0: the last) whose article was first
    sold in that week."""
    check_int("week", week, low=0)
    back = _weeks_back(transactions)
    first = pd.Series(back).groupby(transactions["article_id"].to_numpy()).transform("max")
    in_week = back == week
    if not in_week.any():
        raise ValueError(f"week {week} (counted back from the last day) has no purchases")
    return float((first.to_numpy()[in_week] == week).mean())


def inactive_share(
    transactions: pd.DataFrame, weeks: int = 13, n_customers: int | None = None
) -> float:
    """Share of the ``n_customers`` customers (default: those with a purchase in the table)
    without a purchase in the last ``weeks`` weeks."""
    check_int("weeks", weeks, low=1)
    back = _weeks_back(transactions)
    active = transactions["customer_id"][back < weeks].nunique()
    return 1.0 - active / _n_customers(transactions, n_customers)


def rebuy_shares(
    transactions: pd.DataFrame,
    articles: pd.DataFrame | None = None,
    by: str = "article_id",
    within: tuple[int, ...] = (1, 2, 3),
    reference_weeks: int = 4,
) -> pd.Series:
    """Share of the customers buying in a week who buy the same ``by`` (``article_id``, or a
    column of ``articles`` such as ``product_code`` or ``product_type_no``) again within the
    next k weeks, for each k of ``within``; the mean over the ``reference_weeks`` latest weeks
    whose next ``max(within)`` weeks are in the table. Indexed by k."""
    within = tuple(check_int("within", k, low=1) for k in within)
    if not within:
        raise ValueError("within names no number of weeks")
    check_int("reference_weeks", reference_weeks, low=1)
    back = _weeks_back(transactions)
    if by == "article_id":
        key = transactions["article_id"].to_numpy()
    else:
        if articles is None or by not in articles.columns:
            raise ValueError(f"rebuy_shares by {by!r} needs articles with a {by!r} column")
        key = transactions["article_id"].map(articles.set_index("article_id")[by])
        if key.isna().any():
            missing = transactions["article_id"][key.isna()].iloc[0]
            raise ValueError(f"article_id {missing} of transactions is not in articles")
        key = key.to_numpy()
    key = pd.factorize(key)[0].astype(np.int64)
    customer = _codes(transactions["customer_id"])
    pair = customer * (int(key.max()) + 1) + key
    longest = max(within)
    shares = {k: [] for k in within}
    for reference in range(longest, longest + reference_weeks):
        bought = back == reference
        if not bought.any():
            continue
        buyers = np.unique(customer[bought])
        pairs = np.unique(pair[bought])
        for k in within:
            later = (back < reference) & (back >= reference - k)
            again = np.isin(pair[later], pairs)
            repeaters = np.unique(customer[later][again])
            shares[k].append(len(repeaters) / len(buyers))
    if not shares[longest]:
        raise ValueError(f"no purchases in the {reference_weeks} reference weeks")
    return pd.Series({k: float(np.mean(v)) for k, v in shares.items()}, name=f"rebuy {by}")


def week_figures(
    transactions: pd.DataFrame, articles: pd.DataFrame | None = None, n_customers: int | None = None
) -> pd.Series:
    """Every figure of :data:`REAL_WEEKS` on ``transactions`` (the product code and product type
    rows need ``articles``; ``n_customers``: the rows of customers.csv, default the customers who
    buy), indexed as :data:`REAL_WEEKS`."""
    buyers = weekly_buyers(transactions, 8, n_customers)
    fewest = int(round(buyers.min() * _n_customers(transactions, n_customers)))
    if fewest < FEWEST_WEEKLY_BUYERS:
        warnings.warn(
            f"one of the last 8 weeks has {fewest:,} buyers: the weekly figures of fewer than "
            f"{FEWEST_WEEKLY_BUYERS:,} are mostly noise (the real data has about 75,000 a week)",
            stacklevel=2,
        )
    figures = {
        "weekly buyers (share of customers, last 8 weeks)": buyers.mean(),
        "rows per buying customer in a week (last 8 weeks)": basket_sizes(transactions, 8).mean(),
        "rows per customer per week (mean over the span)": rows_per_week(transactions, n_customers),
        "purchases of articles first sold in the last week": first_sold_share(transactions, 0),
        "customers without a purchase in the last 13 weeks": inactive_share(
            transactions, 13, n_customers
        ),
    }
    levels = [("article_id", "same article")]
    if articles is not None:
        levels += [("product_code", "same product code"), ("product_type_no", "same product type")]
    for by, label in levels:
        for k, share in rebuy_shares(transactions, articles, by).items():
            figures[f"{label} again within {k} week{'s' if k > 1 else ''}"] = share
    return pd.Series(figures, name="figure")


def week_table(figures: dict[str, pd.Series]) -> str:
    """A Markdown table of :data:`REAL_WEEKS` (real value and band) beside each named series of
    :func:`week_figures`; a figure outside its band is marked ``(out)``."""
    names = list(figures)
    lines = [
        "| measure | real data | band | " + " | ".join(names) + " |",
        "| --- | ---: | :---: | " + " | ".join("---:" for _ in names) + " |",
    ]

    for measure, (real, band) in REAL_WEEKS.items():
        cells = []
        for name in names:
            value = figures[name].get(measure)
            if value is None or np.isnan(value):
                cells.append("-")
                continue
            out = band is not None and not band[0] <= value <= band[1]
            cells.append(f"{value:.3f}" + (" (out)" if out else ""))
        shown_band = "-" if band is None else f"{band[0]:.3f}-{band[1]:.3f}"
        lines.append(f"| {measure} | {real:.3f} | {shown_band} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_week_inputs(data_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """What :func:`week_figures` takes, read from Kaggle files (csv or parquet, the real ones or
    the stand-in's): the transactions (customer ids as a categorical, so 31.8M rows fit in a
    few GB), the articles' ids, product codes and types, and the number of customers."""
    from recsim_ft.envs.hm.data import find_kaggle_files, read_table

    paths = find_kaggle_files(data_dir)
    transactions = read_table(
        paths["transactions"],
        "transactions",
        {
            "t_dat": pa.date32(),
            "customer_id": pa.dictionary(pa.int32(), pa.string()),
            "article_id": pa.int64(),
        },
    ).to_pandas()
    articles = read_table(
        paths["articles"],
        "articles",
        {"article_id": pa.int64(), "product_code": pa.int64(), "product_type_no": pa.int64()},
    ).to_pandas()
    n_customers = read_table(paths["customers"], "customers", {"customer_id": pa.string()}).num_rows
    return transactions, articles, n_customers
