"""HMFashion-v0: the Kaggle loader (real sample rows, formats, cache, bad input), the calibrated
synthetic stand-in, and the paper's setting (test split, training log, rewards, relevance).

The generic env contract (checkers, spaces, seeding) is in test_env_contract.py.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recsim_ft.agents import PopularityAgent, SegmentPopularityAgent
from recsim_ft.data import InteractionLog, collect
from recsim_ft.envs.hm import data as hm_data
from recsim_ft.envs.hm import synthetic as hm_synthetic
from recsim_ft.envs.hm.data import HMDataError, load_kaggle
from recsim_ft.envs.hm.env import HMFashionEnv
from recsim_ft.envs.hm.synthetic import generate_frames, load_calibration, write_kaggle_files
from recsim_ft.evaluate import evaluate
from recsim_ft.schema import Batch

SAMPLE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hm_sample"


@pytest.fixture(scope="module")
def env() -> HMFashionEnv:
    return HMFashionEnv(n_customers=20_000, seed=0)


def _same_data(a: HMFashionEnv, b: HMFashionEnv) -> None:
    assert a.user_schema == b.user_schema and a.item_schema == b.item_schema
    np.testing.assert_array_equal(a.article_ids, b.article_ids)
    assert (a._bought != b._bought).nnz == 0
    np.testing.assert_array_equal(a._age, b._age)
    np.testing.assert_array_equal(a._user_codes, b._user_codes)


# -- the paper's setting on the synthetic stand-in -------------------------------------------------
def test_synthetic_env_says_so_and_has_the_paper_schema(env):
    assert env.synthetic and "synthetic" in HMFashionEnv.__doc__
    assert [f.name for f in env.user_schema.features] == [
        "age",
        "FN",
        "Active",
        "club_member_status",
        "fashion_news_frequency",
    ]
    assert env.user_schema.features[0].kind == "numeric"
    assert [f.name for f in env.item_schema.features] == ["prod_name"]
    assert env.n_items == 100 and env.action_space.n == 100
    assert all(f.categories[0] == "missing" for f in env.user_schema.categorical)


def test_synthetic_items_are_the_real_top_articles(env):
    cal = load_calibration()
    real_top100 = set(cal["top_article_ids"][:100])
    assert len(real_top100 & set(env.article_ids.tolist())) >= 80
    assert env.article_ids[0] == cal["top_article_ids"][0]
    names = dict(zip(cal["top_article_ids"], cal["top_article_names"], strict=False))
    for article, name in zip(env.article_ids, env.item_names, strict=True):
        if article in names:
            assert name == names[article]


def test_synthetic_customers_match_the_calibration():
    customers = generate_frames(20_000, seed=1)["customers"]
    cal = load_calibration()
    club = customers["club_member_status"].fillna("missing").value_counts(normalize=True)
    for label, share in cal["customer_shares"]["club_member_status"].items():
        assert club.get(label, 0.0) == pytest.approx(share, abs=0.01)
    assert customers["FN"].notna().mean() == pytest.approx(
        cal["customer_shares"]["FN"]["1"], abs=0.015
    )
    assert customers["age"].isna().mean() == pytest.approx(
        cal["age_bucket_shares"]["missing"], abs=0.005
    )
    age = customers["age"].dropna()
    assert age.mean() == pytest.approx(36.4, abs=1.0)
    counts = age.value_counts()
    assert counts[24] > counts[38] < counts[51]  # bimodal: a dip between the peaks


def test_purchases_depend_on_user_features(env):
    """Young and older customers buy the top items in different proportions (as on the real
    data)."""
    users = env._users(np.arange(len(env._age)))
    bought = env.relevant(users)
    young, older = users.numeric[:, 0] < 30, users.numeric[:, 0] >= 45
    table = np.stack([bought[young].sum(axis=0), bought[older].sum(axis=0)])
    table = table[:, table.min(axis=0) > 0]
    assert stats.chi2_contingency(table).pvalue < 1e-6


def test_synthetic_data_is_seeded():
    a, b = generate_frames(3000, seed=1), generate_frames(3000, seed=1)
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table])
    other = generate_frames(3000, seed=0)
    assert not a["customers"]["customer_id"].equals(other["customers"]["customer_id"])


def test_test_users_are_held_out_and_have_enough_purchases(env):
    test = env.test_users(100, seed=3)
    assert len(test) == 100 and len(set(test.ids.tolist())) == 100
    assert (env.relevant(test).sum(axis=1) >= 5).all()
    np.testing.assert_array_equal(env.test_users(100, seed=3).ids, test.ids)
    assert not np.array_equal(env.test_users(100, seed=4).ids, test.ids)
    rng = np.random.default_rng(0)
    trained = set(env.sample_users(50_000, rng).ids.tolist()) | set(
        env.sample_log(50_000, rng)[0].ids.tolist()
    )
    assert not trained & set(env._test_pool.tolist())
    with pytest.raises(ValueError, match="test pool holds"):
        env.test_users(len(env._test_pool) + 1)


def test_customers_are_every_customer_as_the_other_accessors_give_them(env):
    everyone = env.customers()
    assert everyone.ids.tolist() == list(range(env.n_customers))
    test = env.test_users(20, seed=1)
    np.testing.assert_array_equal(everyone[test.ids].numeric, test.numeric)
    np.testing.assert_array_equal(everyone[test.ids].categorical, test.categorical)


def test_early_stoppings_users_are_never_the_users_that_score_the_run(env):
    """The customers are a finite pool, so ``validation_users(150, seed)`` holds some of
    ``test_users(100, other_seed)``; ``selection_users`` never does."""
    for split in ("test", "validation"):
        scoring = set(env.eval_users(split, 100, seed=3).ids.tolist())
        chosen = env.selection_users(200, 7, split, 100, 3).ids
        assert len(set(chosen.tolist())) == 200 and not scoring & set(chosen.tolist())
        assert set(chosen.tolist()) <= set(env._test_pool.tolist())
        np.testing.assert_array_equal(env.selection_users(200, 7, split, 100, 3).ids, chosen)
    assert set(env.validation_users(150, 7).ids.tolist()) & set(env.test_users(100, 3).ids.tolist())
    with pytest.raises(ValueError, match="selection users besides 100 test users"):
        env.selection_users(len(env._test_pool), 7, "test", 100, 3)


def test_rewards_and_relevance_are_the_purchase_indicator(env):
    users = env.test_users(50, seed=0)
    expected, relevant = env.expected_reward(users), env.relevant(users)
    assert expected.shape == relevant.shape == (50, env.n_items) and relevant.dtype == bool
    np.testing.assert_array_equal(expected, relevant.astype(float))
    rows, items = np.nonzero(relevant)
    rewards = env.sample_reward(users[rows], items, np.random.default_rng(0))
    assert rewards.dtype == np.float32 and (rewards == 1).all()
    with pytest.raises(ValueError, match="unknown user id -1"):
        env.expected_reward(
            Batch.from_observations(users.observation(0, env.user_schema), env.user_schema)
        )


def test_training_log_is_half_purchases_with_documented_propensities(env):
    users, actions, propensities = env.sample_log(40_000, np.random.default_rng(1))
    rewards = env.sample_reward(users, actions, np.random.default_rng(0))
    assert rewards.mean() == pytest.approx(0.5, abs=0.02)
    bought = env._n_bought[users.ids]
    np.testing.assert_allclose(
        propensities, np.where(rewards == 1, 1 / (2 * bought), 1 / (2 * (100 - bought)))
    )
    again = env.sample_log(40_000, np.random.default_rng(1))
    np.testing.assert_array_equal(again[1], actions)
    np.testing.assert_array_equal(again[0].ids, users.ids)


def test_a_logged_event_is_dated_by_the_purchase_behind_it(tmp_path):
    """collect's H&M log has a time column: a bought article on the day the customer first
    bought it, a negative on the day of the purchase it was drawn beside; a split by date
    leaves no event after the cut, and the dates survive save and load."""
    frames = generate_frames(3_000, seed=4)
    env = HMFashionEnv(n_customers=3_000, seed=4, cache=False)
    log = collect(env, n=4_000, seed=0)
    tx = frames["transactions"]
    article_item = {a: i for i, a in enumerate(env.article_ids)}
    customer_row = {c: r for r, c in enumerate(frames["customers"]["customer_id"])}
    first = (
        tx.assign(
            user=tx["customer_id"].map(customer_row),
            item=tx["article_id"].map(article_item),
            day=pd.to_datetime(tx["t_dat"]).values.astype("datetime64[D]"),
        )
        .dropna(subset=["item"])
        .groupby(["user", "item"])["day"]
        .min()
    )
    bought = log.rewards == 1
    expected = first.loc[
        list(zip(log.users.ids[bought], log.actions[bought], strict=True))
    ].to_numpy()
    np.testing.assert_array_equal(log.times[bought], expected.astype("datetime64[D]"))
    customer_days = first.groupby(level="user").agg(["min", "max"])
    span = customer_days.loc[log.users.ids[~bought]]
    negative_days = log.times[~bought]
    assert ((negative_days >= span["min"].values) & (negative_days <= span["max"].values)).all()
    cut = np.datetime64("2020-01-01")
    before = log.select(log.times < cut)
    assert 0 < len(before) < len(log) and (before.times < cut).all()
    np.testing.assert_array_equal(before.actions, log.actions[log.times < cut])
    np.testing.assert_array_equal(before.actions, log.select(before="2020-01-01").actions)
    week = log.select(since="2020-09-16", before="2020-09-23")
    in_week = (log.times >= np.datetime64("2020-09-16")) & (log.times < np.datetime64("2020-09-23"))
    np.testing.assert_array_equal(week.users.ids, log.users.ids[in_week])
    with pytest.raises(ValueError, match="since must be a date.*'soon'"):
        log.select(since="soon")
    again = InteractionLog.load(log.save(tmp_path / "log.parquet"))
    np.testing.assert_array_equal(again.times, log.times)
    assert again.to_pandas()["time"].min() >= pd.Timestamp("2018-09-20")


ATTRIBUTES = ("product_type_name", "colour_group_name", "index_group_name", "department_no")


def test_article_attributes_are_categorical_item_features(env):
    rich = HMFashionEnv(n_customers=20_000, seed=0, item_features=ATTRIBUTES)
    assert [f.name for f in rich.item_schema.features] == list(ATTRIBUTES)
    for feature in rich.item_schema.features:
        assert feature.kind == "categorical" and feature.categories[0] == "missing"
    table = rich.item_table()
    assert table.categorical.shape == (100, len(ATTRIBUTES))
    for j, feature in enumerate(rich.item_schema.features):
        assert 0 < table.categorical[:, j].min() and table.categorical[:, j].max() < len(
            feature.categories
        )  # every top article has every attribute
    # the attributes describe the items, they do not change them: same articles, names, rewards
    np.testing.assert_array_equal(rich.article_ids, env.article_ids)
    np.testing.assert_array_equal(rich.item_names, env.item_names)
    users = env.test_users(50, seed=0)
    np.testing.assert_array_equal(rich.expected_reward(users), env.expected_reward(users))
    # the real attributes of the most purchased article (hm_stats: top_article_transactions.csv)
    first = dict(zip(ATTRIBUTES, table.categorical[0], strict=True))
    labels = {f.name: f.categories[first[f.name]] for f in rich.item_schema.features}
    assert labels["product_type_name"] == "Trousers" and labels["index_group_name"] == "Divided"
    assert labels["colour_group_name"] == "Black"
    one = HMFashionEnv(n_customers=2000, item_feature="product_group_name", n_items=20)
    assert [f.name for f in one.item_schema.features] == ["product_group_name"]


def test_the_article_id_tells_apart_articles_that_share_a_name(env):
    """Several of the 100 top articles share a prod_name (colours of one garment): a model that
    sees only it cannot tell them apart; ``article_id`` gives each article a category of its
    own, labelled with its Kaggle id."""
    names = env.item_table().categorical[:, 0]
    assert len(np.unique(names)) < env.n_items
    ids = HMFashionEnv(n_customers=20_000, seed=0, item_features=("prod_name", "article_id"))
    table, (_, article) = ids.item_table(), ids.item_schema.features
    np.testing.assert_array_equal(table.categorical[:, 0], names)
    assert article.name == "article_id" and len(article.categories) == env.n_items + 1
    assert len(np.unique(table.categorical[:, 1])) == env.n_items
    labels = np.array(article.categories)[table.categorical[:, 1]].astype(np.int64)
    np.testing.assert_array_equal(labels, env.article_ids)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"item_features": ["colour"]}, r"'colour' is not an article attribute.*'index_name'"),
        ({"item_features": "detail_desc"}, "'detail_desc' is not an article attribute"),
        ({"item_features": []}, "lists no column"),
        ({"item_features": ["index_name", "index_name"]}, "more than once"),
        ({"item_features": 3}, "a column name or a list of them"),
        ({"item_feature": "index_name", "item_features": ["prod_name", "index_name"]}, "not both"),
    ],
)
def test_bad_item_features_are_named(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        HMFashionEnv(n_customers=200, **kwargs)


def test_synthetic_articles_have_every_column_with_the_real_structure():
    cal = load_calibration()
    articles = generate_frames(200, seed=0)["articles"]
    assert tuple(articles.columns) == hm_data.ARTICLE_COLUMNS
    assert len(articles) == cal["n_articles"]
    # a product type belongs to one product group, a product (code) has one type and department,
    # a colour group sets its colour's perceived value and master as in the sample's counts
    assert articles.groupby("product_type_name")["product_group_name"].nunique().max() == 1
    per_product = articles.groupby("product_code")[["product_type_no", "department_no"]].nunique()
    assert per_product.max().max() == 1
    colours = {tuple(row[:6]) for row in cal["article_attributes"]["colours"]["counts"]}
    colour_columns = list(cal["article_attributes"]["colours"]["columns"][:6])
    assert set(articles[colour_columns].itertuples(index=False, name=None)) <= colours
    # figures calibrated on the sample of 1,000 real articles, within a stated band: the index
    # group's shares (via each type's departments) within 5 points, and missing descriptions
    counts = cal["article_attributes"]["departments"]
    departments = pd.DataFrame(counts["counts"], columns=counts["columns"])
    sample = departments.groupby("index_group_name")["articles"].sum()
    sample = sample / sample.sum()
    synthetic = articles["index_group_name"].value_counts(normalize=True)
    assert (synthetic.reindex(sample.index) - sample).abs().max() < 0.05, (synthetic, sample)
    assert articles["detail_desc"].isna().mean() < 0.02
    # the catalogue-wide product-group shares stay the full data's (hm_stats)
    groups = articles["product_group_name"].value_counts(normalize=True)
    upper = cal["product_group_shares"]["Garment Upper body"]
    assert abs(groups["Garment Upper body"] - upper) < 0.01


def test_a_missing_attribute_is_the_missing_category():
    frames = generate_frames(2000, seed=0)
    top = frames["articles"]["article_id"] == load_calibration()["top_article_ids"][0]
    frames["articles"].loc[top, "colour_group_name"] = None
    data = hm_data.process(frames, 20, ("prod_name", "colour_group_name"))
    assert data.item_categories[1][data.item_codes[0, 1]] == "missing"
    assert data.item_codes[1:, 1].min() > 0 and data.item_names[0] == "Jade HW Skinny Denim TRS"


# -- Kaggle files --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real H&M sample rows not found at {SAMPLE_DIR}")
    out = tmp_path_factory.mktemp("hm_sample")
    for source, name in (
        ("customers", "customers"),
        ("articles", "articles"),
        ("transactions", "transactions_train"),
    ):
        shutil.copy(SAMPLE_DIR / f"{source}_sample.parquet", out / f"{name}.parquet")
    return out


def test_real_sample_rows_load(sample_dir):
    env = gym.make("HMFashion-v0", data_dir=str(sample_dir), cache=False).unwrapped
    assert not env.synthetic and env.n_items == 100
    assert env.data_summary["customers"] == 4946 and env.data_summary["transactions"] == 5000
    assert env.data_summary["age_imputed"] > 0
    status = env.user_schema.features[3]
    assert status.name == "club_member_status" and "ACTIVE" in status.categories
    with pytest.raises(ValueError, match=r"min_test_purchases=5.*most any customer bought is 2"):
        env.test_users(10)
    lenient = HMFashionEnv(sample_dir, min_test_purchases=1, cache=False)
    assert (lenient.relevant(lenient.test_users(100)).sum(axis=1) >= 1).all()


def _write_kaggle_csv(frames: dict[str, pd.DataFrame], out: Path, suffix: str = ".csv") -> Path:
    """Frames as Kaggle writes them: article ids zero-padded to 10 digits."""
    out.mkdir(parents=True, exist_ok=True)
    for table, stem in (
        ("customers", "customers"),
        ("articles", "articles"),
        ("transactions", "transactions_train"),
    ):
        frame = frames[table].copy()
        if "article_id" in frame:
            frame["article_id"] = frame["article_id"].map("{:010d}".format)
        frame.to_csv(out / f"{stem}{suffix}", index=False)
    return out


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_and_parquet_give_the_same_env(sample_dir, tmp_path, suffix):
    frames = {
        t: pd.read_parquet(SAMPLE_DIR / f"{t}_sample.parquet")
        for t in ("customers", "articles", "transactions")
    }
    csv_dir = _write_kaggle_csv(frames, tmp_path / "csv", suffix)
    kwargs = {"min_test_purchases": 1, "cache": False}
    _same_data(HMFashionEnv(csv_dir, **kwargs), HMFashionEnv(sample_dir, **kwargs))


def test_written_full_format_files_load_like_the_frames(tmp_path):
    paths = write_kaggle_files(tmp_path, n_customers=1500, fmt="csv", seed=2)
    line = paths["transactions"].open().readlines()[1].strip().split(",")
    assert len(line[0]) == 10 and line[0][4] == "-"  # YYYY-MM-DD
    assert len(line[1]) == 64 and int(line[1], 16) >= 0
    assert len(line[2]) == 10 and line[2].startswith("0")
    from_files = HMFashionEnv(tmp_path, cache=False, seed=2, n_items=30, min_test_purchases=2)
    _same_data(from_files, HMFashionEnv(n_customers=1500, seed=2, n_items=30, min_test_purchases=2))
    with pytest.raises(FileExistsError):
        write_kaggle_files(tmp_path, n_customers=10, fmt="csv", seed=2)


# -- cache ---------------------------------------------------------------------------------------
def test_the_synthetic_stand_in_is_written_once_and_read_back_like_the_frames(
    tmp_path, monkeypatch
):
    """With the cache (the default) the stand-in's files go to parquet once, under cache_dir,
    and the env built from them is the one built in memory; the second env reuses the files."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    in_memory = HMFashionEnv(n_customers=1500, seed=2, n_items=30, cache=False)
    first = HMFashionEnv(n_customers=1500, seed=2, n_items=30)
    _same_data(first, in_memory)
    (folder,) = (tmp_path / "home-cache" / "recsim_ft" / "hm_synthetic").iterdir()
    assert folder.name == f"v{hm_synthetic.GENERATOR_VERSION}-c1500-s2"
    written = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}
    assert set(written) == {"customers.parquet", "articles.parquet", "transactions_train.parquet"}
    _same_data(HMFashionEnv(n_customers=1500, seed=2, n_items=30), in_memory)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")} == written
    elsewhere = HMFashionEnv(n_customers=1500, seed=2, n_items=30, cache_dir=tmp_path / "mine")
    _same_data(elsewhere, in_memory)
    assert (tmp_path / "mine" / folder.name / "transactions_train.parquet").exists()


def test_cache_is_reused_and_invalidated(sample_dir, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    shutil.copytree(sample_dir, data_dir)
    first = load_kaggle(data_dir)
    assert len(list((data_dir / ".recsim_ft_cache").iterdir())) == 1

    def no_processing(*args, **kwargs):
        raise AssertionError("processed again although the cache is valid")

    monkeypatch.setattr(hm_data, "process", no_processing)
    cached = load_kaggle(data_dir)
    np.testing.assert_array_equal(cached.purchases, first.purchases)
    np.testing.assert_array_equal(cached.purchase_days, first.purchase_days)
    np.testing.assert_array_equal(cached.user_codes, first.user_codes)
    assert (
        cached.user_categories == first.user_categories
        and cached.item_categories == first.item_categories
    )
    with pytest.raises(AssertionError, match="processed again"):
        load_kaggle(data_dir, n_items=50)  # other parameters: other key
    with pytest.raises(AssertionError, match="processed again"):
        load_kaggle(data_dir, item_features=ATTRIBUTES)
    monkeypatch.undo()
    rich = load_kaggle(data_dir, item_features=ATTRIBUTES)
    monkeypatch.setattr(hm_data, "process", no_processing)
    again = load_kaggle(data_dir, item_features=ATTRIBUTES)
    np.testing.assert_array_equal(again.item_codes, rich.item_codes)
    assert again.item_codes.shape == (100, len(ATTRIBUTES)) and again.item_features == ATTRIBUTES
    assert again.item_categories == rich.item_categories and again.item_names == rich.item_names
    monkeypatch.undo()
    (data_dir / "customers.parquet").touch()  # a changed file: new key
    load_kaggle(data_dir)
    assert len(list((data_dir / ".recsim_ft_cache").iterdir())) == 3


def test_real_articles_give_their_attributes_and_a_missing_column_is_named(sample_dir, tmp_path):
    env = HMFashionEnv(sample_dir, item_features=ATTRIBUTES, min_test_purchases=1, cache=False)
    real = pd.read_parquet(sample_dir / "articles.parquet").set_index("article_id")
    table = env.item_table()
    for j, feature in enumerate(env.item_schema.features):
        labels = np.array(feature.categories, dtype=object)[table.categorical[:, j]]
        expected = real.loc[env.article_ids, feature.name].astype(str).to_numpy()
        np.testing.assert_array_equal(labels, expected)
    data_dir = tmp_path / "data"
    shutil.copytree(sample_dir, data_dir)
    articles = pd.read_parquet(data_dir / "articles.parquet").drop(columns="colour_group_name")
    articles.to_parquet(data_dir / "articles.parquet")
    with pytest.raises(HMDataError, match="articles.parquet.*'colour_group_name'.*item_features"):
        HMFashionEnv(data_dir, item_features=ATTRIBUTES, cache=False)
    HMFashionEnv(data_dir, min_test_purchases=1, cache=False)  # prod_name alone still loads


def test_an_unwritable_cache_leaves_the_synthetic_stand_in_in_memory(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="could not write the synthetic H&M files"):
        env = HMFashionEnv(n_customers=1500, seed=2, n_items=30, cache_dir=blocker / "cache")
    _same_data(env, HMFashionEnv(n_customers=1500, seed=2, n_items=30, cache=False))


def test_unwritable_cache_warns_and_loads(sample_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="could not write the H&M cache"):
        data = load_kaggle(sample_dir, cache_dir=blocker / "cache")
    assert data.n_items == 100


# -- bad input -----------------------------------------------------------------------------------
TINY = {
    "customers": "customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code\n"
    "c1,1.0,1.0,ACTIVE,Regularly,25,p\nc2,,,ACTIVE,NONE,,p\nc3,,,,,61,p\n",
    "articles": "article_id,product_code,prod_name\n0100000001,100000,Tee\n0100000002,100000,Tee\n"
    "0200000001,200000,Jeans\n",
    "transactions_train": "t_dat,customer_id,article_id,price,sales_channel_id\n"
    "2020-01-01,c1,0100000001,0.1,2\n2020-01-01,c1,0200000001,0.1,2\n"
    "2020-01-02,c2,0100000001,0.1,1\n2020-01-02,c3,0100000002,0.1,1\n",
}


def _tiny(tmp_path: Path, **changes: str) -> Path:
    for stem, text in {**TINY, **changes}.items():
        (tmp_path / f"{stem}.csv").write_text(text)
    return tmp_path


def test_tiny_valid_files(tmp_path):
    env = HMFashionEnv(
        _tiny(tmp_path), n_items=3, min_test_purchases=2, test_fraction=0.5, cache=False
    )
    assert env.article_ids.tolist() == [100000001, 100000002, 200000001]  # 2 buys, then ties by id
    assert env.user_schema.features[1].categories == ("missing", "1")
    assert env.data_summary["age_imputed"] == 1 and env._age[1] == 43.0  # median of 25 and 61
    np.testing.assert_array_equal(
        env.relevant(env._users(np.arange(3))).astype(int), [[1, 0, 1], [1, 0, 0], [0, 1, 0]]
    )


@pytest.mark.parametrize(
    "changes, file, pattern",
    [
        (
            {"customers": TINY["customers"].replace("age,", "years,")},
            "customers.csv",
            "no column 'age'",
        ),
        (
            {"customers": TINY["customers"].replace(",25,", ",young,")},
            "customers.csv",
            "column 'age'",
        ),
        (
            {"transactions_train": TINY["transactions_train"].replace("0200000001", "x2")},
            "transactions_train.csv",
            "column 'article_id'",
        ),
        (
            {"customers": TINY["customers"].replace("c3,", "c1,")},
            "customers.csv",
            "column 'customer_id': duplicate id 'c1'",
        ),
        (
            {"articles": TINY["articles"].replace("0200000001", "0100000002")},
            "articles.csv",
            "column 'article_id': duplicate id 100000002",
        ),
        (
            {"customers": TINY["customers"].replace("age,", "years,").replace("FN,", "fn,")},
            "customers.csv",
            "no columns 'age', 'FN' ",
        ),
        ({"customers": ""}, "customers.csv", "is empty"),
        ({"articles": "article_id,product_code,prod_name\n"}, "articles.csv", "has no rows"),
        (
            {"transactions_train": TINY["transactions_train"][:-12]},
            "transactions_train.csv",
            "truncated",
        ),
        (
            {"transactions_train": TINY["transactions_train"].replace("t_dat,", "date,")},
            "transactions_train.csv",
            "no column 't_dat'",
        ),
        (
            {"transactions_train": TINY["transactions_train"].replace("2020-01-02", "2020-13-02")},
            "transactions_train.csv",
            "column 't_dat'",
        ),
        (
            {"transactions_train": TINY["transactions_train"].replace("2020-01-02,c2", ",c2")},
            "transactions_train.csv",
            "column 't_dat': missing values",
        ),
    ],
)
def test_bad_csv_input_names_file_and_column(tmp_path, changes, file, pattern):
    with pytest.raises(HMDataError, match=pattern) as error:
        HMFashionEnv(_tiny(tmp_path, **changes), n_items=3, cache=False)
    assert file in str(error.value)


def test_a_purchase_keeps_the_day_it_was_first_made(tmp_path):
    """The same article bought again later, and earlier rows listed after later ones: each
    distinct (customer, item) purchase keeps its earliest t_dat."""
    rows = TINY["transactions_train"] + (
        "2020-03-05,c1,0100000001,0.1,2\n2019-12-24,c1,0200000001,0.1,2\n"
    )
    data = hm_data.process(
        hm_data.find_kaggle_files(_tiny(tmp_path, transactions_train=rows)), n_items=3
    )
    days = dict(
        zip(map(tuple, data.purchases.tolist()), data.purchase_days.astype(str), strict=True)
    )
    assert days == {  # items: Tee 0100000001 (3 rows), Jeans (2), Tee 0100000002 (1)
        (0, 0): "2020-01-01",  # c1's Tee: 2020-01-01 and 2020-03-05
        (0, 1): "2019-12-24",  # c1's Jeans: the later-listed earlier day
        (1, 0): "2020-01-02",
        (2, 2): "2020-01-02",
    }


def test_the_whole_catalogue_as_items_never_bought_articles_last(tmp_path):
    """n_items=None (or "all"): every article of articles.csv, the never-bought ones last by id;
    more items than the catalogue holds is refused naming both numbers."""
    only_two = TINY["transactions_train"].replace("0100000002", "0100000001")
    data_dir = _tiny(tmp_path, transactions_train=only_two)
    for n_items in (None, "all", 3):
        env = HMFashionEnv(data_dir, n_items=n_items, min_test_purchases=1, cache=False)
        assert env.article_ids.tolist() == [100000001, 200000001, 100000002]
        assert not env.relevant(env._users(np.arange(3)))[:, 2].any()  # never bought
    with pytest.raises(HMDataError, match=r"n_items=4 but .*articles.csv lists 3 articles"):
        HMFashionEnv(data_dir, n_items=4, cache=False)
    with pytest.raises(ValueError, match="n_items must be a positive integer or 'all'"):
        HMFashionEnv(data_dir, n_items="every", cache=False)


def test_the_whole_synthetic_catalogue_collects_trains_and_evaluates():
    from recsim_ft.agents import TwoTowerAgent
    from recsim_ft.data import collect
    from recsim_ft.evaluate import evaluate
    from recsim_ft.train import TrainConfig

    cal = load_calibration()
    env = HMFashionEnv(n_customers=3000, n_items=None, item_features=ATTRIBUTES)
    assert env.n_items == cal["n_articles"] == len(set(env.article_ids.tolist()))
    assert env.item_table().categorical.shape == (cal["n_articles"], len(ATTRIBUTES))
    bought = np.asarray(env._bought.sum(axis=0)).ravel() > 0
    assert bought[: bought.sum()].all() and not bought[bought.sum() :].any()  # never bought last
    log = collect(env, n=2_000, seed=0)
    assert log.n_items == cal["n_articles"] and log.actions.max() < cal["n_articles"]
    config = TrainConfig(steps=5, loss="softmax", batch_size=64, eval_every=None, eval_users=20)
    agent = TwoTowerAgent(env, "mlp", "quick", config).fit(log, progress=False)
    metrics = evaluate(agent, env, n_users=20)
    assert metrics["n_users"] == 20 and 0 <= metrics["MAP@12"] <= 1


# -- transactions naming customers or articles missing from their files ---------------------------
#: c8 and c9 are not in customers.csv, article 0300000001 is not in articles.csv: 4 rows name them
GAPS = {
    "transactions_train": TINY["transactions_train"]
    + "2020-01-03,c9,0100000001,0.1,2\n2020-01-03,c8,0100000002,0.1,2\n"
    "2020-01-04,c9,0300000001,0.1,1\n2020-01-04,c1,0300000001,0.1,1\n"
}
DROPPED = (
    "dropped 4 of 8 transaction rows naming 2 customers missing from the customers file "
    "and 1 article missing from the articles file"
)


def test_unknown_ids_are_dropped_by_default_and_counted(tmp_path):
    kwargs = {"n_items": 3, "min_test_purchases": 2, "cache": False}
    with pytest.warns(UserWarning, match=DROPPED):
        env = gym.make("HMFashion-v0", data_dir=str(_tiny(tmp_path, **GAPS)), **kwargs).unwrapped
    summary = env.data_summary
    assert (summary["dropped_transactions"], summary["transactions"]) == (4, 4)
    assert (summary["unknown_customers"], summary["unknown_articles"]) == (2, 1)
    (tmp_path / "clean").mkdir()
    _same_data(env, HMFashionEnv(_tiny(tmp_path / "clean"), **kwargs))  # as if never there


def test_strict_mode_names_the_first_unknown_ids_and_counts(tmp_path):
    with pytest.raises(HMDataError) as error:
        gym.make(
            "HMFashion-v0", data_dir=str(_tiny(tmp_path, **GAPS)), unknown_ids="error", cache=False
        )
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'transactions_train.csv'}: 4 rows name 2 customers ")
    assert f"missing from {tmp_path / 'customers.csv'} (first: 'c9', 'c8')" in message
    assert f"1 article missing from {tmp_path / 'articles.csv'} (first: 300000001)" in message
    assert message.endswith("pass unknown_ids='drop' to drop those rows")
    with pytest.raises(ValueError, match="unknown_ids must be one of \\('drop', 'error'\\)"):
        HMFashionEnv(tmp_path, unknown_ids="skip")


def test_a_cached_load_reports_the_dropped_rows_and_strict_mode_is_cached_apart(tmp_path):
    data_dir = _tiny(tmp_path, **GAPS)
    for _ in range(2):  # processed, then read from the cache
        with pytest.warns(UserWarning, match=DROPPED):
            data = load_kaggle(data_dir, n_items=3)
        assert (data.dropped_transactions, data.unknown_customers, data.unknown_articles) == (
            4,
            2,
            1,
        )
    assert len(list((data_dir / ".recsim_ft_cache").iterdir())) == 1
    with pytest.raises(HMDataError, match="4 rows name 2 customers"):
        load_kaggle(data_dir, n_items=3, unknown_ids="error")


def test_no_known_transaction_left_is_an_error(tmp_path):
    only_unknown = "t_dat,customer_id,article_id,price\n2020-01-01,c9,0100000001,0.1\n"
    with pytest.raises(HMDataError, match="no transaction names a known customer and article"):
        HMFashionEnv(_tiny(tmp_path, transactions_train=only_unknown), n_items=1, cache=False)


def test_real_sample_rows_with_customers_missing(sample_dir, tmp_path):
    """Real rows as a subset of the Kaggle files gives them: a tenth of the customers gone."""
    data_dir = tmp_path / "subset"
    shutil.copytree(sample_dir, data_dir)
    customers = pd.read_parquet(data_dir / "customers.parquet")
    kept = customers.iloc[::10]
    kept.to_parquet(data_dir / "customers.parquet")
    transactions = pd.read_parquet(data_dir / "transactions_train.parquet")
    unknown = ~transactions["customer_id"].isin(kept["customer_id"])
    kwargs = {"n_items": 5, "min_test_purchases": 1, "cache": False}
    with pytest.warns(UserWarning, match=f"dropped {unknown.sum():,} of 5,000 transaction rows"):
        env = HMFashionEnv(data_dir, **kwargs)
    assert env.data_summary["unknown_customers"] == transactions["customer_id"][unknown].nunique()
    assert env.data_summary["transactions"] == (~unknown).sum() and env.data_summary[
        "customers"
    ] == len(kept)
    first = transactions["customer_id"][unknown].iloc[0]
    with pytest.raises(HMDataError, match=f"first: '{first}'"):
        HMFashionEnv(data_dir, unknown_ids="error", **kwargs)


def test_missing_file_is_named(tmp_path):
    _tiny(tmp_path)
    (tmp_path / "articles.csv").unlink()
    with pytest.raises(
        HMDataError, match="no articles file.*articles.parquet, articles.csv, articles.csv.gz"
    ):
        HMFashionEnv(tmp_path, cache=False)
    with pytest.raises(HMDataError, match="not a directory"):
        HMFashionEnv(tmp_path / "nowhere", cache=False)


def test_bad_parquet_input_names_file_and_column(sample_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(sample_dir, bad)
    customers = pd.read_parquet(bad / "customers.parquet")
    customers["age"] = "unknown"
    customers.to_parquet(bad / "customers.parquet")
    with pytest.raises(HMDataError, match=r"customers.parquet, column 'age': cannot read"):
        HMFashionEnv(bad, cache=False)
    data = (sample_dir / "customers.parquet").read_bytes()
    (bad / "customers.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(HMDataError, match=r"customers.parquet: not a valid parquet file"):
        HMFashionEnv(bad, cache=False)
    (bad / "customers.parquet").write_bytes(b"")
    with pytest.raises(HMDataError, match=r"customers.parquet"):
        HMFashionEnv(bad, cache=False)


def test_bad_parameters():
    with pytest.raises(ValueError, match="min_test_purchases"):
        HMFashionEnv(n_customers=100, min_test_purchases=0)
    with pytest.raises(ValueError, match="test_fraction"):
        HMFashionEnv(n_customers=100, test_fraction=1.0)
    with pytest.raises(ValueError, match="n_customers"):
        HMFashionEnv(n_customers=0)


def test_the_generators_truth_ranks_best(env):
    """scripts/hm_ceiling.py's Bayes-optimal ranking (the generator's purchase probability given
    the customer's segment) is what its doc says: above segment popularity by share, which is
    above popularity, on the test users; its probabilities are a distribution per segment."""
    spec = importlib.util.spec_from_file_location(
        "hm_ceiling", Path(__file__).resolve().parents[1] / "scripts" / "hm_ceiling.py"
    )
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    truth = ceiling._Truth(env)
    assert truth.p.shape[1] == env.n_items and len(truth.segment) == len(env._age)
    np.testing.assert_array_less(truth.p.sum(axis=1), 1.0 + 1e-9)  # 100 of 105,542 articles
    log = collect(env, n=40_000, seed=0)
    agents = [
        truth,
        SegmentPopularityAgent(env, by="positive_share").fit(log),
        PopularityAgent(env, by="positive_share").fit(log),
    ]
    maps = [
        evaluate(a, env, n_users=len(env._test_pool), seed=0, metrics=["MAP@12"])["MAP@12"]
        for a in agents
    ]
    assert maps[0] > maps[1] > maps[2], maps


def test_map_at_12_is_computable(env):
    from recsim_ft.agents import OracleAgent, RandomAgent
    from recsim_ft.evaluate import evaluate

    oracle = evaluate(OracleAgent(env), env, n_users=100, seed=0)
    assert (
        oracle["MAP@12"] == pytest.approx(1.0)
        and oracle["HR@1"] == 1.0
        and oracle["n_excluded"] == 0
    )
    random = evaluate(RandomAgent(env, seed=0), env, n_users=100, seed=0)
    assert 0.0 < random["MAP@12"] < 0.5


def test_user_features_predict_held_out_purchases(env):
    """Ranking by the purchase rate of training customers of the same age decade, club status and
    FN beats overall popularity on the test users: the synthetic data has something to learn."""
    from recsim_ft.metrics import ranking_metrics

    def segment(users: Batch) -> np.ndarray:
        return (
            np.minimum(users.numeric[:, 0] // 10, 6).astype(int) * 100
            + users.categorical[:, 2] * 10
            + users.categorical[:, 0]
        )

    train = env.sample_users(100_000, np.random.default_rng(0))
    test = env.test_users(env.data_summary["test_pool"])
    bought = env.relevant(train).astype(float)
    popularity = bought.mean(axis=0)
    by_segment = {s: bought[segment(train) == s].mean(axis=0) for s in np.unique(segment(train))}
    segment_scores = np.stack([by_segment.get(s, popularity) for s in segment(test)])
    relevant = env.relevant(test)
    overall = ranking_metrics(
        np.tile(popularity, (len(test), 1)), relevant, ks=(5,), metrics=("P",)
    )["P@5"]
    personal = ranking_metrics(segment_scores, relevant, ks=(5,), metrics=("P",))["P@5"]
    assert personal > overall + 0.05
