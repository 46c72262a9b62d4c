"""A two-tower model (FT-Mamba, FT-Transformer or MLP) as a competition strategy, with no env.

It learns from the transactions a strategy sees, never the target week: every purchase is a
logged event (the customer's features, the article's attributes, the day; reward 1, repeats
kept), trained with the ``ranking`` preset's softmax over the whole catalogue (in-batch
negatives with the logQ correction, and the popularity prior) by the same trainer as
``recsim-ft train`` (checkpoints, resume, progress and seeds). Every customer asked for is then
embedded by the user tower and gets the exact top k of every article of the files
(:meth:`recsim_ft.retrieval.ItemEmbeddings.top_k`). A customer with no purchase before the
target week is ranked like any other, from their own features: the towers never read a
customer's past (``recsim_ft.envs.hm`` issue "users with a past").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recsim_ft.checks import check_choice, check_int
from recsim_ft.competition.protocol import (
    WEEK,
    K,
    check_customers,
    check_rows,
    check_transactions,
)
from recsim_ft.competition.strategies import Strategy
from recsim_ft.data import InteractionLog
from recsim_ft.envs.hm.data import CatalogueFeatures, Transactions
from recsim_ft.memory import stage
from recsim_ft.models import EMBEDDERS, TwoTower
from recsim_ft.retrieval import ItemEmbeddings, embed_rows, sharded_top_k
from recsim_ft.retrieval.sharded import BLOCK_ROWS
from recsim_ft.train import Progress, TrainConfig, train

#: what a log of the competition's transactions names as its env (it has none)
COMPETITION_LOG = "hm-competition"
#: the preset of the training (and, by default, of the towers)
PRESET = "ranking"
#: the weeks before the target week a model trains on, and its steps: chosen on a validation
#: week (the 4th before the end of the stand-in, 100,000 customers; MLP towers, MAP@12):
#: 1 week 0.0203, 2 weeks 0.0173, every week 0.0005 (the articles' sales move with the season,
#: so two years of popularity mislead the prior); 1,000 steps 0.0199 against 300 steps' 0.0203
TRAIN_WEEKS, STEPS = 1, 300


def competition_config(**changes) -> TrainConfig:
    """The ``ranking`` preset's training as the competition runs it: no evaluation or selection
    during training (their users' purchases would include the target week), batches of 1,024
    purchases, so that the in-batch softmax meets 1,023 other articles per step among the
    catalogue's 105,542 instead of the preset's 127, and :data:`STEPS` steps. ``changes`` as in
    ``TrainConfig``."""
    base = {"batch_size": 1024, "eval_every": None, "select_metric": "none", "steps": STEPS}
    return TrainConfig.from_preset(PRESET, **{**base, **changes})


def check_features(transactions: Transactions, features: CatalogueFeatures) -> None:
    """Refuse features of other files than the transactions' (another catalogue or customers)."""
    if not isinstance(features, CatalogueFeatures):
        raise TypeError(
            f"features must be CatalogueFeatures (recsim_ft.envs.hm.data.read_features), got "
            f"{type(features).__name__}"
        )
    if len(features.article_ids) != transactions.n_articles or not np.array_equal(
        features.article_ids, transactions.article_ids
    ):
        raise ValueError(
            f"the features describe {len(features.article_ids):,} articles and the transactions "
            f"name {transactions.n_articles:,} (or other ids): read both from the same files"
        )
    if len(features.users) != transactions.n_customers:
        raise ValueError(
            f"the features describe {len(features.users):,} customers and the transactions "
            f"name {transactions.n_customers:,}: read both from the same files"
        )


def transactions_log(
    transactions: Transactions, features: CatalogueFeatures, weeks: int | None = TRAIN_WEEKS
) -> InteractionLog:
    """Every transaction as a logged purchase (reward 1, dated, repeats kept; no propensity),
    its item table every article of the files; ``weeks``: only those of the last ``weeks``
    weeks of the data (``None``: all; the default, :data:`TRAIN_WEEKS`)."""
    check_transactions(transactions)
    check_features(transactions, features)
    if weeks is not None:
        first = int(transactions.days.max()) - WEEK * check_int("weeks", weeks, low=1) + 1
        transactions = transactions.where(transactions.days >= first)
    if len(transactions.days) == 0:
        raise ValueError("there are no transactions to train on")
    return InteractionLog(
        users=features.users[transactions.customers],
        actions=transactions.articles,
        rewards=np.ones(len(transactions.days), np.float32),
        propensities=np.full(len(transactions.days), np.nan),
        env_id=COMPETITION_LOG,
        env_kwargs={},
        seed=None,
        user_schema=features.user_schema,
        item_schema=features.item_schema,
        item_table=features.items,
        times=np.asarray(transactions.days).astype("datetime64[D]"),
    )


def fit_two_tower(
    transactions: Transactions,
    features: CatalogueFeatures,
    embedder: str = "mamba",
    config: TrainConfig | None = None,
    weeks: int | None = TRAIN_WEEKS,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Progress = False,
    model_preset: str = PRESET,
    address: str | None = None,
) -> TwoTower:
    """A two-tower model trained on ``transactions`` (:func:`transactions_log`), initial weights
    seeded from ``config.seed`` as ``TwoTowerAgent`` seeds them; ``config`` defaults to
    :func:`competition_config`. Checkpoints in ``out_dir``, ``resume`` as in ``train``;
    ``model_preset``: the towers' size (``recsim_ft.models.presets``); ``config.workers``: on that
    many Ray Train workers, on the cluster at ``address`` (``recsim_ft.parallel``)."""
    check_choice("embedder", embedder, EMBEDDERS)
    config = _checked_config(config)
    log = transactions_log(transactions, features, weeks)
    model = TwoTower.from_schemas(
        features.user_schema, features.item_schema, embedder, model_preset, seed=config.seed
    )
    return train(model, log, None, config, out_dir, resume, progress, address=address).model


def _checked_config(config: TrainConfig | None) -> TrainConfig:
    """``config`` (default :func:`competition_config`), refused unless it trains a softmax: a
    log of purchases has one reward, 1, from which a regression or BCE learns nothing."""
    config = competition_config() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.loss != "softmax":
        raise ValueError(
            f"loss={config.loss!r}: the competition's log is purchases only (every reward 1), "
            "which only the softmax learns from (which article, among the others); use "
            "loss='softmax'"
        )
    return config.checked()


def rank_articles(
    model: TwoTower,
    features: CatalogueFeatures,
    customers: np.ndarray,
    k: int = K,
    block: int = BLOCK_ROWS,
    workers: int | None = None,
    address: str | None = None,
    items: ItemEmbeddings | None = None,
) -> np.ndarray:
    """(n, k) article rows for ``customers`` (rows of customers.csv), best first: the exact top
    k of every article by the model's score (-1 beyond the catalogue's size); ``block``
    customers are embedded at a time. ``workers``: the blocks across that many Ray workers (on
    the cluster at ``address``, else a local runtime; ``recsim_ft.retrieval.sharded_top_k``),
    the same answer. ``items``: the model's item embeddings, when the caller has them."""
    k = check_int("k", k, low=1)
    customers = check_rows("customers", customers, len(features.users), "customers")
    n_items = len(features.items)
    ranked = min(k, n_items)
    out = np.full((len(customers), k), -1, np.int64)
    if workers is not None:
        users = features.users[customers]
        found = sharded_top_k(model, features.items, users, ranked, workers, address, block)
        out[:, :ranked] = found[0]
        return out
    if items is None:
        items = ItemEmbeddings.from_model(model, features.items, progress=None)
    for start in range(0, len(customers), check_int("block", block, low=1)):
        rows = customers[start : start + block]
        queries = embed_rows(model, features.users[rows], progress=None)
        out[start : start + len(rows), :ranked] = items.top_k(queries, ranked, progress=None)[0]
    return out


def checkpoint_folder(out_dir: str | os.PathLike, train: Transactions) -> Path:
    """The folder of the checkpoints of a model trained on ``train``, under ``out_dir``:
    ``through-<the last day of train>``, one per target week."""
    return Path(out_dir) / f"through-{np.datetime64(int(train.days.max()), 'D')}"


def two_tower_strategy(
    features: CatalogueFeatures,
    embedder: str = "mamba",
    config: TrainConfig | None = None,
    weeks: int | None = TRAIN_WEEKS,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Progress = False,
    model_preset: str = PRESET,
    workers: int | None = None,
    address: str | None = None,
) -> Strategy:
    """The two-tower model as a :data:`Strategy`: trained on the transactions it is given
    (:func:`fit_two_tower`), then :func:`rank_articles`. ``out_dir``: each target week's
    checkpoints in a folder of its own, ``through-<the last day it trains on>``; ``workers``:
    the ranking on Ray, as :func:`rank_articles` does it, on the cluster at ``address``, where
    ``config.workers`` trains. Each stage's time and
    peak memory on stderr (``recsim_ft.memory.stage``)."""
    check_choice("embedder", embedder, EMBEDDERS)
    config = _checked_config(config)

    def strategy(train_: Transactions, customers: np.ndarray, k: int) -> np.ndarray:
        customers = check_customers(customers, train_.n_customers)
        folder = None if out_dir is None else checkpoint_folder(out_dir, train_)
        through = np.datetime64(int(train_.days.max()), "D")
        with stage(f"{embedder} two-tower through {through}: train"):
            model = fit_two_tower(
                train_,
                features,
                embedder,
                config,
                weeks,
                folder,
                resume,
                progress,
                model_preset,
                address,
            )
        with stage(f"{embedder} two-tower through {through}: embed and rank {len(customers):,}"):
            return rank_articles(model, features, customers, k, workers=workers, address=address)

    return strategy
