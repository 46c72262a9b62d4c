"""A synthetic stand-in for the H&M Kaggle data, in the Kaggle files' own format, calibrated to the
full data's statistics (``recsim_ft/assets/hm_calibration.json``, built by
``scripts/build_hm_calibration.py``).

What is calibrated: customer attribute shares (missing values included), the bimodal age shape,
the share of buying customers and their mean number of purchases, the full catalogue size, the
purchase counts of the 1,000 most purchased articles (their real ids; the real ``prod_name`` of
the top 200), a power-law tail for the other articles, product-group shares, sales channels,
dates and the mean price; the article attributes (every column of articles.csv) with the joint
structure of 1,000 real articles (``article_attributes`` in the calibration: counts of product
types within a product group, of departments with their section, index, index group and garment
group within a product type, of colour groups with their perceived colour value and master, of
graphical appearances), and the real product group, product type, index group and colour group
of the 200 most purchased articles. What is invented (the statistics are silent): every other
joint distribution (colour and graphical appearance are drawn independently of the product;
product groups absent from the 1,000 articles, 0.2% of the catalogue, get a type named after
the group); ``detail_desc`` is a template ("Trousers in black"), missing as often as in the
1,000 articles; customer attributes are drawn independently, except ``Active``, which is 1
only for ``FN = 1`` customers (the full data has 464,404 Active and 476,930 FN customers; we assume
the former are among the latter); purchases of the top 1,000 articles follow a per-article
preference for the customer's age (smooth in the age bucket's centre), FN, Active, club status
and news frequency, with per-article weights re-fitted so that each article's expected
purchase share over the customer population is the real one. The other purchases ignore the
customer. So the purchase probabilities depend on the user features, and a model can learn
something, as it can on the real data. ``dynamics=True`` adds dates that follow each
article's release and sales life (drift, new articles, seasons), customers' taste over index
groups for the long tail, and repurchases (:class:`_Dynamics`; invented, see docs/hm_synthetic.md).

Format: the Kaggle column names and text formats (64-hex customer and postal codes, article ids
zero-padded to 10 digits in CSV, YYYY-MM-DD dates); articles.csv has all 25 columns; transactions
are grouped by customer rather than sorted by date. The attributes are drawn from a random stream
of their own, so the ids, names and purchases are those the generator made before it had them.
docs/hm_synthetic.md sets the attribute figures side by side with their sources.

Customers are generated in chunks (each from its own seed), so a full-size set (1.37M
customers, 31.8M transactions, 3.5 GB of CSV) streams to disk in bounded memory and the
in-memory frames of a small set are exactly the first rows the files would hold.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsim_ft.checks import check_bool, check_int
from recsim_ft.envs.hm.data import ARTICLE_COLUMNS
from recsim_ft.envs.hm.trips import _Trips, build_trips
from recsim_ft.fileio import cache_root
from recsim_ft.progress import progress_bar

#: customers in the full Kaggle data
FULL_N_CUSTOMERS = 1_371_980
#: bump when the generated files change for the same arguments, so cached files are not reused
GENERATOR_VERSION = 1
#: the same for the stand-in with trips (``trips=True``), whose files have a version of their own
TRIPS_VERSION = 1
#: the top articles whose purchases depend on the customer
N_HEAD = 1000
#: articles per product code in the tail of the stand-in with trips (real: 105,542 articles in
#: 47,224 product codes)
COLOURS_PER_PRODUCT = 105_542 / 47_224
_ATTRIBUTES = ("age_bucket", "FN", "Active", "club_member_status", "fashion_news_frequency")


@lru_cache(maxsize=1)
def load_calibration() -> dict:
    """The calibration figures shipped with the package (see the module docstring)."""
    text = resources.files("recsim_ft").joinpath("assets", "hm_calibration.json").read_text()
    return json.loads(text)


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random 64-character lowercase hex strings (the format of Kaggle's customer ids)."""
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((n, 64), dtype=np.uint8)
    text[:, 0::2], text[:, 1::2] = digits[raw >> 4], digits[raw & 15]
    return pa.array(text.view("S64").ravel(), type=pa.binary()).cast(pa.string())


def _choice(
    rng: np.random.Generator, shares: dict[str, float], n: int
) -> tuple[np.ndarray, list[str]]:
    labels = list(shares)
    p = np.array([shares[k] for k in labels])
    return rng.choice(len(labels), size=n, p=p / p.sum()), labels


@dataclass
class _World:
    """Everything shared by all customers of one seed: the catalogue and the purchase model."""

    articles: pa.Table
    padded_ids: pa.Array  # article_id as Kaggle writes it in CSV ("0706016001")
    head_cdf_flat: np.ndarray  # segment s, head rank k -> s + P(rank <= k | s)
    tail_cdf: np.ndarray
    segment_shape: tuple[int, ...]
    head_share: float
    price: np.ndarray
    calibration: dict
    population: np.ndarray  # (n_segments,) share of customers in each segment
    preference: np.ndarray  # (n_segments, N_HEAD) log-preference for each top article
    head_target: np.ndarray  # (N_HEAD,) each top article's calibrated share of the head


def _catalogue(
    rng: np.random.Generator, cal: dict, products: bool = False
) -> tuple[pa.Table, np.ndarray]:
    """The articles (ids, product codes, names, product groups) and their prices. The tail's
    articles are one per product code, or with ``products`` (the stand-in with trips) in
    products of :data:`COLOURS_PER_PRODUCT` articles on average (ids ``code * 1000 + 1, 2, ...``
    as the real ids number a product's colours), next to each other in the popularity order."""
    n_articles = cal["n_articles"]
    head_ids = np.array(cal["top_article_ids"], dtype=np.int64)
    head_codes = set((head_ids // 1000).tolist())
    codes = rng.choice(np.arange(108_000, 960_000), size=n_articles, replace=False)
    codes = codes[~np.isin(codes, list(head_codes))][: n_articles - len(head_ids)]
    if products:
        n_tail = n_articles - len(head_ids)
        colours = np.minimum(rng.geometric(1 / COLOURS_PER_PRODUCT, size=n_tail), 99)
        n_products = int(np.searchsorted(np.cumsum(colours), n_tail)) + 1
        colours = colours[:n_products]
        colours[-1] -= colours.sum() - n_tail
        variant = np.arange(n_tail) - np.repeat(np.cumsum(colours) - colours, colours) + 1
        tail_ids = np.repeat(codes[:n_products], colours) * 1000 + variant
    else:
        tail_ids = codes * 1000 + 1
    article_ids = np.concatenate([head_ids, tail_ids])
    unnamed = pa.array(article_ids[len(cal["top_article_names"]) :] // 1000).cast(pa.string())
    names = pa.concat_arrays(
        [
            pa.array(cal["top_article_names"]),
            pc.binary_join_element_wise("Synthetic article ", unnamed, ""),
        ]
    )
    groups, labels = _choice(rng, cal["product_group_shares"], n_articles)
    price = rng.lognormal(np.log(cal["avg_price"]) - 0.5 * 0.6**2, 0.6, size=n_articles)
    table = pa.table(
        {
            "article_id": article_ids,
            "product_code": article_ids // 1000,
            "prod_name": names,
            "product_group_name": np.array(labels, dtype=object)[groups],
        }
    )
    return table, price


def _segment_shares(cal: dict) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """Marginal share of each value of each attribute, in ``_ATTRIBUTES`` order."""
    shares = cal["customer_shares"]
    age = cal["age_bucket_shares"]
    age_labels = [*cal["age_bucket_edges"], "missing"]
    fn_one = shares["FN"]["1"]
    marginals = [
        np.array([age[k] for k in age_labels]),
        np.array([1 - fn_one, fn_one]),
        None,  # Active, joint with FN below
        np.array(list(shares["club_member_status"].values())),
        np.array(list(shares["fashion_news_frequency"].values())),
    ]
    marginals[2] = np.array([1 - shares["Active"]["1"] / fn_one, shares["Active"]["1"] / fn_one])
    return marginals, tuple(len(m) for m in marginals)


def _segment_probabilities(cal: dict) -> np.ndarray:
    """Population share of every (age bucket, FN, Active, club, news) segment, flattened."""
    (age, fn, active_given_fn, club, news), shape = _segment_shares(cal)
    fn_active = np.array([[fn[0], 0.0], [fn[1] * active_given_fn[0], fn[1] * active_given_fn[1]]])
    joint = (
        age[:, None, None, None, None]
        * fn_active[None, :, :, None, None]
        * club[None, None, None, :, None]
        * news[None, None, None, None, :]
    )
    return (joint / joint.sum()).ravel()


def _head_preferences(rng: np.random.Generator, cal: dict, shape: tuple[int, ...]) -> np.ndarray:
    """(n_segments, N_HEAD) log-preference of each segment for each top article."""
    n_age, n_fn, n_active, n_club, n_news = shape
    edges = np.array(list(cal["age_bucket_edges"].values()), dtype=float)
    z = (edges.mean(axis=1) - 36.4) / 14.0
    slope, curve = rng.normal(0, 1.0, N_HEAD), rng.normal(0, 0.5, N_HEAD)
    age = np.vstack(
        [slope * z[:, None] + curve * (z[:, None] ** 2 - 1), rng.normal(0, 0.5, (1, N_HEAD))]
    )
    fn = np.vstack([np.zeros(N_HEAD), rng.normal(0, 0.3, N_HEAD)])
    active = np.vstack([np.zeros(N_HEAD), rng.normal(0, 0.3, N_HEAD)])
    club = rng.normal(0, 0.5, (n_club, N_HEAD))
    news = rng.normal(0, 0.5, (n_news, N_HEAD))
    total = (
        age[:, None, None, None, None]
        + fn[None, :, None, None, None]
        + active[None, None, :, None, None]
        + club[None, None, None, :, None]
        + news[None, None, None, None, :]
    )
    return total.reshape(-1, N_HEAD)


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@lru_cache(maxsize=4)
def _world(seed: int, products: bool = False) -> _World:
    """The catalogue and purchase model of ``seed``; ``products``: the catalogue of the stand-in
    with trips (see :func:`_catalogue`)."""
    cal = load_calibration()
    rng = np.random.default_rng([seed, 0])
    articles, price = _catalogue(rng, cal, products)
    articles = _with_attributes(articles, seed, cal)
    _, shape = _segment_shares(cal)
    preference = _head_preferences(rng, cal, shape)
    population = _segment_probabilities(cal)
    counts = np.array(cal["top_article_counts"], dtype=float)
    target = counts / counts.sum()
    log_weight = np.log(target)
    # fixed point (relative error ~1e-4 after 20 steps): each article's expected share over the
    # population = its real share
    for _ in range(20):
        log_weight += np.log(target) - np.log(population @ _softmax(log_weight + preference))
    cdf = np.cumsum(_softmax(log_weight + preference), axis=1)
    cdf /= cdf[:, -1:]
    tail_ranks = np.arange(N_HEAD + 1, cal["n_bought_articles"] + 1, dtype=float)
    tail = np.cumsum((tail_ranks / N_HEAD) ** -cal["tail_exponent"])
    padded = pc.utf8_lpad(articles["article_id"].combine_chunks().cast(pa.string()), 10, "0")
    return _World(
        articles=articles,
        padded_ids=padded,
        head_cdf_flat=(np.arange(len(cdf))[:, None] + cdf).ravel(),
        tail_cdf=tail / tail[-1],
        segment_shape=shape,
        head_share=counts.sum() / cal["n_transactions"],
        price=price,
        calibration=cal,
        population=population,
        preference=preference,
        head_target=target,
    )


def _span(cal: dict) -> tuple[np.datetime64, int]:
    """The data's first day and its number of days (the real span, 734 days)."""
    first = np.datetime64(cal["first_day"])
    return first, int((np.datetime64(cal["last_day"]) - first).astype(int)) + 1


def _counts(figures: dict) -> pd.DataFrame:
    """A count table of the calibration (``columns``, ``counts``) as a frame."""
    return pd.DataFrame(figures["counts"], columns=figures["columns"])


def _draw(rng: np.random.Generator, counts: pd.DataFrame, n: int) -> np.ndarray:
    """``n`` row labels of ``counts``, each drawn with probability proportional to its count."""
    p = counts["articles"].to_numpy(float)
    return rng.choice(counts.index.to_numpy(), size=n, p=p / p.sum())


def _with_attributes(articles: pa.Table, seed: int, cal: dict) -> pa.Table:
    """``articles`` with every column of articles.csv, in the Kaggle order (see the module
    docstring for what is calibrated). Drawn from a stream of their own, so the catalogue's ids,
    names and the purchases are those of a generator without attributes."""
    rng = np.random.default_rng([seed, 3])
    figures = cal["article_attributes"]
    types, departments, colours, looks = (
        _counts(figures[kind])
        for kind in ("product_types", "departments", "colours", "graphical_appearances")
    )
    top = cal["top_article_attributes"]
    n, n_top = articles.num_rows, len(top["product_group_name"])
    group = articles["product_group_name"].to_numpy(zero_copy_only=False).astype(object)
    group[:n_top] = top["product_group_name"]  # the real groups of the top 200
    # a product (product_code: one garment in several colours) has one type and department
    _, first, product = np.unique(
        articles["product_code"].to_numpy(), return_index=True, return_inverse=True
    )
    product_group = group[first]
    # groups without a type in the sample (about 0.2% of the catalogue): a type named after
    # the group, numbered from 9000 (invented)
    for k, name in enumerate(sorted(set(product_group) - set(types["product_group_name"]))):
        types.loc[len(types)] = [name, 9000 + k, name, 1]
    type_row = np.empty(len(first), np.int64)
    for name in np.unique(product_group):
        at = np.flatnonzero(product_group == name)
        type_row[at] = _draw(rng, types[types["product_group_name"] == name], len(at))
    index_group = np.full(len(first), None, object)
    for i in range(n_top):  # the top 200's real product type and index group
        if first[product[i]] == i:  # the product's first article sets its type
            named = types[types["product_type_name"] == top["product_type_name"][i]]
            type_row[product[i]] = _draw(rng, named, 1)[0]
            index_group[product[i]] = top["index_group_name"][i]
    # the department of a product type, as in the sample; of a type the sample lacks: of its
    # group, else of any article; for the top 200 within their real index group where the
    # sample has one
    department_row = np.empty(len(first), np.int64)
    product_type = types["product_type_no"].to_numpy()[type_row]
    for (type_no, index_name), at in pd.Series(range(len(first))).groupby(
        [product_type, index_group], dropna=False
    ):
        at = at.to_numpy()
        candidates = departments[departments["product_type_no"] == type_no]
        if not len(candidates):
            same_group = departments["product_group_name"] == product_group[at[0]]
            candidates = departments[same_group] if same_group.any() else departments
        indexed = candidates[candidates["index_group_name"] == index_name]
        department_row[at] = _draw(rng, indexed if len(indexed) else candidates, len(at))
    colour_row = _draw(rng, colours, n)
    look_row = _draw(rng, looks, n)
    for i in range(n_top):  # the top 200's real colour group
        named = colours[colours["colour_group_name"] == top["colour_group_name"][i]]
        colour_row[i] = _draw(rng, named, 1)[0]
    columns = {
        **types.loc[type_row[product]].drop(columns=["product_group_name", "articles"]),
        **departments.loc[department_row[product]].drop(
            columns=["product_group_name", "product_type_no", "articles"]
        ),
        **colours.loc[colour_row].drop(columns="articles"),
        **looks.loc[look_row].drop(columns="articles"),
    }
    values = {name: column.to_numpy() for name, column in columns.items()}
    values["product_group_name"] = product_group[product]
    described = rng.random(n) >= figures["detail_desc_missing_share"]
    text = pc.binary_join_element_wise(
        pa.array(values["product_type_name"].astype(str)),
        pa.array(np.char.lower(values["colour_group_name"].astype(str))),
        " in ",
    )
    values["detail_desc"] = pc.if_else(pa.array(described), text, pa.nulls(n, pa.string()))
    return pa.table({c: values[c] if c in values else articles[c] for c in ARTICLE_COLUMNS})


def _customers(rng: np.random.Generator, world: _World, n: int) -> tuple[pa.Table, np.ndarray]:
    """A chunk of customers.csv and each customer's segment index."""
    cal = world.calibration
    mix = cal["age_mixture"]
    young = rng.random(n) < mix["weight_young"]
    age = np.where(
        young,
        rng.normal(mix["mean_young"], mix["sd_young"], n),
        rng.normal(mix["mean_old"], mix["sd_old"], n),
    )
    age = np.clip(np.round(age), mix["min"], mix["max"])
    edges = np.array([e[0] for e in cal["age_bucket_edges"].values()][1:], dtype=float)
    age_bucket = np.searchsorted(edges, age, side="right")
    missing_age = rng.random(n) < cal["age_bucket_shares"]["missing"]
    age_bucket[missing_age] = len(edges) + 1
    (_, fn_share, active_given_fn, _, _), shape = _segment_shares(cal)
    fn = (rng.random(n) < fn_share[1]).astype(np.int64)
    active = fn * (rng.random(n) < active_given_fn[1])
    codes = {"age_bucket": age_bucket, "FN": fn, "Active": active}
    labels = {}
    for column in ("club_member_status", "fashion_news_frequency"):
        codes[column], labels[column] = _choice(rng, cal["customer_shares"][column], n)
    table = {
        "customer_id": _hex_ids(rng, n),
        "FN": pa.array(np.where(fn == 1, 1.0, np.nan), from_pandas=True),
        "Active": pa.array(np.where(active == 1, 1.0, np.nan), from_pandas=True),
    }
    for column, names in labels.items():
        values = np.array([None if k == "missing" else k for k in names], dtype=object)[
            codes[column]
        ]
        table[column] = pa.array(values, type=pa.string())
    table["age"] = pa.array(np.where(missing_age, np.nan, age), from_pandas=True)
    postal_pool = _hex_ids(rng, max(1, n // 4))
    table["postal_code"] = postal_pool.take(pa.array(rng.integers(0, len(postal_pool), n)))
    segment = np.ravel_multi_index([codes[a] for a in _ATTRIBUTES], shape)
    return pa.table(table), segment


def _purchase_counts(rng: np.random.Generator, cal: dict, n: int) -> np.ndarray:
    """Each customer's number of purchases: calibrated share of buyers and mean per buyer."""
    buys = rng.random(n) < cal["n_buying_customers"] / cal["n_customers"]
    sigma = 1.0
    rate = rng.lognormal(np.log(cal["mean_purchases_per_buyer"] - 1) - sigma**2 / 2, sigma, n)
    return np.where(buys, 1 + rng.poisson(rate), 0)


def _transactions(
    rng: np.random.Generator,
    world: _World,
    customer_ids: pa.Array,
    segment: np.ndarray,
    dynamics: tuple[_Dynamics, np.random.Generator] | None = None,
    trips: tuple[_Trips, np.random.Generator] | None = None,
) -> pa.Table:
    """The transactions of a chunk of customers (article_id as int64). With ``dynamics`` (the
    seed's :class:`_Dynamics` and the chunk's own stream), tail articles follow the customers'
    taste, dates each article's life cycle, and some purchases repeat earlier ones; without, the
    rows are exactly those of the generator before dynamics existed. With ``trips`` (the seed's
    trips and the chunk's own stream; ``recsim_ft.envs.hm.trips``) the same customers make the
    same number of purchases, in shopping trips."""
    cal = world.calibration
    n = len(segment)
    counts = _purchase_counts(rng, cal, n)
    if trips is not None:
        trips_model, trips_rng = trips
        customer, article, day = trips_model.rows(trips_rng, counts, segment)
        channel, channel_labels = _choice(rng, cal["sales_channel_shares"], len(customer))
        return _transaction_table(
            world, customer_ids, customer, article, day, channel_labels, channel
        )
    customer = np.repeat(np.arange(n), counts)
    rows = len(customer)
    head = rng.random(rows) < world.head_share
    article = np.empty(rows, dtype=np.int64)
    head_segment = segment[customer[head]]
    flat = np.searchsorted(world.head_cdf_flat, head_segment + rng.random(head.sum()), side="right")
    article[head] = flat - head_segment * N_HEAD
    article[~head] = N_HEAD + np.searchsorted(
        world.tail_cdf, rng.random(rows - head.sum()), side="right"
    )
    _, days = _span(cal)
    channel, channel_labels = _choice(rng, cal["sales_channel_shares"], rows)
    day = rng.integers(0, days, rows)
    if dynamics is not None:
        world_dynamics, dynamic_rng = dynamics
        customer, article, day = world_dynamics.apply(dynamic_rng, customer, article, head, n, days)
    return _transaction_table(world, customer_ids, customer, article, day, channel_labels, channel)


def _transaction_table(
    world: _World,
    customer_ids: pa.Array,
    customer: np.ndarray,
    article: np.ndarray,
    day: np.ndarray,
    channel_labels: list[str],
    channel: np.ndarray,
) -> pa.Table:
    """The Kaggle columns of purchases given as indices (customer of the chunk, article, day)."""
    first, _ = _span(world.calibration)
    return pa.table(
        {
            "t_dat": pa.array(first + day.astype("timedelta64[D]")).cast(pa.date32()),
            "customer_id": customer_ids.take(pa.array(customer)),
            "article_id": world.articles["article_id"].take(pa.array(article)),
            "price": world.price[article],
            "sales_channel_id": np.array(channel_labels, dtype=np.int64)[channel],
        }
    )


#: The invented parameters of the dynamics (the statistics are silent on all of them): the
#: share of purchases that repeat one of the customer's earlier articles, an article's sales
#: life (days; log-normal: median, sigma), how seasonal releases are (amplitude of a yearly
#: cosine around each product group's peak), how far before the data an article may come out
#: (days), and how strongly a customer's taste over index groups steers the long tail
#: (Dirichlet concentration: smaller = more peaked; share of tail purchases it steers).
DYNAMICS = {
    "repurchase_share": 0.12,
    "life_days_median": 45.0,
    "life_days_sigma": 0.8,
    "season_amplitude": 0.6,
    "released_before_data_days": 365,
    "taste_concentration": 0.3,
    "taste_share": 0.8,
}
#: Day of the year of each product group's release peak where the season is known (invented
#: from the calendar: swimwear before summer, socks and tights before winter); other groups
#: draw theirs from the seed.
SEASON_PEAKS = {"Swimwear": 120, "Socks & Tights": 270}


@dataclass
class _Dynamics:
    """What the dated stand-in adds (``dynamics=True``), shared by all customers of one seed:

    - **Life cycles and drift**: every article has a release day (before or during the data's
      span, more often in its product group's season) and a sales life; a purchase of it falls
      on its release day plus an exponential wait of that life, truncated to the span. So weekly
      popularity drifts, articles appear during the data and fade, and product groups have
      seasons. Each article's total purchases stay calibrated: only the dates move.
    - **Taste**: each customer has a taste over index groups (Ladieswear, Menswear, ...; a
      Dirichlet draw around the groups' shares of tail purchases); ``taste_share`` of their
      purchases outside the top 1,000 articles take an article of a group drawn from it (by
      popularity within the group). So content predicts purchases; the group shares hold on
      average.
    - **Repurchases**: a share of each customer's purchases after the first repeat one of their
      earlier articles (uniformly among them), on its own later date.
    """

    release_day: np.ndarray  # (n_articles,) day index, negative: before the data
    life_days: np.ndarray  # (n_articles,)
    tail_groups: list[np.ndarray]  # per index group: its tail article indices
    tail_group_cdfs: list[np.ndarray]  # per index group: popularity CDF over those
    tail_group_shares: np.ndarray  # each group's share of tail purchases

    def apply(
        self,
        rng: np.random.Generator,
        customer: np.ndarray,
        article: np.ndarray,
        head: np.ndarray,
        n_customers: int,
        days: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(customer, article, day) of a chunk's purchases, grouped by customer in date order."""
        article = article.copy()
        n_groups = len(self.tail_groups)
        taste = rng.dirichlet(
            DYNAMICS["taste_concentration"] * n_groups * self.tail_group_shares, n_customers
        )
        steered = np.flatnonzero(~head & (rng.random(len(article)) < DYNAMICS["taste_share"]))
        cdf = np.cumsum(taste[customer[steered]], axis=1)
        group = (rng.random(len(steered))[:, None] > cdf[:, :-1]).sum(axis=1)
        for g in range(n_groups):
            at = steered[group == g]
            rank = np.searchsorted(self.tail_group_cdfs[g], rng.random(len(at)), side="right")
            article[at] = self.tail_groups[g][np.minimum(rank, len(self.tail_groups[g]) - 1)]
        day = self.purchase_days(rng, article, days)
        order = np.lexsort((day, customer))
        customer, article, day = customer[order], article[order], day[order]
        start = np.searchsorted(customer, customer)  # each row's customer's first row
        position = np.arange(len(customer)) - start
        repeat = np.flatnonzero(
            (position > 0) & (rng.random(len(customer)) < DYNAMICS["repurchase_share"])
        )
        earlier = start[repeat] + (rng.random(len(repeat)) * position[repeat]).astype(np.int64)
        article[repeat] = article[earlier]
        return customer, article, day

    def purchase_days(self, rng: np.random.Generator, article: np.ndarray, days: int) -> np.ndarray:
        """A day for each purchase: from the later of release and the data's first day, an
        exponential wait of the article's life, truncated to the span (inverse CDF)."""
        start = np.maximum(self.release_day[article], 0)
        life, room = self.life_days[article], days - start
        cut = -np.expm1(-room / life)  # P(wait < room)
        wait = -life * np.log1p(-rng.random(len(article)) * cut)
        return np.minimum(start + wait.astype(np.int64), days - 1)


@lru_cache(maxsize=4)
def _dynamics(seed: int) -> _Dynamics:
    world = _world(seed)
    cal = world.calibration
    rng = np.random.default_rng([seed, 4])
    first, days = _span(cal)
    n = world.articles.num_rows
    # release days: each product group's yearly season, from a year before the data to a week
    # before its end
    before = DYNAMICS["released_before_data_days"]
    candidates = np.arange(-before, days - 7)
    dates = first + candidates.astype("timedelta64[D]")
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype(int)
    groups = world.articles["product_group_name"].to_numpy(zero_copy_only=False)
    release = np.empty(n, np.int64)
    for name in np.unique(groups):
        at = np.flatnonzero(groups == name)
        peak = SEASON_PEAKS.get(name, rng.integers(0, 365))
        weight = 1 + DYNAMICS["season_amplitude"] * np.cos(
            2 * np.pi * (day_of_year - peak) / 365.25
        )
        release[at] = rng.choice(candidates, size=len(at), p=weight / weight.sum())
    life = rng.lognormal(np.log(DYNAMICS["life_days_median"]), DYNAMICS["life_days_sigma"], n)
    # the long tail by index group, with each article's popularity weight (as tail_cdf draws it)
    n_tail = len(world.tail_cdf)
    tail = np.arange(N_HEAD, N_HEAD + n_tail)
    weight = np.diff(world.tail_cdf, prepend=0.0)
    index_group = world.articles["index_group_name"].to_numpy(zero_copy_only=False)[tail]
    index_group = index_group.astype(str)
    tail_groups, cdfs, shares = [], [], []
    for name in np.unique(index_group):
        at = index_group == name
        tail_groups.append(tail[at])
        cdfs.append(np.cumsum(weight[at]) / weight[at].sum())
        shares.append(weight[at].sum())
    return _Dynamics(release, life, tail_groups, cdfs, np.array(shares) / np.sum(shares))


@lru_cache(maxsize=2)
def trips_model(seed: int) -> _Trips:
    """The shopping trips of ``seed``'s stand-in with trips (``recsim_ft.envs.hm.trips``)."""
    world = _world(seed, products=True)
    first, days = _span(world.calibration)
    return build_trips(world, seed, first, days, SEASON_PEAKS, DYNAMICS)


def iter_chunks(
    n_customers: int,
    seed: int = 0,
    chunk_customers: int = 100_000,
    dynamics: bool = False,
    trips: bool = False,
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(customers, transactions) tables of successive chunks of ``n_customers`` customers;
    ``dynamics=True``: with drift, new articles, seasons, repurchases and taste (see
    :class:`_Dynamics`); ``trips=True``: weeks as the real data's, with shopping trips, baskets,
    activity and repurchase over a catalogue of products in several colours
    (``recsim_ft.envs.hm.trips``; it has drift, seasons and taste of its own: give one of
    ``dynamics`` and ``trips``)."""
    n_customers = check_int("n_customers", n_customers, low=1)
    trips = check_bool("trips", trips)
    if check_bool("dynamics", dynamics) and trips:
        raise ValueError(
            "dynamics=True and trips=True are two stand-ins (the trips have dates, drift and "
            "taste of their own): choose one"
        )
    world = _world(int(seed), products=trips)
    world_dynamics = _dynamics(int(seed)) if dynamics else None
    world_trips = trips_model(int(seed)) if trips else None
    for k, start in enumerate(range(0, n_customers, chunk_customers)):
        rng = np.random.default_rng([int(seed), 1, k])
        customers, segment = _customers(rng, world, min(chunk_customers, n_customers - start))
        chunk_dynamics = (
            None
            if world_dynamics is None
            else (world_dynamics, np.random.default_rng([int(seed), 5, k]))
        )
        chunk_trips = (
            None if world_trips is None else (world_trips, np.random.default_rng([int(seed), 7, k]))
        )
        yield (
            customers,
            _transactions(
                rng,
                world,
                customers["customer_id"].combine_chunks(),
                segment,
                chunk_dynamics,
                chunk_trips,
            ),
        )


def generate_frames(
    n_customers: int = 50_000, seed: int = 0, dynamics: bool = False, trips: bool = False
) -> dict[str, pd.DataFrame]:
    """Kaggle-format ``customers``, ``articles`` and ``transactions`` frames (article_id as int64,
    as pandas reads the CSV; t_dat as YYYY-MM-DD strings); ``dynamics`` and ``trips`` as in
    :func:`iter_chunks`."""
    chunks = list(iter_chunks(n_customers, seed, dynamics=dynamics, trips=trips))
    transactions = pa.concat_tables([t for _, t in chunks])
    transactions = transactions.set_column(0, "t_dat", transactions["t_dat"].cast(pa.string()))
    return {
        "customers": pa.concat_tables([c for c, _ in chunks]).to_pandas(),
        "articles": _world(int(seed), products=bool(trips)).articles.to_pandas(),
        "transactions": transactions.to_pandas(),
    }


def write_kaggle_files(
    out_dir: str | os.PathLike,
    n_customers: int = FULL_N_CUSTOMERS,
    fmt: Literal["csv", "parquet"] = "csv",
    seed: int = 0,
    chunk_customers: int = 100_000,
    overwrite: bool = False,
    dynamics: bool = False,
    trips: bool = False,
) -> dict[str, Path]:
    """Write customers, articles and transactions_train as Kaggle-format CSV (zero-padded
    article ids, unquoted ids and dates) or parquet, chunk by chunk; returns the paths
    (``dynamics`` and ``trips`` as in :func:`iter_chunks`).

    Existing files are kept (error) unless ``overwrite``; each file is written under a temporary
    name and renamed when complete.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        t: out_dir / f"{stem}.{fmt}"
        for t, stem in (
            ("customers", "customers"),
            ("articles", "articles"),
            ("transactions", "transactions_train"),
        )
    }
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite=True to replace it")
    world = _world(int(seed), products=check_bool("trips", trips))

    article_ids = world.articles["article_id"].to_numpy()  # not sorted: the top ids come first
    order = np.argsort(article_ids)

    def as_written(transactions: pa.Table) -> pa.Table:
        if fmt == "parquet":
            return transactions
        rows = order[
            np.searchsorted(article_ids, transactions["article_id"].to_numpy(), sorter=order)
        ]
        column = transactions.column_names.index("article_id")
        return transactions.set_column(column, "article_id", world.padded_ids.take(pa.array(rows)))

    def open_writer(path: Path, schema: pa.Schema):
        if fmt == "csv":
            return pacsv.CSVWriter(
                path, schema, write_options=pacsv.WriteOptions(quoting_style="none")
            )
        return pq.ParquetWriter(path, schema)

    tmp = {t: p.with_name(p.name + ".tmp") for t, p in paths.items()}
    writers = {}
    try:
        if fmt == "csv":
            pacsv.write_csv(
                world.articles.set_column(0, "article_id", world.padded_ids), tmp["articles"]
            )
        else:
            pq.write_table(world.articles, tmp["articles"])
        chunks = iter_chunks(n_customers, seed, chunk_customers, dynamics, trips)
        with progress_bar(None, total=n_customers, desc="H&M stand-in", unit="customer") as bar:
            for customers, transactions in chunks:
                for table, data in (
                    ("customers", customers),
                    ("transactions", as_written(transactions)),
                ):
                    if table not in writers:
                        writers[table] = open_writer(tmp[table], data.schema)
                    writers[table].write_table(data)
                bar.update(customers.num_rows)
    except BaseException:
        for writer in writers.values():
            writer.close()
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    for writer in writers.values():
        writer.close()
    for table, path in paths.items():
        os.replace(tmp[table], path)
    return paths


def synthetic_files(
    n_customers: int,
    seed: int = 0,
    dynamics: bool = False,
    root: str | os.PathLike | None = None,
    trips: bool = False,
) -> Path:
    """The folder of the stand-in's Kaggle files (parquet) for these arguments, written on first
    use under ``root`` (default ``recsim_ft.fileio.cache_root() / "hm_synthetic"``) and reused
    after: the folder's name holds the arguments and :data:`GENERATOR_VERSION` (with ``trips``,
    :data:`TRIPS_VERSION`). Written into a temporary folder first and renamed, so a kill or a
    second process never leaves it half written."""
    n_customers = check_int("n_customers", n_customers, low=1)
    root = Path(root) if root is not None else cache_root() / "hm_synthetic"
    if check_bool("dynamics", dynamics) and check_bool("trips", trips):
        raise ValueError(
            "dynamics=True and trips=True are two stand-ins (the trips have dates, drift and "
            "taste of their own): choose one"
        )
    if trips:
        name = f"trips{TRIPS_VERSION}-c{n_customers}-s{int(seed)}"
    else:
        name = f"v{GENERATOR_VERSION}-c{n_customers}-s{int(seed)}" + (
            "-dynamics" if dynamics else ""
        )
    folder = root / name
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        write_kaggle_files(
            tmp, n_customers, fmt="parquet", seed=seed, dynamics=dynamics, trips=trips
        )
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: its files are the same
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
