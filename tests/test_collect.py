"""The collector and the interaction log: contents, seeding, parquet storage, bad files."""

from __future__ import annotations

import json
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from toy_env import ToyEnv  # noqa: F401  (registers ToyRec-v0)

from recsim_ft.data import InteractionLog, collect
from recsim_ft.data.log import METADATA_KEY


@pytest.fixture(scope="module")
def env():
    return gym.make("ToyRec-v0", n_items=12, n_groups=3)


@pytest.fixture(scope="module")
def log(env):
    return collect(env, n=5_000, seed=3)


def test_log_holds_users_actions_rewards_and_provenance(env, log):
    assert len(log) == 5_000
    assert (
        log.env_id == "ToyRec-v0"
        and log.env_kwargs == {"n_items": 12, "n_groups": 3}
        and log.seed == 3
    )
    assert (
        log.user_schema == env.unwrapped.user_schema
        and log.item_schema == env.unwrapped.item_schema
    )
    assert log.actions.dtype == np.int64 and log.rewards.dtype == np.float32
    # the toy env's item feature is the item index
    np.testing.assert_array_equal(log.items.categorical[:, 0], log.actions)
    np.testing.assert_allclose(log.propensities, 1 / 12)  # the default behaviour policy is uniform
    assert np.bincount(log.actions, minlength=12).min() > 300
    # rewards follow the env's reward model: their mean is the expected reward of the logged pairs
    expected = env.unwrapped.expected_reward(log.users)[np.arange(len(log)), log.actions]
    assert abs(log.rewards.mean() - expected.mean()) < 0.02
    # the log rebuilds its env
    assert gym.make(log.env_id, **log.env_kwargs).unwrapped.n_items == 12


def test_to_pandas_has_one_column_per_feature(log):
    df = log.to_pandas()
    assert list(df.columns) == [
        "user.activity",
        "user.group",
        "item.item",
        "action",
        "reward",
        "propensity",
        "user_id",
    ]
    assert len(df) == len(log)
    np.testing.assert_array_equal(df["user.group"], log.users.categorical[:, 0])
    np.testing.assert_array_equal(df["user_id"], log.users.ids)


def test_same_seed_same_log_and_same_file_bytes(env, log, tmp_path):
    again = collect(env, n=5_000, seed=3)
    a, b = log.save(tmp_path / "a.parquet"), again.save(tmp_path / "b.parquet")
    assert a.read_bytes() == b.read_bytes()
    other = collect(env, n=5_000, seed=4)
    assert not np.array_equal(other.actions, log.actions)


def test_save_load_round_trip(log, tmp_path):
    path = log.save(tmp_path / "sub" / "log.parquet")
    loaded = InteractionLog.load(path)
    assert loaded.to_pandas().equals(log.to_pandas())
    for name in ("env_id", "env_kwargs", "seed", "user_schema", "item_schema"):
        assert getattr(loaded, name) == getattr(log, name)
    np.testing.assert_array_equal(loaded.item_table.categorical, log.item_table.categorical)
    assert [p.name for p in path.parent.iterdir()] == [
        "log.parquet"
    ]  # no temporary file left behind


def test_save_refuses_to_overwrite(env, log, tmp_path):
    path = log.save(tmp_path / "log.parquet")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="log.parquet"):
        collect(env, n=100, seed=9).save(path)
    assert path.read_bytes() == before
    collect(env, n=100, seed=9).save(path, overwrite=True)
    assert len(InteractionLog.load(path)) == 100


def test_custom_policy_with_and_without_propensities(env):
    def always_first(users, rng):
        return np.zeros(len(users), dtype=np.int64)

    log = collect(env, n=200, policy=always_first, seed=0)
    assert (log.actions == 0).all() and np.isnan(log.propensities).all()

    def coin(users, rng):
        return rng.integers(0, 2, len(users)), np.full(len(users), 0.5)

    log = collect(env, n=200, policy=coin, seed=0)
    assert set(np.unique(log.actions)) == {0, 1} and (log.propensities == 0.5).all()

    with pytest.raises(ValueError, match="policy's actions must be 200 integers"):
        collect(env, n=200, policy=lambda users, rng: np.zeros(3, dtype=np.int64), seed=0)
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        collect(env, n=200, policy=lambda users, rng: np.full(len(users), 12), seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        collect(env, n=0)
    # propensities that are no probabilities are refused when logged, not by an estimator later
    for bad in (0.0, -0.5, 7.0):

        def claims(users, rng, p=bad):
            return np.zeros(len(users), dtype=np.int64), np.full(len(users), p)

        with pytest.raises(ValueError, match=f"probabilities in \\(0, 1\\].*{bad!r}"):
            collect(env, n=50, policy=claims, seed=0)
    slates = gym.make("Spotify-v0", slate_size=2)

    def slate_claims(users, rng):
        n = len(users)
        return np.tile([0, 1], (n, 1)), np.full((n, 2), 0.5), np.full(n, 1.5)

    with pytest.raises(ValueError, match="slate_propensities must be probabilities.*1.5"):
        collect(slates, n=20, policy=slate_claims, seed=0)


def _rewrite(path, out, table=None, metadata=None):
    table = pq.read_table(path) if table is None else table
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    if metadata is not None:
        meta.update(metadata)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()}), out)
    return out


def test_load_rejects_files_that_are_not_logs(log, tmp_path):
    path = log.save(tmp_path / "log.parquet")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        InteractionLog.load(tmp_path / "nope.parquet")

    text = tmp_path / "notes.parquet"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.parquet.*not a readable parquet"):
        InteractionLog.load(text)

    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.parquet"):
        InteractionLog.load(truncated)

    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), plain)
    with pytest.raises(ValueError, match="plain.parquet.*not a recsim-ft interaction log"):
        InteractionLog.load(plain)

    future = _rewrite(path, tmp_path / "future.parquet", metadata={"version": 99})
    with pytest.raises(ValueError, match="future.parquet.*version 99"):
        InteractionLog.load(future)

    table = pq.read_table(path)
    no_reward = _rewrite(path, tmp_path / "no_reward.parquet", table.drop_columns(["reward"]))
    with pytest.raises(ValueError, match="no_reward.parquet.*missing columns \\['reward'\\]"):
        InteractionLog.load(no_reward)

    texty = table.set_column(
        table.column_names.index("action"), "action", pa.array([str(a) for a in log.actions])
    )
    with pytest.raises(ValueError, match="'action' has type string"):
        InteractionLog.load(_rewrite(path, tmp_path / "texty.parquet", texty))

    out_of_range = table.set_column(
        table.column_names.index("action"), "action", pa.array(log.actions + 100)
    )
    with pytest.raises(
        ValueError, match=r"out_of_range.parquet.*actions must be item indices in \[0, 12\)"
    ):
        InteractionLog.load(_rewrite(path, tmp_path / "out_of_range.parquet", out_of_range))


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("Spotify-v0", {}),
        (
            "VaccineMessaging-v0",
            {"clusters": 5, "messages": 20, "n_users": 2_000, "item_features": "embedding"},
        ),
    ],
)
def test_real_envs_round_trip(env_id, kwargs, tmp_path):
    env = gym.make(env_id, **kwargs)
    log = collect(env, n=1_000, seed=0)
    path = log.save(tmp_path / "log.parquet")
    # item features are stored once, in the metadata, not per row
    assert not any(name.startswith("item.") for name in pq.read_schema(path).names)
    loaded = InteractionLog.load(path)
    assert loaded.to_pandas().equals(log.to_pandas())
    assert (loaded.env_id, loaded.env_kwargs) == (env_id, kwargs)
    rebuilt = gym.make(loaded.env_id, **loaded.env_kwargs).unwrapped
    np.testing.assert_array_equal(rebuilt.item_table().numeric, loaded.item_table.numeric)


def test_dates_are_a_column_of_their_own_and_select_splits_by_them(log, tmp_path):
    days = np.datetime64("2020-01-01") + np.arange(len(log)) % 30
    dated = replace(log, times=days)
    path = dated.save(tmp_path / "dated.parquet")
    schema = pq.read_schema(path)
    assert schema.field("time").type == pa.date32()
    assert json.loads(schema.metadata[METADATA_KEY])["version"] == 3
    plain = pq.read_schema(log.save(tmp_path / "plain.parquet"))
    assert json.loads(plain.metadata[METADATA_KEY])["version"] == 2 and "time" not in plain.names
    loaded = InteractionLog.load(path)
    np.testing.assert_array_equal(loaded.times, days)
    assert loaded.content_digest() == dated.content_digest() != log.content_digest()
    assert loaded.to_pandas()["time"].iloc[31] == np.datetime64("2020-01-02")

    cut = days < np.datetime64("2020-01-10")
    early = loaded.select(cut)
    assert len(early) == cut.sum() and (early.times < np.datetime64("2020-01-10")).all()
    np.testing.assert_array_equal(early.users.ids, log.users.ids[cut])
    np.testing.assert_array_equal(early.rewards, log.rewards[cut])
    picked = log.select(np.array([3, 1]))
    np.testing.assert_array_equal(picked.actions, log.actions[[3, 1]])
    assert picked.times is None and picked.env_kwargs == log.env_kwargs


def test_bad_dates_and_selections_are_refused(env, log, tmp_path):
    with pytest.raises(ValueError, match="times has missing dates"):
        replace(log, times=np.full(len(log), np.datetime64("NaT"), "datetime64[D]"))
    with pytest.raises(ValueError, match="times must be .* dates"):
        replace(log, times=np.arange(len(log)))
    with pytest.raises(ValueError, match="row mask must have shape"):
        log.select(np.ones(3, bool))
    with pytest.raises(ValueError, match="boolean mask or 1-d integer indices, got float64"):
        log.select(np.array([0.5]))
    for row in (len(log), -len(log) - 1):
        with pytest.raises(ValueError, match=f"row {row} is out of range for a log of {len(log)}"):
            log.select([0, row])
    assert len(log.select([])) == 0 == len(log.select(np.zeros(len(log), bool)))
    assert log.select([-1]).actions[0] == log.actions[-1]
    with pytest.warns(UserWarning, match="all 0 or 1.*read as row indices.*astype\\(bool\\)"):
        log.select((log.rewards > 0).astype(int))
    with pytest.raises(
        ValueError, match=r"select\(before='2020-09-16'\) needs a dated log.*no dates"
    ):
        log.select(before="2020-09-16")
    slates = collect(gym.make("Spotify-v0", slate_size=2), n=10, seed=0)
    with pytest.raises(ValueError, match="slate log"):
        slates.select(np.arange(2))
    path = log.save(tmp_path / "log.parquet")
    table = pq.read_table(path).append_column("time", pa.array(np.arange(len(log))))
    with pytest.raises(ValueError, match="bad_time.parquet.*'time' has type int64, expected dates"):
        InteractionLog.load(_rewrite(path, tmp_path / "bad_time.parquet", table))
