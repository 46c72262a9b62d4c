"""HMFashion-v0: H&M customers and the 100 most purchased articles, from the Kaggle files or a
calibrated synthetic stand-in."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from recsim_ft.checks import (
    check_actions,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_path,
)
from recsim_ft.envs.base import VALIDATION_STREAM, RecEnv
from recsim_ft.envs.hm.data import (
    UNKNOWN_IDS,
    article_schema,
    check_item_features,
    check_n_items,
    load_kaggle,
    process,
    user_side,
)
from recsim_ft.envs.hm.synthetic import generate_frames, synthetic_files
from recsim_ft.schema import Batch


class HMFashionEnv(RecEnv):
    """## Description

    The H&M setting of Starnes & Webster, "Mamba for Scalable and Efficient Personalized
    Recommendations": recommend one of the ``n_items`` (100) most purchased H&M articles to a
    customer, who is described by five features; ``n_items=None`` (or ``"all"``) makes every
    article of the catalogue an item (105,542 in the full data and the stand-in), the ones never
    bought last. Each episode is one customer (a contextual
    bandit, ``horizon`` steps). Users are real customers: ``reset`` draws one of the training
    customers, and the reward is read from what that customer actually bought. Opt-in modes
    (kwargs of this id, see ``RecEnv``): ``slate_size=k`` shows k articles of which the customer
    picks at most one; ``session=True`` is a shopping visit (see Sessions).

    **Data.** With ``data_dir``, the files of the Kaggle competition "H&M Personalized Fashion
    Recommendations" are read: ``customers``, ``articles`` and ``transactions_train``, each as
    ``.parquet``, ``.csv`` or ``.csv.gz``. The data are not shipped: they are subject to the
    competition's terms, so the user downloads them from Kaggle and points ``data_dir`` at them.
    The 31.8M transaction rows are streamed (only ``t_dat``, ``customer_id`` and
    ``article_id``), and the processed result is cached as parquet in
    ``data_dir/.recsim_ft_cache`` (or ``cache_dir``), keyed by the parameters and the files'
    sizes and mtimes, so the second load is fast.
    Transactions naming a customer missing from customers.csv, or an article missing from
    articles.csv (as in any sample or subset of the files), are dropped with a warning
    (``unknown_ids="drop"``, the default, so such files load; ``data_summary`` counts the rows,
    customers and articles dropped); ``unknown_ids="error"`` refuses them, naming the first
    unknown ids.

    **Without** ``data_dir`` the env is **synthetic** (``env.synthetic is True``): Kaggle-format
    tables for ``n_customers`` (50,000) customers are generated from ``seed`` by
    :mod:`recsim_ft.envs.hm.synthetic` and processed by the same code as the real files. They
    are calibrated to statistics of the full data (attribute shares incl. missing values,
    bimodal age, purchase counts and real names of the top articles; see
    ``recsim_ft/assets/hm_calibration.json``), and purchases of the top articles depend on the
    customer's features through an invented preference model. Numbers measured on it are not
    numbers about H&M customers. ``synthetic_dynamics=True`` adds what the real data is known
    for and the default stand-in lacks (``hm_synthetic._Dynamics``): articles released over
    time in their seasons with a sales life (weekly popularity drifts), customers' taste over
    index groups steering their purchases of the long tail (content carries signal), and
    repurchases; the default stays off, so every number of the tables holds.
    ``synthetic_trips=True`` takes the stand-in whose weeks look like the real data's
    (:mod:`recsim_ft.envs.hm.trips`: shopping trips with baskets, customers active for a while,
    repurchases soon after, products in several colours); it has its own dates, drift and taste,
    so it needs no ``synthetic_dynamics``.

    **Items.** Articles ranked by transaction rows (repeat purchases count), ties by lower
    article id; item ``i`` is the ``i``-th most purchased. Item features: the article attributes
    named by ``item_features``, each one categorical feature, in that order: by default
    ``("prod_name",)`` alone, as in the paper; any of the 23 attribute columns of articles.csv
    (``recsim_ft.envs.hm.data.ITEM_FEATURES``: ``product_code``, ``prod_name``, the product
    type and group, graphical appearance, colour group, perceived colour value and master,
    department, index, index group, section and garment group, each as number and as name, and
    ``article_id``, one category per article; not the free-text ``detail_desc``), e.g.
    ``item_features=("product_type_name", "colour_group_name", "index_group_name")``. Category
    0 of each is ``"missing"`` (an article without that attribute). Several top articles share a
    prod_name (colours of one garment), so they share a category: a model that sees only
    prod_name scores them alike (``("prod_name", "article_id")`` tells them apart).
    ``env.article_ids`` holds the Kaggle ids, ``env.item_names`` the prod_names.
    ``item_feature="x"`` (one name) is ``item_features=("x",)``.

    ## Action Space

    ``Discrete(n_items)``: the item recommended. With ``slate_size=k``:
    ``MultiDiscrete([n_items] * k)``, k articles at once.

    ## Observation Space

    A ``Dict`` with ``"numeric"``: ``Box(1,)`` float32, the customer's ``age``, and
    ``"categorical"``: ``MultiDiscrete`` of ``FN``, ``Active``, ``club_member_status`` and
    ``fashion_news_frequency``. Category 0 of each is ``"missing"``; the others are the values
    seen in the data, sorted (a whole number is labelled ``"1"`` whether the file holds the
    text ``1.0`` (CSV) or the float 1.0 (parquet)). Missing ages (1.2% of the full data) are
    replaced by the median age of all customers; how many were imputed is in
    ``env.data_summary["age_imputed"]``. With ``session=True`` the observation adds the articles
    last bought (or skipped: ``"none"``), their rewards and the step count
    (``env.observation_schema``).

    ## Rewards

    1 if the customer bought the article (any time in transactions_train), else 0; the
    expected reward is that 0/1 indicator, so ``sample_reward`` is deterministic.
    ``relevant(users)`` is the same matrix as booleans (for P/R/HR/MRR@k and Kaggle's MAP@12).
    Rewards are looked up by user id (row of the customer in customers.csv); users that do not
    carry such an id (e.g. built from observations, id -1) are rejected. With slates the
    customer picks article ``s_j`` with probability ``exp(tau q_j) / (exp(tau q_0) +
    sum_l exp(tau q_l))`` (``q`` the expected rewards, ``tau = choice_scale``,
    ``q_0 = no_choice_utility``) or none, and the reward is that of the picked article.

    ## Sessions

    With ``session=True`` an episode is a visit: one article shown per step (with slates: the
    one picked). Hidden state: the articles the customer would buy (``l_i``: those they bought
    in the data), the basket of this visit (``in_i``, and its size ``m``) and the patience left
    ``P`` (``dynamics`` keys, defaults in brackets)::

        buys article i with q_i = l_i * (1 - in_i) * d ** m       d = basket_decay (0.8)
        after a purchase:  in_i = 1, m' = m + 1
        after no purchase: P' = P - 1,   P starts at patience (3)
        leaves (terminated) when P' = 0

    No article is bought twice in a visit, every purchase makes the next one less likely (a
    budget), and each article shown but not bought uses up patience. The reward is 1 per
    purchase.

    ## Starting State

    ``reset`` draws a **training** customer uniformly from ``self.np_random``: a customer who
    bought at least one of the items and is not in the test pool. Customers who bought none of
    the items are never drawn (they hold no signal); ``data_summary`` counts them.

    **Test users.** Customers with at least ``min_test_purchases`` (5) distinct purchased items
    are eligible; a ``test_fraction`` (0.5, rounded up) of them, chosen with ``seed``, form the
    test pool, held out from ``sample_users``, ``reset`` and ``sample_log``.
    ``test_users(n, seed)`` draws ``n`` of them without replacement. If no customer qualifies
    (e.g. on a small sample of the data) ``test_users`` raises an error saying so; lower
    ``min_test_purchases``.

    **Training log** (``sample_log``, the behaviour policy of the paper): the pool of events is
    every distinct (training customer, item bought) pair with target 1, plus one per purchase
    with an item drawn uniformly among the items that customer did not buy (target 0), so
    about half are positives; ``sample_log(n, rng)`` draws ``n`` events uniformly from that pool
    (negatives drawn afresh from ``rng``). Propensity of the logged item given the customer,
    who bought ``b`` of the ``n_items`` items: ``1 / (2 b)`` for a bought item and
    ``1 / (2 (n_items - b))`` for another (a customer who bought every item has no negatives:
    ``1 / b``). Every event has a day (``sample_dated_log``; the ``time`` column of a log from
    ``collect``): the day the customer first bought that article (``t_dat``), and for a
    negative the day of the purchase it was drawn beside, so a log splits by date
    (``log.select(before="2020-09-16")``) with no event after the cut.

    ## Episode End

    ``terminated`` after ``horizon`` steps (default 1); never truncated. With ``session=True``:
    ``terminated`` when the customer runs out of patience, ``truncated`` after
    ``session_length`` steps.

    ## Arguments

    ```python
    import gymnasium as gym
    env = gym.make("HMFashion-v0")                      # synthetic stand-in
    env = gym.make("HMFashion-v0", data_dir="data/hm")  # the Kaggle files
    ```

    ``data_dir`` (None: synthetic), ``n_items`` (100; None: all), ``item_features``
    (("prod_name",)), ``min_test_purchases`` (5), ``test_fraction`` (0.5), ``seed`` (0: the
    synthetic data and the test split), ``n_customers`` (50,000; synthetic only),
    ``synthetic_dynamics`` (False; synthetic only), ``synthetic_trips`` (False; synthetic
    only), ``cache`` (True: the processed data is
    cached as parquet; the synthetic stand-in's files are also written once, as parquet, under
    ``cache_dir`` or ``~/.cache/recsim_ft/hm_synthetic``, and read back like Kaggle's, so a
    full-size stand-in is generated once per machine; False: all in memory, each time),
    ``cache_dir`` (None) and ``unknown_ids`` ("drop" or "error"; Kaggle files only),
    ``horizon`` (1), and the slate and session modes ``slate_size``, ``choice_scale``,
    ``no_choice_utility``, ``session``, ``session_length``, ``history_length``, ``dynamics``
    (``RecEnv``).

    ## Version History

    * v0: initial version; slate and session modes added as kwargs (the default env is
      unchanged, bit for bit).
    """

    session_parameters = {"basket_decay": (0.8, 0.0, 1.0), "patience": (3, 1, None)}

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        n_items: int | str | None = 100,
        item_features: str | Sequence[str] = ("prod_name",),
        item_feature: str | None = None,
        min_test_purchases: int = 5,
        test_fraction: float = 0.5,
        seed: int = 0,
        n_customers: int = 50_000,
        synthetic_dynamics: bool = False,
        synthetic_trips: bool = False,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        unknown_ids: str = "drop",
        horizon: int = 1,
        **modes: Any,
    ) -> None:
        self.data_dir = check_path("data_dir", data_dir, allow_none=True)
        n_items = check_n_items(n_items)
        if item_feature is not None:
            if item_features != ("prod_name",):
                raise ValueError(
                    f"give item_features={item_features!r} or item_feature={item_feature!r}, "
                    "not both (item_feature is the one-feature spelling)"
                )
            self.item_features = check_item_features(item_feature, "item_feature")
        else:
            self.item_features = check_item_features(item_features)
        self.min_test_purchases = check_int("min_test_purchases", min_test_purchases, low=1)
        self.test_fraction = check_float(
            "test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True
        )
        self.seed = check_int("seed", seed, low=0)
        self.n_customers = check_int("n_customers", n_customers, low=1)
        self.synthetic_dynamics = check_bool("synthetic_dynamics", synthetic_dynamics)
        self.synthetic_trips = check_bool("synthetic_trips", synthetic_trips)
        for name in ("synthetic_dynamics", "synthetic_trips"):
            if getattr(self, name) and data_dir is not None:
                raise ValueError(
                    f"{name}=True shapes the synthetic stand-in; the Kaggle files in "
                    f"data_dir={str(data_dir)!r} have their own: drop one of the two"
                )
        if self.synthetic_dynamics and self.synthetic_trips:
            raise ValueError(
                "synthetic_dynamics=True and synthetic_trips=True are two stand-ins (the trips "
                "have dates, drift and taste of their own): choose one"
            )
        self.cache = check_bool("cache", cache)
        self.cache_dir = check_path("cache_dir", cache_dir, allow_none=True)
        self.unknown_ids = check_choice("unknown_ids", unknown_ids, UNKNOWN_IDS)
        self.synthetic = data_dir is None
        if self.synthetic:
            files = self._synthetic_files() if self.cache else None
            if files is not None:  # written once (parquet), processed and cached as Kaggle's
                data = load_kaggle(files, n_items, self.item_features)
            else:
                frames = generate_frames(
                    self.n_customers, self.seed, self.synthetic_dynamics, self.synthetic_trips
                )
                data = process(frames, n_items, self.item_features)
        else:
            data = load_kaggle(
                data_dir, n_items, self.item_features, self.cache, self.cache_dir, self.unknown_ids
            )
        self.n_items = data.n_items
        self.article_ids = data.article_ids
        self.item_names = np.array(data.item_names, dtype=object)
        self._item_codes = data.item_codes

        missing_age = np.isnan(data.age)
        self._age, self.user_schema, median_age = user_side(data.age, data.user_categories)
        self._user_codes = data.user_codes
        self.item_schema = article_schema(data.item_features, data.item_categories)

        customers, items = data.purchases[:, 0], data.purchases[:, 1]
        self._bought = sparse.csr_matrix(
            (np.ones(len(customers), bool), (customers, items)),
            shape=(data.n_customers, self.n_items),
        )
        self._n_bought = np.bincount(customers, minlength=data.n_customers)
        eligible = np.flatnonzero(self._n_bought >= self.min_test_purchases)
        split = np.random.default_rng([self.seed, 2]).permutation(eligible)
        self._test_pool = np.sort(split[: int(np.ceil(self.test_fraction * len(eligible)))])
        is_test = np.zeros(data.n_customers, bool)
        is_test[self._test_pool] = True  # a lookup, not np.isin's sort of 30M rows
        self._train_purchases = data.purchases[~is_test[customers]]
        self._train_purchase_days = data.purchase_days[~is_test[customers]]
        self._train_users = np.flatnonzero((self._n_bought > 0) & ~is_test)
        with_negative = self._n_bought[self._train_purchases[:, 0]] < self.n_items
        self._negative_slots = np.flatnonzero(with_negative)
        self.data_summary = {
            "synthetic": self.synthetic,
            "customers": data.n_customers,
            "articles": data.n_articles,
            "transactions": data.n_transactions,
            "dropped_transactions": data.dropped_transactions,
            "unknown_customers": data.unknown_customers,
            "unknown_articles": data.unknown_articles,
            "age_imputed": int(missing_age.sum()),
            "median_age": median_age,
            "purchases": len(data.purchases),
            "buyers": int((self._n_bought > 0).sum()),
            "non_buyers": int((self._n_bought == 0).sum()),
            "eligible_test_users": len(eligible),
            "test_pool": len(self._test_pool),
            "train_users": len(self._train_users),
            "train_events": len(self._train_purchases) + len(self._negative_slots),
        }
        self._init_spaces(horizon, **modes)

    # -- vectorized API -------------------------------------------------------------------------
    def _synthetic_files(self) -> Path | None:
        """The folder of the stand-in's files, written on first use; None, with a warning,
        where it cannot be written (the stand-in is then generated in memory, as with
        ``cache=False``)."""
        try:
            return synthetic_files(
                self.n_customers,
                self.seed,
                self.synthetic_dynamics,
                self.cache_dir,
                trips=self.synthetic_trips,
            )
        except OSError as err:
            warnings.warn(
                f"could not write the synthetic H&M files ({err}); generating them in memory "
                "(pass cache_dir= to cache elsewhere, or cache=False)",
                stacklevel=3,
            )
            return None

    def _users(self, ids: np.ndarray) -> Batch:
        return Batch(self._age[ids, None], self._user_codes[ids], ids)

    def _user_ids(self, users: Batch) -> np.ndarray:
        ids = users.ids
        bad = (ids < 0) | (ids >= len(self._age))
        if bad.any():
            raise ValueError(
                f"unknown user id {int(ids[bad][0])}: HMFashion-v0 looks rewards up by customer "
                f"index in [0, {len(self._age)}); use users from sample_users or test_users"
            )
        return ids

    def customers(self) -> Batch:
        """Every customer as a user row, id = customer index (what serving ranks for: the
        competition predicts for every customer, test users or not)."""
        return self._users(np.arange(len(self._age)))

    def sample_users(self, n: int, rng: np.random.Generator) -> Batch:
        return self._users(rng.choice(self._train_users, size=check_int("n", n, low=0)))

    def item_table(self) -> Batch:
        return Batch(
            np.zeros((self.n_items, 0), np.float32),
            self._item_codes,
            np.arange(self.n_items),
        )

    def expected_reward(self, users: Batch) -> np.ndarray:
        return self._bought[self._user_ids(users)].toarray().astype(np.float64)

    def relevant(self, users: Batch) -> np.ndarray:
        return self._bought[self._user_ids(users)].toarray()

    def sample_reward(
        self, users: Batch, items: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        items = check_actions(items, self.n_items, len(users))
        return np.asarray(self._bought[self._user_ids(users), items], dtype=np.float32).ravel()

    def test_users(self, n: int = 100, seed: int = 0) -> Batch:
        return self._users(self._test_ids(n, seed))

    def validation_users(self, n: int = 100, seed: int = 0) -> Batch:
        """Held-out customers like ``test_users``, but never one of ``test_users(n, seed)``."""
        return self._held_out_besides(
            n, seed, self._test_ids(n, seed), f"validation users besides {n} test users", "users"
        )

    def selection_users(self, n: int, seed: int, split: str, eval_n: int, eval_seed: int) -> Batch:
        """Held-out customers besides the run's evaluation users (``eval_users(split, eval_n,
        eval_seed)``): the test pool is finite, so ``validation_users(n, seed)`` could hold some
        of them."""
        scoring = self._user_ids(self.eval_users(split, eval_n, eval_seed))
        what = f"selection users besides {eval_n} {split} users"
        return self._held_out_besides(n, seed, scoring, what, "(select_users)")

    def _held_out_besides(
        self, n: int, seed: int, besides: np.ndarray, what: str, fewer: str
    ) -> Batch:
        """``n`` customers of the test pool that are not ``besides``, drawn with ``seed``."""
        rest = np.setdiff1d(self._test_pool, besides)
        if check_int("n", n, low=0) > len(rest):
            raise ValueError(
                f"asked for {n} {what}, but the test pool holds {len(self._test_pool)} "
                f"customers; ask for fewer {fewer}"
            )
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VALIDATION_STREAM,)))
        return self._users(rng.choice(rest, size=n, replace=False))

    def _test_ids(self, n: int, seed: int) -> np.ndarray:
        if len(self._test_pool) == 0:
            most = int(self._n_bought.max()) if len(self._n_bought) else 0
            raise ValueError(
                "no test users: no customer bought >= "
                f"min_test_purchases={self.min_test_purchases} distinct items among the "
                f"{self.n_items} (the most any customer bought is {most}); "
                "pass a lower min_test_purchases"
            )
        if check_int("n", n, low=0) > len(self._test_pool):
            raise ValueError(
                f"asked for {n} test users but the test pool holds {len(self._test_pool)} "
                f"(customers with >= {self.min_test_purchases} purchases, times test_fraction)"
            )
        return np.random.default_rng(seed).choice(
            self._test_pool, size=check_int("n", n, low=0), replace=False
        )

    def sample_log(self, n: int, rng: np.random.Generator) -> tuple[Batch, np.ndarray, np.ndarray]:
        return self.sample_dated_log(n, rng)[:3]

    def sample_dated_log(
        self, n: int, rng: np.random.Generator
    ) -> tuple[Batch, np.ndarray, np.ndarray, np.ndarray]:
        n_positive = len(self._train_purchases)
        if n_positive == 0:
            raise ValueError(
                "no training purchases: every buyer is in the test pool; lower test_fraction"
            )
        events = rng.integers(
            0, n_positive + len(self._negative_slots), size=check_int("n", n, low=0)
        )
        negative = events >= n_positive
        purchase = events.copy()
        purchase[negative] = self._negative_slots[events[negative] - n_positive]
        customers, actions = (
            self._train_purchases[purchase, 0],
            self._train_purchases[purchase, 1].copy(),
        )
        todo = np.flatnonzero(negative)
        while todo.size:  # rejection: a uniform item the customer did not buy
            actions[todo] = rng.integers(0, self.n_items, size=todo.size)
            todo = todo[np.asarray(self._bought[customers[todo], actions[todo]]).ravel()]
        bought = self._n_bought[customers]
        propensity = np.where(
            negative,
            1 / (2 * np.maximum(self.n_items - bought, 1)),
            np.where(bought < self.n_items, 1 / (2 * bought), 1 / bought),
        )
        return (
            self._users(customers),
            actions,
            propensity.astype(np.float64),
            self._train_purchase_days[purchase],
        )

    # -- sessions (see the class docstring) -------------------------------------------------------
    def session_start(self, users: Batch) -> dict[str, np.ndarray]:
        n = len(users)
        return {
            "would_buy": self.relevant(users),
            "in_basket": np.zeros((n, self.n_items), bool),
            "basket": np.zeros(n, np.int64),
            "patience": np.full(n, self.dynamics["patience"], np.int64),
        }

    def session_expected_reward(self, users: Batch, state: dict[str, np.ndarray]) -> np.ndarray:
        willing = self.dynamics["basket_decay"] ** state["basket"]
        return (state["would_buy"] & ~state["in_basket"]) * willing[:, None]

    def session_advance(
        self,
        users: Batch,
        state: dict[str, np.ndarray],
        items: np.ndarray,
        rewards: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        bought = rewards > 0
        in_basket = state["in_basket"].copy()
        in_basket[np.flatnonzero(bought), items[bought]] = True
        patience = state["patience"] - ~bought
        state = {
            **state,
            "in_basket": in_basket,
            "basket": state["basket"] + bought,
            "patience": patience,
        }
        return state, (patience <= 0).astype(np.float64)

    def session_continue_probability(
        self, users: Batch, state: dict[str, np.ndarray]
    ) -> np.ndarray:
        buys = self.session_expected_reward(users, state)
        last_chance = (state["patience"] <= 1)[:, None]
        return np.where(last_chance, buys, 1.0)
