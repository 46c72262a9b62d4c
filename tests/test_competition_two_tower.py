"""A two-tower model in the H&M competition with no env (``recsim_ft.competition.two_tower``):
trained on the transactions before the target week only, every customer and article of the
files ranked, the same trainer's seeds and checkpoints, and the ``hm-competition`` command."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsim_ft.cli import main
from recsim_ft.competition import evaluate_weeks, map_at_k, split_week
from recsim_ft.competition.two_tower import (
    TRAIN_WEEKS,
    competition_config,
    fit_two_tower,
    rank_articles,
    transactions_log,
    two_tower_strategy,
)
from recsim_ft.envs.hm.data import read_features, read_transactions
from recsim_ft.envs.hm.synthetic import generate_frames

#: small and fast: a tiny model, a few steps
CONFIG = competition_config(steps=30, batch_size=64)


@pytest.fixture(scope="module")
def frames():
    """The stand-in's files for 800 customers, its catalogue cut to the 300 articles they buy
    most (so a test embeds 300 articles, not 105,542)."""
    frames = generate_frames(800, seed=3, dynamics=True)
    top = frames["transactions"]["article_id"].value_counts().index[:300]
    return {
        "customers": frames["customers"],
        "articles": frames["articles"][frames["articles"]["article_id"].isin(top)],
        "transactions": frames["transactions"][frames["transactions"]["article_id"].isin(top)],
    }


@pytest.fixture(scope="module")
def data(frames):
    return read_transactions(frames), read_features(frames)


def test_features_are_every_customer_and_article_in_the_files_order(frames, data):
    transactions, features = data
    assert len(features.users) == len(frames["customers"]) == transactions.n_customers
    np.testing.assert_array_equal(features.article_ids, frames["articles"]["article_id"])
    assert features.users.ids.tolist() == list(range(len(features.users)))
    ages = frames["customers"]["age"].to_numpy()
    known = ~np.isnan(ages)
    np.testing.assert_array_equal(features.users.numeric[known, 0], ages[known])
    assert (features.users.numeric[~known, 0] == np.median(ages[known])).all()
    # an article's product code is a category of its own: articles of one code share it
    column = [f.name for f in features.item_schema.features].index("product_code")
    codes = features.items.categorical[:, column]
    labels = np.array(features.item_schema.features[column].categories)[codes]
    assert (labels == frames["articles"]["product_code"].astype(str).to_numpy()).all()


def test_the_log_is_every_purchase_of_the_weeks_asked_for(data):
    transactions, features = data
    log = transactions_log(transactions, features, weeks=None)
    assert len(log) == len(transactions.days) and (log.rewards == 1).all()
    np.testing.assert_array_equal(log.actions, transactions.articles)
    np.testing.assert_array_equal(log.users.ids, transactions.customers)
    assert log.n_items == transactions.n_articles
    recent = transactions_log(transactions, features, weeks=2)
    last = transactions.days.max()
    assert len(recent) == (transactions.days > last - 14).sum()
    assert recent.times.min() == np.datetime64(int(last) - 13, "D")
    assert len(transactions_log(transactions, features)) == len(
        transactions_log(transactions, features, weeks=TRAIN_WEEKS)
    )


def test_features_of_other_files_are_refused(frames, data):
    transactions, features = data
    fewer = {**frames, "articles": frames["articles"].iloc[:-1]}
    other = read_features(fewer)
    with pytest.raises(ValueError, match="features describe 299 articles and the transactions"):
        transactions_log(transactions, other)


def test_trained_on_the_weeks_before_the_target_only_and_seeded(data, tmp_path):
    transactions, features = data
    split = split_week(transactions)
    model = fit_two_tower(split.train, features, "mlp", CONFIG, None, model_preset="quick")
    again = fit_two_tower(split.train, features, "mlp", CONFIG, None, model_preset="quick")
    first = rank_articles(model, features, split.customers)
    np.testing.assert_array_equal(first, rank_articles(again, features, split.customers))
    assert first.shape == (len(split.customers), 12)
    assert ((first >= 0) & (first < transactions.n_articles)).all()
    assert (np.diff(np.sort(first, axis=1), axis=1) > 0).all()  # 12 distinct articles
    strategy = two_tower_strategy(features, "mlp", CONFIG, None, tmp_path, model_preset="quick")
    results = evaluate_weeks(transactions, {"two_tower": strategy}, weeks=2)
    assert results["MAP@12"].between(0, 1).all()
    # each target week's checkpoints in a folder named by the last day it trained on
    assert len(list(tmp_path.glob("through-*/checkpoint.pt"))) == 2
    with pytest.raises(FileExistsError, match="checkpoint.pt already exists; pass resume"):
        strategy(split.train, split.customers, 12)  # a saved run is never silently replaced
    resumed = two_tower_strategy(
        features, "mlp", CONFIG, None, tmp_path, True, model_preset="quick"
    )
    latest = map_at_k(resumed(split.train, split.customers, 12), split)
    assert latest == results["MAP@12"].iloc[0]  # the finished run resumed: the same model
    assert (
        max(
            int(np.datetime64(p.name.removeprefix("through-"), "D").astype(int))
            for p in tmp_path.iterdir()
        )
        < split.first_day
    )


def test_training_without_an_env_refuses_selection(data):
    transactions, features = data
    with pytest.raises(ValueError, match="select_metric='NDCG@10'.*no env"):
        fit_two_tower(
            transactions,
            features,
            "mlp",
            competition_config(steps=2, select_metric="NDCG@10"),
            model_preset="quick",
        )


def test_the_command_scores_the_two_tower_beside_the_rules(tmp_path, capsys):
    out = tmp_path / "comp"
    code = main(
        ["hm-competition", "--users", "800", "--weeks", "1", "--out", str(out)]
        + ["--strategies", "best_sellers", "two_tower", "two_stage", "--embedders", "mlp"]
        + ["--steps", "20", "--batch-size", "64", "--model-preset", "quick", "--train-weeks", "all"]
        + ["--recall"]
    )
    said = capsys.readouterr()
    assert code == 0, said.err
    # each stage of the learned strategies: its time and peak memory
    assert re.search(
        r"mlp two-tower through 2020-09-\d+: train: [\d.,]+ s, peak [\d,]+ MiB", said.err
    )
    assert "embed and rank" in said.err and "two-stage through" in said.err
    assert re.search(r"ranker on [\d,]+ pairs: [\d.,]+ s", said.err)
    results = pd.read_csv(out / "competition.csv")
    assert results["strategy"].tolist() == [
        "best_sellers",
        "two_tower (MLP two-tower)",
        "two_stage (MLP two-tower)",
    ]
    gains = pd.read_csv(out / "ranker_importance.csv")
    assert set(gains["strategy"]) == {"two_stage (MLP two-tower)"} and (gains["gain"] >= 0).all()
    # the two-stage's models: on the ranker's history and on every week seen
    assert len(list((out / "two_stage" / "mlp").glob("through-*/checkpoint.pt"))) == 2
    assert len(list((out / "two_tower" / "mlp").glob("through-*/checkpoint.pt"))) == 1
    # the recall of every source, the two-tower's the model the strategy trained (read back)
    recalls = pd.read_csv(out / "candidates.csv").set_index("source")
    assert list(recalls.index) == [
        "recent",
        "same_product",
        "bought_together",
        "best_sellers",
        "two_tower (MLP two-tower)",
        "union",
    ]
    assert (recalls.filter(like="recall@").diff(axis=1).iloc[:, 1:] >= 0).all().all()
    assert (recalls.loc["union", "recall@200"] >= recalls["recall@200"]).all()
    assert "| two_tower (MLP two-tower) |" in (out / "candidates.md").read_text()


def test_two_stage_learns_on_the_week_before_the_target_and_ranks_its_candidates(data):
    """The ranker's models see only the weeks before the target, its week of learning is the
    last one seen; the answer is 12 distinct articles, the same for the same seed."""
    from recsim_ft.competition.ranker import TwoStage

    transactions, features = data
    split = split_week(transactions)
    seen = []

    def fit_model(train_):
        seen.append(int(train_.days.max()))
        return fit_two_tower(train_, features, "mlp", CONFIG, None, model_preset="quick")

    ranker = TwoStage(features, fit_model, per_source=12)
    first = ranker(split.train, split.customers, 12)
    assert max(seen) < split.first_day  # never the target week
    last_seen = int(split.train.days.max())
    assert sorted(seen) == [last_seen - 7, last_seen]  # the ranker's history, then every week
    assert first.shape == (len(split.customers), 12) and (first >= 0).all()
    assert (np.diff(np.sort(first, axis=1), axis=1) > 0).all()
    (through, gains), *_ = ranker.importances.items()
    assert through == str(np.datetime64(last_seen, "D"))
    assert {"two_tower_score", "rank_two_tower", "days_since_bought"} <= set(gains.index)
    again = TwoStage(features, fit_model, per_source=12)(split.train, split.customers, 12)
    np.testing.assert_array_equal(first, again)
    rules_only = TwoStage(features)(split.train, split.customers, 12)
    assert 0 <= map_at_k(rules_only, split) <= 1
    one_week = split.train.where(split.train.days > last_seen - 7)
    with pytest.raises(ValueError, match="needs two weeks of transactions before the target"):
        TwoStage(features)(one_week, np.unique(one_week.customers), 12)


def test_wrong_input_to_the_learned_strategies_is_refused_by_name(frames, data):
    """Each was a traceback or a silent wrong answer (a negative customer row ranked the last
    customer, a float or bool prediction became an article, an id beyond the catalogue a miss)."""
    from recsim_ft.competition.candidates import recall, recall_table, same_product
    from recsim_ft.competition.ranker import TwoStage
    from recsim_ft.competition.submission import submission_frame

    transactions, features = data
    split = split_week(transactions)
    with pytest.raises(ValueError, match="loss='mse'.*purchases only.*softmax"):
        fit_two_tower(transactions, features, "mlp", competition_config(loss="mse"))
    with pytest.raises(TypeError, match="config must be a TrainConfig, got dict"):
        two_tower_strategy(features, "mlp", {"steps": 3})
    model = fit_two_tower(split.train, features, "mlp", CONFIG, None, model_preset="quick")
    for customers, message in (
        (np.array([-1]), r"customers\[0\] = -1 is not a row of the 800 customers"),
        (np.array([800]), r"customers\[0\] = 800 is not a row"),
        (np.array([1.0]), "customers must be integer rows"),
    ):
        with pytest.raises(ValueError, match=message):
            rank_articles(model, features, customers)
    rows = len(split.customers)
    with pytest.raises(ValueError, match=r"candidates\[\[0, 0\]\] = 300 is not a row of the 300"):
        recall(np.full((rows, 2), 300), split)
    with pytest.raises(ValueError, match="candidates must be integer rows.*float64"):
        recall(np.zeros((rows, 2)), split)
    with pytest.raises(ValueError, match="at lists no number"):
        recall_table({"x": np.zeros((rows, 2), np.int64)}, split, at=[])
    with pytest.raises(ValueError, match="product_codes must be one integer code per article"):
        same_product(np.full(transactions.n_articles, 0.5))
    other = read_features({**frames, "articles": frames["articles"].iloc[:-1]})
    with pytest.raises(ValueError, match="features describe 299 articles"):
        TwoStage(other)(split.train, split.customers, 12)
    with pytest.raises(TypeError, match="features must be CatalogueFeatures, got str|got str"):
        TwoStage("features")
    for dtype in (float, bool):
        with pytest.raises(ValueError, match=f"predictions must be integer rows.*{dtype.__name__}"):
            submission_frame(lambda t, c, k, d=dtype: np.zeros((len(c), k), d), transactions)
