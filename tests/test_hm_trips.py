"""The stand-in with shopping trips (``trips=True``, ``HMFashion-v0(synthetic_trips=True)``;
issue 41): the customers and their purchase counts of the other stand-ins, a catalogue of
products in colours, and weeks that look like the real data's (``recsim_ft.envs.hm.measures``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsim_ft.envs.hm import measures
from recsim_ft.envs.hm.env import HMFashionEnv
from recsim_ft.envs.hm.synthetic import (
    generate_frames,
    load_calibration,
    synthetic_files,
    trips_model,
)

N_CUSTOMERS = 30_000


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return generate_frames(N_CUSTOMERS, seed=0, trips=True)


def test_same_customers_and_counts_as_the_other_stand_ins_and_the_same_rows_again():
    dated = generate_frames(2000, seed=0, dynamics=True)
    trips = generate_frames(2000, seed=0, trips=True)
    pd.testing.assert_frame_equal(dated["customers"], trips["customers"])
    pd.testing.assert_series_equal(
        dated["transactions"]["customer_id"].value_counts(sort=False),
        trips["transactions"]["customer_id"].value_counts(sort=False),
    )
    again = generate_frames(2000, seed=0, trips=True)
    for table in trips:
        pd.testing.assert_frame_equal(again[table], trips[table])


def test_products_come_in_colours_numbered_as_the_real_ids(frames):
    articles = frames["articles"]
    assert len(articles) == load_calibration()["n_articles"]
    assert articles["article_id"].is_unique
    products = articles["product_code"].nunique()
    assert 44_000 < products < 51_000  # real: 47,224
    assert (articles["article_id"] // 1000 == articles["product_code"]).all()
    # a product's colours share its type and department, as the real ones do
    assert articles.groupby("product_code")["product_type_no"].nunique().max() == 1
    assert articles.groupby("product_code")["department_no"].nunique().max() == 1


def test_purchases_fall_in_the_span_on_or_after_each_articles_release_week(frames):
    calibration = load_calibration()
    tx = frames["transactions"]
    assert tx["t_dat"].min() >= calibration["first_day"]
    assert tx["t_dat"].max() <= calibration["last_day"]
    model = trips_model(0)
    day = (pd.to_datetime(tx["t_dat"]) - pd.Timestamp(calibration["first_day"])).dt.days
    ids = frames["articles"]["article_id"].to_numpy()
    release = model.release_week[pd.Index(ids).get_indexer(tx["article_id"])]
    assert (model.week_of_day[day.to_numpy()] >= release).all()
    # grouped by customer, in date order
    order = tx.groupby("customer_id", sort=False)["t_dat"].apply(
        lambda d: d.is_monotonic_increasing
    )
    assert order.all()


def test_weeks_fall_in_the_real_datas_bands(frames):
    """Measured at 30,000 customers (full size in docs/hm_synthetic.md): the figures that do
    not depend on the size. (The share of articles first sold in a week does: at this size an
    article's first sale is later than its release.)"""
    figures = measures.week_figures(frames["transactions"], frames["articles"], N_CUSTOMERS)
    for measure in (
        "weekly buyers (share of customers, last 8 weeks)",
        "rows per buying customer in a week (last 8 weeks)",
        "customers without a purchase in the last 13 weeks",
        "same article again within 3 weeks",
    ):
        low, high = measures.REAL_WEEKS[measure][1]
        assert low <= figures[measure] <= high, (measure, figures[measure])
    # repurchase comes soon, and other colours of a product are bought again as well
    assert (
        figures["same article again within 1 week"]
        > 0.6 * figures["same article again within 3 weeks"]
    )
    assert (
        figures["same product code again within 3 weeks"]
        > figures["same article again within 3 weeks"]
    )
    plain = generate_frames(N_CUSTOMERS, seed=0, dynamics=True)
    dated = measures.week_figures(plain["transactions"], plain["articles"], N_CUSTOMERS)
    assert dated["rows per buying customer in a week (last 8 weeks)"] < 2.0  # the single rows


def test_baskets_hold_colours_of_one_product():
    """A trip's rows share a day: among a customer's purchases on one day, other colours of one
    product appear far more often than among the same purchases on shuffled days."""
    frames = generate_frames(5000, seed=0, trips=True)
    tx = frames["transactions"].merge(frames["articles"][["article_id", "product_code"]])

    def share_with_two_colours(tx: pd.DataFrame) -> float:
        trips = tx[["customer_id", "t_dat"]].drop_duplicates()
        pairs = tx.drop_duplicates(["customer_id", "t_dat", "article_id"])
        two = pairs[pairs.duplicated(["customer_id", "t_dat", "product_code"])]
        return len(two[["customer_id", "t_dat"]].drop_duplicates()) / len(trips)

    shuffled = tx.assign(t_dat=np.random.default_rng(0).permutation(tx["t_dat"].to_numpy()))
    assert share_with_two_colours(tx) > 3 * share_with_two_colours(shuffled)


def test_the_env_and_the_files_take_the_trips(tmp_path):
    env = HMFashionEnv(n_customers=2000, seed=0, synthetic_trips=True, cache_dir=tmp_path)
    assert env.synthetic_trips and env.data_summary["customers"] == 2000
    assert synthetic_files(2000, seed=0, root=tmp_path, trips=True).name == "trips1-c2000-s0"
    with pytest.raises(ValueError, match="synthetic_trips=True shapes the synthetic"):
        HMFashionEnv(data_dir=tmp_path, synthetic_trips=True)
    with pytest.raises(ValueError, match="two stand-ins"):
        HMFashionEnv(n_customers=2000, synthetic_trips=True, synthetic_dynamics=True)
    with pytest.raises(ValueError, match="two stand-ins"):
        generate_frames(100, dynamics=True, trips=True)
    with pytest.raises(ValueError, match="two stand-ins"):
        synthetic_files(100, dynamics=True, root=tmp_path, trips=True)
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half written


def test_the_ceiling_knows_the_generators_state_and_beats_every_rule(tmp_path, monkeypatch):
    """The replayed state is the generator's (a repeat is its source's article, a known sibling
    another colour of its source or a fallback), the expected purchases of a week add up to its
    rows, and ranking by them is far ahead of every rule (the issue's ceiling row)."""
    from recsim_ft import competition
    from recsim_ft.envs.hm import ceiling
    from recsim_ft.envs.hm.data import read_transactions

    n, last = 3000, 733
    model = trips_model(0)
    start = last - 6
    replay = ceiling._week_rows(0, n, start, last, 100_000)
    kind, article = replay["kind"], replay["article"]
    known = (replay["source_day"] >= 0) & (replay["source_day"] < start)
    repeat = (kind == ceiling.REPEAT) & known
    assert repeat.any() and (article[repeat] == replay["source_article"][repeat]).all()
    sibling = (kind == ceiling.SIBLING) & known
    source = replay["source_article"][sibling]
    same = model.product_start[article[sibling]] == model.product_start[source]
    assert 0.3 < same.mean() < 1.0  # the others fell back to a fresh article
    customers = np.unique(replay["customer"])
    week = ceiling._WeekModel(model, int(model.week_of_day[start]))
    batches = ceiling.expected_purchases(model, week, replay, start, customers)
    totals = np.concatenate([expected.sum(axis=1) for _, expected in batches])
    rows = np.bincount(np.searchsorted(customers, replay["customer"]))
    np.testing.assert_allclose(totals, rows, rtol=1e-4)

    t = read_transactions(synthetic_files(n, seed=0, root=tmp_path, trips=True))
    strategies = dict(competition.STRATEGIES, ceiling=ceiling.ceiling_strategy(0, n))
    results = competition.evaluate_weeks(t, strategies).set_index("strategy")["MAP@12"]
    assert results["ceiling"] > 1.5 * results.drop("ceiling").max()
    # one replay serves the earlier weeks: the same ranking as a replay for each week
    once = competition.evaluate_weeks(t, {"c": ceiling.ceiling_strategy(0, n)}, weeks=2)
    monkeypatch.setattr(ceiling, "REPLAY_WEEKS", 1)
    each = competition.evaluate_weeks(t, {"c": ceiling.ceiling_strategy(0, n)}, weeks=2)
    assert once["MAP@12"].tolist() == each["MAP@12"].tolist()
    wrong = ceiling.ceiling_strategy(1, n)  # another seed: another catalogue
    with pytest.raises(ValueError, match="stand-in with trips of seed 1 and 3,000 customers"):
        wrong(t, np.array([0]), 12)
    with pytest.raises(ValueError, match="these transactions have 3,000 customers and its"):
        ceiling.ceiling_strategy(0, 4000)(t, np.array([0]), 12)


def test_the_ceiling_ranks_equal_expectations_in_article_order():
    """The ceiling's fast top k (``torch.topk``) is ``recsim_ft.metrics.top_k``: equal expected
    purchases in article-row order, inside the top k and across its edge."""
    from recsim_ft.envs.hm.ceiling import _top_k
    from recsim_ft.metrics import top_k

    rng = np.random.default_rng(0)
    expected = rng.integers(0, 4, (300, 50)).astype(np.float32)  # ties everywhere
    expected[:100] += rng.random((100, 50), dtype=np.float32)  # and rows without ties
    for k in (1, 5, 12):
        np.testing.assert_array_equal(_top_k(expected, k), top_k(expected, k))
