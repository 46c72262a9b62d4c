"""The winners' two-stage recipe as a strategy: candidates from every source
(:mod:`recsim_ft.competition.candidates`), re-ranked by LightGBM's LambdaRank (the ``rank``
extra).

The ranker learns on the last week of the transactions the strategy sees (labels: what each
customer who bought that week bought), its candidates and features computed from the weeks
before it; it then ranks the target week's candidates, computed from every week seen. So it is
never fitted on the target week, and it needs at least two weeks of transactions: one to learn
on and one before it. Features of a (customer, article) pair: its rank in each source (missing
where a source did not propose it), the two-tower model's score where there is one, the days
since the customer last bought the article and its product code and how often, the article's
sales last week, decayed (half-life 7 days) and its age since its first sale, the customer's
age and purchases (4 weeks, all), and the share of the customer's purchases in the article's
index group and product type. A customer with fewer candidates than ``k`` gets last week's best
sellers after them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from recsim_ft.checks import check_int
from recsim_ft.competition.candidates import DAYS, rule_sources
from recsim_ft.competition.protocol import WEEK, K, check_customers
from recsim_ft.competition.strategies import then_best_sellers
from recsim_ft.competition.two_tower import check_features, rank_articles
from recsim_ft.envs.hm.data import CatalogueFeatures, Transactions
from recsim_ft.memory import stage
from recsim_ft.models import TwoTower
from recsim_ft.retrieval import ItemEmbeddings, embed_rows

#: candidates each source proposes per customer
PER_SOURCE = 24
#: customers with a purchase among their candidates the ranker learns from, at most
TRAIN_CUSTOMERS = 50_000
#: the item features whose share of a customer's purchases is a feature, where present
SHARE_OF = ("index_group_name", "product_type_name")


def _lightgbm():
    try:
        import lightgbm
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the two-stage strategy re-ranks with LightGBM, from recsim-ft's 'rank' extra: "
            'pip install "recsim-ft[rank]"',
            name="lightgbm",
        ) from None
    return lightgbm


def candidate_pairs(
    history: Transactions,
    customers: np.ndarray,
    features: CatalogueFeatures,
    per_source: int,
    model: TwoTower | None = None,
    items: ItemEmbeddings | None = None,
) -> pd.DataFrame:
    """One row per distinct (customer, article) any source proposes (the rules', and the
    two-tower ``model``'s top ``per_source`` where given; ``items``: its item embeddings, when
    the caller has them), with the article's rank in each source (NaN where it did not propose
    it)."""
    proposals = {
        name: source(history, customers, per_source)
        for name, source in rule_sources(features.product_codes, DAYS).items()
    }
    if model is not None:
        proposals["two_tower"] = rank_articles(model, features, customers, per_source, items=items)
    frames = []
    for name, proposed in proposals.items():
        row, place = np.nonzero(proposed >= 0)
        frames.append(
            pd.DataFrame(
                {
                    "customer": customers[row],
                    "article": proposed[row, place],
                    f"rank_{name}": place.astype(np.float32),
                }
            ).set_index(["customer", "article"])
        )
    pairs = pd.concat(frames, axis=1).reset_index()
    return pairs.sort_values(["customer", "article"], ignore_index=True)


def _last(keys: np.ndarray, days: np.ndarray, wanted: np.ndarray) -> pd.DataFrame:
    """The last day and count of each distinct key of ``keys`` (one per transaction), indexed
    by key, for the ``wanted`` keys only."""
    keep = np.isin(keys, wanted)
    frame = pd.DataFrame({"key": keys[keep], "day": days[keep]})
    return frame.groupby("key")["day"].agg(["max", "size"])


def pair_scores(
    model: TwoTower,
    features: CatalogueFeatures,
    customers: np.ndarray,
    articles: np.ndarray,
    items: ItemEmbeddings | None = None,
) -> np.ndarray:
    """The model's score ``u . v + prior`` of each (customer, article) pair (``items``: the
    model's item embeddings, computed here when not given)."""
    items = ItemEmbeddings.from_model(model, features.items) if items is None else items
    unique, inverse = np.unique(customers, return_inverse=True)
    users = embed_rows(model, features.users[unique])
    return np.einsum("nd,nd->n", users[inverse], items.vectors[articles]) + items.prior[articles]


def pair_features(
    history: Transactions,
    pairs: pd.DataFrame,
    features: CatalogueFeatures,
    model: TwoTower | None = None,
    items: ItemEmbeddings | None = None,
) -> pd.DataFrame:
    """``pairs`` (customer, article, rank_* columns) with every feature of the module's list,
    all computed from ``history`` (the transactions before the week the pairs are for);
    ``items`` as :func:`pair_scores` takes them."""
    today = int(history.days.max()) + 1
    customer, article = pairs["customer"].to_numpy(), pairs["article"].to_numpy()
    out = pairs.copy()
    n_articles = history.n_articles
    if model is not None:
        out["two_tower_score"] = pair_scores(model, features, customer, article, items)
    # the customer and the article
    bought = _last(
        history.customers.astype(np.int64) * n_articles + history.articles,
        history.days,
        customer.astype(np.int64) * n_articles + article,
    )
    found = bought.reindex(customer.astype(np.int64) * n_articles + article)
    out["days_since_bought"] = today - found["max"].to_numpy()
    out["times_bought"] = found["size"].fillna(0).to_numpy()
    products = features.product_codes
    n_products = int(products.max()) + 1
    product_bought = _last(
        history.customers.astype(np.int64) * n_products + products[history.articles],
        history.days,
        customer.astype(np.int64) * n_products + products[article],
    )
    found = product_bought.reindex(customer.astype(np.int64) * n_products + products[article])
    out["days_since_product"] = today - found["max"].to_numpy()
    # the article
    age = today - 1 - history.days
    last_week = np.bincount(history.articles[age < WEEK], minlength=n_articles)
    decayed = np.bincount(history.articles, 0.5 ** (age / WEEK), minlength=n_articles)
    first_sale = np.full(n_articles, np.nan)
    order = np.argsort(history.days, kind="stable")[::-1]
    first_sale[history.articles[order]] = history.days[order]  # the earliest wins, set last
    out["sales_last_week"] = last_week[article]
    out["sales_decayed"] = decayed[article].astype(np.float32)
    out["article_age"] = today - first_sale[article]
    # the customer
    out["customer_age"] = features.users.numeric[customer, 0]
    recent = age < DAYS
    out["customer_purchases_4w"] = np.bincount(
        history.customers[recent], minlength=history.n_customers
    )[customer]
    all_purchases = np.bincount(history.customers, minlength=history.n_customers)
    out["customer_purchases"] = all_purchases[customer]
    names = [f.name for f in features.item_schema.features]
    for name in (n for n in SHARE_OF if n in names):
        codes = features.items.categorical[:, names.index(name)]
        n_codes = int(codes.max()) + 1
        counts = np.bincount(
            history.customers.astype(np.int64) * n_codes + codes[history.articles],
            minlength=history.n_customers * n_codes,
        )
        own = counts[customer.astype(np.int64) * n_codes + codes[article]]
        out[f"share_{name}"] = own / np.maximum(all_purchases[customer], 1)
    return out


class TwoStage:
    """The two-stage :data:`Strategy` (see the module): call it as any strategy. ``fit_model``
    (optional): ``fit_model(transactions) -> TwoTower``, a two-tower model trained on the
    transactions it is given, whose top ``per_source`` articles are a source and whose score is a
    feature; it is fitted twice per target week, on the ranker's history and on every week seen
    (e.g. :func:`recsim_ft.competition.fit_two_tower` with checkpoints of its own).
    ``importances``: the ranker's feature importance (total gain) of each call, by the last day
    it saw."""

    def __init__(
        self,
        features: CatalogueFeatures,
        fit_model: Callable[[Transactions], TwoTower] | None = None,
        per_source: int = PER_SOURCE,
        train_customers: int = TRAIN_CUSTOMERS,
        seed: int = 0,
        n_estimators: int = 200,
    ) -> None:
        _lightgbm()
        if not isinstance(features, CatalogueFeatures):
            raise TypeError(
                f"features must be CatalogueFeatures (recsim_ft.envs.hm.data.read_features), got "
                f"{type(features).__name__}"
            )
        self.features, self.fit_model = features, fit_model
        self.per_source = check_int("per_source", per_source, low=1)
        self.train_customers = check_int("train_customers", train_customers, low=1)
        self.seed = check_int("seed", seed, low=0)
        self.n_estimators = check_int("n_estimators", n_estimators, low=1)
        self.importances: dict[str, pd.Series] = {}

    def _table(self, history: Transactions, customers: np.ndarray) -> pd.DataFrame:
        through = np.datetime64(int(history.days.max()), "D")
        model = items = None
        if self.fit_model is not None:
            with stage(f"two-stage through {through}: two-tower"):
                model = self.fit_model(history)
                # once for its candidates and its scores
                items = ItemEmbeddings.from_model(model, self.features.items, progress=None)
        with stage(f"two-stage through {through}: candidates and features"):
            pairs = candidate_pairs(
                history, customers, self.features, self.per_source, model, items
            )
            return pair_features(history, pairs, self.features, model, items)

    def __call__(self, train: Transactions, customers: np.ndarray, k: int = K) -> np.ndarray:
        customers = check_customers(customers, train.n_customers)
        check_features(train, self.features)
        k = check_int("k", k, low=1)
        last = int(train.days.max())
        week = train.days > last - WEEK
        history = train.where(~week)
        if not week.any() or not (~week).any():
            raise ValueError(
                "the two-stage strategy needs two weeks of transactions before the target week "
                f"(one to train its ranker on, one before it); these span "
                f"{last - int(train.days.min()) + 1} day(s)"
            )
        learn = self._learning_table(train.where(week), history)
        ranker = _lightgbm().LGBMRanker(
            objective="lambdarank",
            n_estimators=self.n_estimators,
            learning_rate=0.05,
            num_leaves=31,
            min_child_samples=20,
            random_state=self.seed,
            deterministic=True,
            force_row_wise=True,
            n_jobs=1,
            verbose=-1,
        )
        columns = [c for c in learn.columns if c not in ("customer", "article", "label")]
        with stage(f"two-stage through {np.datetime64(last, 'D')}: ranker on {len(learn):,} pairs"):
            ranker.fit(
                learn[columns],
                learn["label"],
                group=learn.groupby("customer", sort=False).size().to_numpy(),
            )
        self.importances[str(np.datetime64(last, "D"))] = pd.Series(
            ranker.booster_.feature_importance("gain"), index=columns
        ).sort_values(ascending=False)
        table = self._table(train, customers)
        table["score"] = ranker.predict(table[columns])
        table = table.sort_values(["customer", "score", "article"], ascending=[True, False, True])
        return then_best_sellers(table, train, customers, k)

    def _learning_table(self, week: Transactions, history: Transactions) -> pd.DataFrame:
        """The ranker's examples: the candidates, from ``history``, of (up to
        ``train_customers``) customers who bought in ``week`` and have a purchase among them,
        labelled 1 where they bought the article that week."""
        buyers = np.unique(week.customers)
        table = self._table(history, buyers)
        bought = np.unique(week.customers.astype(np.int64) * week.n_articles + week.articles)
        keys = table["customer"].to_numpy().astype(np.int64) * week.n_articles + table["article"]
        table["label"] = np.isin(keys, bought).astype(np.int32)
        useful = table.groupby("customer")["label"].transform("max") > 0
        table = table[useful.to_numpy()]
        kept = np.unique(table["customer"])
        if len(kept) == 0:
            raise ValueError(
                "no customer of the ranker's week bought one of their candidates: nothing to "
                "learn from; propose more candidates per source (per_source)"
            )
        if len(kept) > self.train_customers:
            rng = np.random.default_rng(self.seed)
            kept = np.sort(rng.choice(kept, self.train_customers, replace=False))
            table = table[np.isin(table["customer"], kept)]
        return table.reset_index(drop=True)
