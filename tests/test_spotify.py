"""Spotify-v0: the reward rule against the raw shared data, the packaged asset, options, seeding
and bad input."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.envs.spotify import SpotifyEnv, load_spotify_asset
from recsim_ft.protocol import protocol_for
from recsim_ft.schema import Batch

REPO = Path(__file__).resolve().parents[1]
RAW = REPO.parent / "shared" / "data" / "spotify"
ASSETS = REPO / "recsim_ft" / "assets"
AUDIO = [
    "acousticness",
    "danceability",
    "energy",
    "instrumentalness",
    "liveness",
    "loudness",
    "mode",
    "speechiness",
    "tempo",
    "valence",
]

needs_raw = pytest.mark.skipif(
    not RAW.is_dir(), reason="raw Spotify data (../shared/data/spotify) absent"
)


@pytest.fixture(scope="module")
def env() -> SpotifyEnv:
    return SpotifyEnv()


@pytest.fixture(scope="module")
def raw_affinity() -> np.ndarray:
    """R recomputed from the raw CSVs exactly as the data README states it, without the package."""
    genres = sorted(pd.read_csv(RAW / "spotify_genres.csv")["genre"])
    genre_matrix = np.stack(
        [pd.read_csv(RAW / "playlists" / f"{g}.csv")[AUDIO].mean() for g in genres]
    )
    songs = pd.read_csv(RAW / "playlists" / "top50.csv")[AUDIO].to_numpy()
    return (genre_matrix - genre_matrix.mean(axis=0)) @ (songs - songs.mean(axis=0)).T


def _build_script():
    spec = importlib.util.spec_from_file_location(
        "build_spotify_asset", REPO / "scripts" / "build_spotify_asset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the rule, recomputed from the raw data --------------------------------------------------------
@needs_raw
def test_labels_match_the_readme_rule_on_raw_data(env, raw_affinity):
    users = env.sample_users(100_000, np.random.default_rng(0))
    preference = users.numeric.astype(np.float64) @ raw_affinity
    labels = np.where(preference > 0.1, 1, np.where(preference < -0.1, -1, 0))
    np.testing.assert_array_equal(env.expected_reward(users), labels)
    np.testing.assert_array_equal(env.relevant(users), labels == 1)

    # the figures the data README reports for 100,000 users
    liked = (labels == 1).sum(axis=1)
    assert abs(liked.mean() - 14.2) <= 0.3
    shares = [(labels == v).mean() for v in (-1, 0, 1)]
    np.testing.assert_allclose(shares, [0.29, 0.42, 0.28], atol=0.015)
    assert abs((liked == 0).mean() - 0.034) <= 0.005


@needs_raw
def test_packaged_asset_equals_what_the_raw_csvs_give():
    asset = load_spotify_asset()
    rebuilt = _build_script().build_asset(RAW)
    assert set(rebuilt) == set(asset)
    for key, value in rebuilt.items():
        np.testing.assert_array_equal(np.asarray(asset[key]), np.asarray(value), err_msg=key)
    # G is the playlist means and spotify_features.csv states the same numbers
    stated = pd.read_csv(RAW / "spotify_features.csv", index_col=0)
    np.testing.assert_allclose(
        asset["genre_matrix"], stated.loc[asset["genres"]].to_numpy(), atol=1e-12
    )
    top50 = pd.read_csv(RAW / "spotify_top50.csv")
    assert asset["titles"] == list(top50["name"]) and asset["artists"] == list(top50["artist"])
    assert (ASSETS / "spotify_LICENSE.txt").read_text() == (RAW / "LICENSE").read_text()
    assert "Copyright (c) 2022 Anton Dereventsov" in (ASSETS / "spotify_LICENSE.txt").read_text()
    assert "sukiboo/policy_entropy" in (ASSETS / "spotify_PROVENANCE.md").read_text()


@needs_raw
def test_build_script_writes_the_asset_and_refuses_to_overwrite(tmp_path):
    script = _build_script()
    script.main(["--src", str(RAW), "--out", str(tmp_path)])
    assert json.loads((tmp_path / "spotify.json").read_text()) == json.loads(
        (ASSETS / "spotify.json").read_text()
    )
    before = (tmp_path / "spotify.json").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        script.main(["--src", str(RAW), "--out", str(tmp_path)])
    assert (tmp_path / "spotify.json").read_bytes() == before
    script.main(["--src", str(RAW), "--out", str(tmp_path), "--overwrite"])
    assert (tmp_path / "spotify.json").read_bytes() == before  # same input, same bytes


@needs_raw
def test_build_script_names_bad_source_files(tmp_path):
    script = _build_script()
    src = tmp_path / "spotify"
    shutil.copytree(RAW, src)
    for path in src.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    stated = pd.read_csv(src / "spotify_features.csv")
    stated.loc[0, "Energy"] += 0.01
    stated.to_csv(src / "spotify_features.csv", index=False)
    with pytest.raises(ValueError, match="spotify_features.csv"):
        script.build_asset(src)

    shutil.copyfile(RAW / "spotify_features.csv", src / "spotify_features.csv")
    jazz = pd.read_csv(RAW / "playlists" / "jazz.csv", index_col=0)
    jazz.drop(columns="tempo").to_csv(src / "playlists" / "jazz.csv")
    with pytest.raises(ValueError, match=r"jazz\.csv.*tempo"):
        script.build_asset(src)
    jazz.to_csv(src / "playlists" / "jazz.csv")
    script.build_asset(src)  # repaired sources build again
    (src / "spotify_top50.csv").unlink()
    with pytest.raises(FileNotFoundError, match="spotify_top50.csv"):
        script.build_asset(src)


# -- users, items, rewards -------------------------------------------------------------------------
def test_users_like_one_to_four_genres_and_ids_are_their_genre_masks(env):
    users = env.sample_users(20_000, np.random.default_rng(1))
    assert set(np.unique(users.numeric)) <= {0.0, 1.0}
    counts = users.numeric.sum(axis=1).astype(int)
    # floor(s * 20) with s ~ U(0.05, 0.25): 1, 2, 3, 4 genres, a quarter each
    np.testing.assert_allclose(np.bincount(counts, minlength=5)[1:5] / len(users), 0.25, atol=0.02)
    masks = (users.numeric.astype(np.int64) * (1 << np.arange(20))).sum(axis=1)
    np.testing.assert_array_equal(users.ids, masks)
    # every genre is liked equally often (drawn uniformly without replacement)
    np.testing.assert_allclose(users.numeric.mean(axis=0), counts.mean() / 20, atol=0.01)


def test_genre_fraction_sets_the_number_of_liked_genres():
    everyone = SpotifyEnv(genre_fraction=(1.0, 1.0)).sample_users(10, np.random.default_rng(0))
    assert (everyone.numeric == 1).all() and (everyone.ids == 2**20 - 1).all()
    nobody_env = SpotifyEnv(genre_fraction=(0.0, 0.0))
    nobody = nobody_env.sample_users(10, np.random.default_rng(0))
    assert (nobody.numeric == 0).all()
    assert (nobody_env.expected_reward(nobody) == 0).all() and not nobody_env.relevant(nobody).any()
    counts = (
        SpotifyEnv(genre_fraction=(0.5, 0.6))
        .sample_users(1000, np.random.default_rng(0))
        .numeric.sum(axis=1)
    )
    assert counts.min() >= 10 and counts.max() <= 12


def test_threshold_is_the_indifference_band(env):
    users = env.sample_users(2000, np.random.default_rng(2))
    preference = users.numeric.astype(np.float64) @ env.affinity
    zero_band = SpotifyEnv(threshold=0.0).expected_reward(users)
    np.testing.assert_array_equal(zero_band, np.sign(preference))
    wide = SpotifyEnv(threshold=0.5).expected_reward(users)
    assert (wide != 0).sum() < (env.expected_reward(users) != 0).sum() < (zero_band != 0).sum()
    # a wider band only turns likes and dislikes into indifference, never flips them
    assert ((wide == 0) | (wide == env.expected_reward(users))).all()


def test_reward_is_the_deterministic_label(env):
    rng = np.random.default_rng(3)
    users = env.sample_users(5000, rng)
    items = rng.integers(0, env.n_items, size=len(users))
    rewards = env.sample_reward(users, items, np.random.default_rng(0))
    assert rewards.dtype == np.float32
    np.testing.assert_array_equal(rewards, env.expected_reward(users)[np.arange(len(users)), items])
    np.testing.assert_array_equal(
        rewards, env.sample_reward(users, items, np.random.default_rng(99))
    )
    np.testing.assert_array_equal(env.relevant(users), env.expected_reward(users) == 1)


def test_step_returns_the_label_of_the_song():
    env = gym.make("Spotify-v0")
    obs, info = env.reset(seed=5)
    user = Batch.from_observations(obs, env.unwrapped.user_schema)
    labels = env.unwrapped.expected_reward(user)[0]
    song = int(np.argmax(labels))
    _, reward, terminated, truncated, step_info = env.step(song)
    assert reward == labels[song] == step_info["expected_reward"]
    assert terminated and not truncated and step_info["user_id"] == info["user_id"]


@pytest.mark.parametrize(
    ("option", "n_numeric", "n_categorical"), [("rank", 0, 1), ("audio", 10, 0), ("both", 10, 1)]
)
def test_item_features_options(option, n_numeric, n_categorical):
    env = SpotifyEnv(item_features=option)
    table = env.item_table()
    assert (table.numeric.shape, table.categorical.shape) == ((50, n_numeric), (50, n_categorical))
    np.testing.assert_array_equal(table.ids, np.arange(50))
    env.item_schema.validate(table, "item table")
    if n_categorical:
        np.testing.assert_array_equal(table.categorical[:, 0], np.arange(50))
        rank = env.item_schema.categorical[0]
        assert rank.name == "rank" and rank.categories[1] == f"{env.titles[1]} - {env.artists[1]}"
    if n_numeric:
        assert [f.name for f in env.item_schema.numeric] == AUDIO
        np.testing.assert_allclose(table.numeric, load_spotify_asset()["top50_matrix"], rtol=1e-6)
    # the reward does not depend on how items are described
    users = env.sample_users(50, np.random.default_rng(0))
    np.testing.assert_array_equal(env.expected_reward(users), SpotifyEnv().expected_reward(users))


def test_user_schema_names_the_genres(env):
    assert [f.name for f in env.user_schema.features] == list(env.genres)
    assert env.genres == tuple(sorted(env.genres)) and len(env.genres) == 20
    assert env.user_schema.n_categorical == 0
    assert protocol_for(env).lr == 1e-4 and env.reward_bounds == (-1.0, 1.0)


# -- seeding ---------------------------------------------------------------------------------------
def test_same_seed_same_users_and_episodes(env):
    a = env.sample_users(1000, np.random.default_rng(7))
    b = env.sample_users(1000, np.random.default_rng(7))
    c = env.sample_users(1000, np.random.default_rng(8))
    np.testing.assert_array_equal(a.numeric, b.numeric)
    assert not np.array_equal(a.numeric, c.numeric)
    np.testing.assert_array_equal(env.test_users(100, seed=3).ids, env.test_users(100, seed=3).ids)

    first, second = gym.make("Spotify-v0"), gym.make("Spotify-v0")
    trajectory = [
        first.reset(seed=11)[1]["user_id"],
        *[first.reset()[1]["user_id"] for _ in range(5)],
    ]
    replay = [
        second.reset(seed=11)[1]["user_id"],
        *[second.reset()[1]["user_id"] for _ in range(5)],
    ]
    assert trajectory == replay and len(set(trajectory)) > 1


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"threshold": -0.1}, "-0.1"),
        ({"threshold": float("nan")}, "nan"),
        ({"threshold": "0.1"}, "'0.1'"),
        ({"threshold": None}, "None"),
        ({"genre_fraction": (0.3, 0.2)}, "(0.3, 0.2)"),
        ({"genre_fraction": (-0.1, 0.2)}, "(-0.1, 0.2)"),
        ({"genre_fraction": (0.1, 1.5)}, "(0.1, 1.5)"),
        ({"genre_fraction": 0.2}, "0.2"),
        ({"genre_fraction": (0.1, 0.2, 0.3)}, "(0.1, 0.2, 0.3)"),
        ({"item_features": "genre"}, "'genre'"),
        ({"horizon": 0}, "0"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, shown):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name}.*{re.escape(shown)}"):
        SpotifyEnv(**kwargs)
    with pytest.raises(ValueError, match=re.escape(shown)):
        gym.make("Spotify-v0", **kwargs)


def test_bad_users_and_actions_raise(env):
    users = env.sample_users(3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="numeric columns"):
        env.expected_reward(Batch(users.numeric[:, :5], users.categorical, users.ids))
    with pytest.raises(ValueError, match="item indices"):
        env.sample_reward(users, np.array([0, 1, 50]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="one item per user"):
        env.sample_reward(users, np.array([0, 1]), np.random.default_rng(0))


def test_reference_rankers_reach_the_reference_figures(env):
    """The Spotify rule's reference points on 100,000 users: the perfect ranker and ranking by how
    many users like each song (both exclude users who like nothing)."""
    from recsim_ft.metrics import ranking_metrics

    users = env.sample_users(100_000, np.random.default_rng(0))
    relevant = env.relevant(users)
    perfect = ranking_metrics(env.expected_reward(users), relevant, metrics=("P", "R", "HR"))
    assert abs(perfect["n_excluded"] / len(users) - 0.034) <= 0.005
    for key, value in {
        "P@5": 0.983,
        "R@5": 0.404,
        "P@10": 0.933,
        "R@10": 0.706,
        "HR@1": 1.0,
    }.items():
        assert abs(perfect[key] - value) <= 0.01, key
    popularity = np.broadcast_to(relevant.mean(axis=0), relevant.shape)
    popular = ranking_metrics(popularity, relevant, metrics=("P", "HR"))
    for key, value in {"HR@1": 0.41, "HR@5": 0.96, "HR@10": 0.99, "P@5": 0.39}.items():
        assert abs(popular[key] - value) <= 0.01, key
