"""The dated synthetic H&M stand-in (``dynamics=True``, ``HMFashion-v0(synthetic_dynamics=True)``):
dates in the span and after each article's release, drift, new articles, repurchases and taste,
each measured (``recsim_ft.envs.hm.measures``) against the stand-in without them."""

from __future__ import annotations

import pandas as pd
import pytest

from recsim_ft.envs.hm import measures as hm_measures
from recsim_ft.envs.hm.env import HMFashionEnv
from recsim_ft.envs.hm.synthetic import _dynamics, generate_frames, load_calibration

N_CUSTOMERS = 5000


@pytest.fixture(scope="module")
def frames() -> dict[bool, dict[str, pd.DataFrame]]:
    return {dated: generate_frames(N_CUSTOMERS, seed=0, dynamics=dated) for dated in (False, True)}


def test_dynamics_move_dates_and_articles_never_customers_or_counts(frames):
    """The customers, the articles table and each customer's number of purchases are those of
    the stand-in without dynamics (whose rows are the default's, unchanged)."""
    plain, dated = frames[False], frames[True]
    pd.testing.assert_frame_equal(plain["customers"], dated["customers"])
    pd.testing.assert_frame_equal(plain["articles"], dated["articles"])
    pd.testing.assert_series_equal(
        plain["transactions"]["customer_id"].value_counts(sort=False),
        dated["transactions"]["customer_id"].value_counts(sort=False),
    )
    default = generate_frames(N_CUSTOMERS, seed=0)
    for table in default:
        pd.testing.assert_frame_equal(default[table], plain[table])
    again = generate_frames(N_CUSTOMERS, seed=0, dynamics=True)
    pd.testing.assert_frame_equal(again["transactions"], dated["transactions"])


def test_dates_lie_in_the_span_and_after_each_articles_release(frames):
    calibration = load_calibration()
    tx = frames[True]["transactions"]
    assert tx["t_dat"].min() >= calibration["first_day"]
    assert tx["t_dat"].max() <= calibration["last_day"]
    day = (pd.to_datetime(tx["t_dat"]) - pd.Timestamp(calibration["first_day"])).dt.days
    ids = frames[True]["articles"]["article_id"].to_numpy()
    release = _dynamics(0).release_day[pd.Index(ids).get_indexer(tx["article_id"])]
    assert (day.to_numpy() >= release).all()
    assert (release > 0).mean() > 0.5  # most articles come out during the data


def test_popularity_drifts_only_with_dynamics(frames):
    """Week-to-week rank correlation of the top 100 articles falls with the lag under drift
    (measured at 5,000 customers: 0.44 at lag 1, -0.03 at lag 26) and stays flat without (0.05,
    0.06: sampling noise only)."""
    drop = {
        dated: hm_measures.weekly_rank_correlation(f["transactions"], lag=1)
        - hm_measures.weekly_rank_correlation(f["transactions"], lag=26)
        for dated, f in frames.items()
    }
    assert drop[True] > 0.25
    assert abs(drop[False]) < 0.1


def test_new_articles_take_a_share_of_every_week(frames):
    """Share of a week's purchases of articles first sold in the 4 weeks before: 0.60 with
    dynamics, 0.44 without (at this size an article's first sale is partly chance)."""
    shares = {d: hm_measures.new_article_share(f["transactions"]) for d, f in frames.items()}
    assert shares[True] > shares[False] + 0.08


def test_repurchases_have_the_invented_share(frames):
    """12% of the purchases after a customer's first repeat an earlier article (invented: the
    statistics are silent); without dynamics repeats are chance, 0.4%."""
    shares = {d: hm_measures.repeat_share(f["transactions"]) for d, f in frames.items()}
    assert 0.08 < shares[True] < 0.14
    assert shares[False] < 0.02


def test_taste_makes_content_predict_purchases(frames):
    """Customers' purchases concentrate on their index group: mean largest share 0.57 with
    dynamics, 0.44 without (the population's mix)."""
    concentration = {
        d: hm_measures.taste_concentration(f["transactions"], f["articles"], "index_group_name")
        for d, f in frames.items()
    }
    assert concentration[True] > concentration[False] + 0.07


def test_the_env_takes_the_dated_stand_in_and_refuses_it_for_real_files(tmp_path):
    dated = HMFashionEnv(n_customers=2000, seed=0, synthetic_dynamics=True)
    plain = HMFashionEnv(n_customers=2000, seed=0)
    assert dated.synthetic and dated.synthetic_dynamics
    assert (dated._bought != plain._bought).nnz > 0
    with pytest.raises(ValueError, match="synthetic_dynamics=True shapes the synthetic"):
        HMFashionEnv(data_dir=tmp_path, synthetic_dynamics=True)


def test_a_week_without_purchases_keeps_the_lags_in_weeks():
    """Week 1 has no purchases: at lag 1 only weeks 2 -> 3 have a correlation (-0.5; the pairs
    with the empty week have none), at lag 2 only weeks 0 -> 2 (1.0). Counting the weeks that
    have rows instead would give 0.25 and -0.5."""
    days = {0: ["a", "b", "c", "a"], 2: ["a", "b", "c", "a"], 3: ["c", "b", "a", "c"]}
    rows = [
        (pd.Timestamp("2020-01-06") + pd.Timedelta(weeks=week), "x", article)
        for week, articles in days.items()
        for article in articles
    ]
    tx = pd.DataFrame(rows, columns=["t_dat", "customer_id", "article_id"])
    assert hm_measures.weekly_rank_correlation(tx, lag=1) == pytest.approx(-0.5)
    assert hm_measures.weekly_rank_correlation(tx, lag=2) == pytest.approx(1.0)
