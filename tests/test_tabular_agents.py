"""The strong baselines: any scikit-learn model, the GBDT, per-item ridge, segment popularity."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from toy_env import ToyEnv

from recsim_ft import ENV_IDS
from recsim_ft.agents import (
    GBDTAgent,
    LinearAgent,
    PopularityAgent,
    SegmentPopularityAgent,
    SklearnAgent,
)
from recsim_ft.agents.bandits import user_context
from recsim_ft.data import InteractionLog, collect
from recsim_ft.evaluate import evaluate

SMALL_ENV_KWARGS = {
    "Spotify-v0": {},
    "HMFashion-v0": {"n_customers": 3_000},
    "VaccineMessaging-v0": {"clusters": 5, "messages": 10},
}
AGENTS = {
    "gbdt": lambda env: GBDTAgent(env, max_iter=30),
    "linear": LinearAgent,
    "segment_popularity": SegmentPopularityAgent,
    "sklearn_classifier": lambda env: SklearnAgent(
        env, HistGradientBoostingClassifier(max_iter=30, random_state=0)
    ),
}


@pytest.fixture(scope="module")
def toy():
    return gym.make("ToyRec-v0")


@pytest.fixture(scope="module")
def toy_log(toy):
    return collect(toy, n=6_000, seed=0)


def with_rewards(log: InteractionLog, rewards: np.ndarray) -> InteractionLog:
    return dataclasses.replace(log, rewards=rewards)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_agent_fits_and_scores_in_every_env(env_id, name):
    env = gym.make(env_id, **SMALL_ENV_KWARGS[env_id])
    log = collect(env, n=3_000, seed=0)
    agent = AGENTS[name](env).fit(log)
    users = env.unwrapped.test_users(20, seed=1)
    scores = agent.score_items(users)
    assert scores.shape == (20, env.unwrapped.n_items) and np.isfinite(scores).all()
    again = AGENTS[name](env).fit(log).score_items(users)
    np.testing.assert_array_equal(scores, again)  # the same log and seed: the same scores
    observation, _ = env.reset(seed=0)
    assert 0 <= agent.act(observation) < env.unwrapped.n_items


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_agent_learns_the_toy_envs_groups(toy, toy_log, name):
    """ToyEnv's best items depend on the user's group: a popularity ranking misses them."""
    agent = AGENTS[name](toy).fit(toy_log)
    popularity = PopularityAgent(toy).fit(toy_log)
    hr = evaluate(agent, toy, n_users=300, seed=1)["HR@1"]
    assert hr > 0.9 > evaluate(popularity, toy, n_users=300, seed=1)["HR@1"]


def test_gbdt_depends_on_its_seed_only_through_early_stopping(toy, toy_log):
    users = toy.unwrapped.test_users(50, seed=2)

    def scores(seed):
        agent = GBDTAgent(toy, seed=seed, max_iter=40, early_stopping=True)
        return agent.fit(toy_log).score_items(users)

    first = scores(3)
    np.testing.assert_array_equal(first, scores(3))
    other = scores(4)
    assert not np.array_equal(first, other)  # another validation split for early stopping


def test_chunked_scores_equal_one_shot_scores(toy, toy_log):
    users = toy.unwrapped.test_users(37, seed=3)
    agent = GBDTAgent(toy, max_iter=30, chunk_rows=10**9).fit(toy_log)
    one_shot = agent.score_items(users)
    for chunk_rows in (1, 7, 10, 100):  # within a user's items, across users, whole users
        agent.chunk_rows = chunk_rows
        np.testing.assert_array_equal(agent.score_items(users), one_shot)
    rows = agent.rows(users[np.repeat(np.arange(37), 10)], np.tile(np.arange(10), 37))
    np.testing.assert_array_equal(one_shot.ravel(), agent.estimator_.predict(rows))


def test_sklearn_agent_rows_and_the_estimator_it_was_given(toy, toy_log):
    estimator = Ridge()
    agent = SklearnAgent(toy, estimator).fit(toy_log)
    assert agent.feature_names == ["user:activity", "user:group", "item:item", "item_index"]
    assert agent.categorical_features.tolist() == [False, True, True, True]
    assert not hasattr(estimator, "coef_")  # fit trained a clone
    users = toy.unwrapped.test_users(2, seed=0)
    rows = agent.rows(users[[0, 1]], np.array([7, 3]))
    np.testing.assert_array_equal(
        rows[:, 1:], [[users.categorical[0, 0], 7, 7], [users.categorical[1, 0], 3, 3]]
    )


def test_a_classifier_scores_by_the_probability_of_a_positive_reward():
    env = gym.make("Spotify-v0")
    log = collect(env, n=3_000, seed=0)
    agent = SklearnAgent(env, LogisticRegression(max_iter=300)).fit(log)
    assert agent.estimator_.classes_.tolist() == [0, 1]  # -1 and 0 are both "not liked"
    users = env.unwrapped.test_users(5, seed=0)
    rows = agent.rows(users[np.repeat(np.arange(5), 50)], np.tile(np.arange(50), 5))
    expected = agent.estimator_.predict_proba(rows)[:, 1].reshape(5, 50)
    np.testing.assert_allclose(agent.score_items(users), expected)


def test_gbdt_handles_catalogues_beyond_255_items():
    """More categories than the trees take: the item index gets a cross-fitted target encoding."""
    env = ToyEnv(n_items=300, n_groups=4)
    log = collect(env, n=20_000, seed=0)
    agent = GBDTAgent(env, max_iter=50).fit(log)
    assert type(agent.estimator_).__name__ == "Pipeline"
    users = env.test_users(100, seed=1)
    scores = agent.score_items(users)
    assert scores.shape == (100, 300)
    precision = evaluate(agent, env, n_users=200, seed=1, ks=(10,))["P@10"]
    popularity = PopularityAgent(env).fit(log)
    assert precision > 0.9 > evaluate(popularity, env, n_users=200, seed=1, ks=(10,))["P@10"]


def test_linear_agent_is_a_ridge_regression_per_item(toy, toy_log):
    agent = LinearAgent(toy, ridge=2.0).fit(toy_log)
    x = user_context(toy_log.users, toy.unwrapped.user_schema)
    rewards = toy_log.rewards.astype(np.float64)
    for item in (0, 5, 9):
        rows = toy_log.actions == item
        ridge = Ridge(alpha=2.0, fit_intercept=False, solver="cholesky")
        ridge.fit(x[rows], rewards[rows] - rewards.mean())
        np.testing.assert_allclose(agent.theta_[item], ridge.coef_, rtol=1e-7, atol=1e-10)


def test_segment_popularity_by_share_estimates_the_items_share_of_the_segments_positives(
    toy, toy_log
):
    agent = SegmentPopularityAgent(toy, features=["group"], prior=5.0, by="positive_share")
    agent.fit(toy_log)
    positive = toy_log.rewards > 0
    overall = np.bincount(toy_log.actions[positive], minlength=toy.unwrapped.n_items)
    np.testing.assert_allclose(agent.item_popularity_, overall / overall.sum())
    users = toy.unwrapped.test_users(50, seed=4)
    g = int(users.categorical[0, 0])
    in_group = positive & (toy_log.users.categorical[:, 0] == g)
    counts = np.bincount(toy_log.actions[in_group], minlength=toy.unwrapped.n_items)
    expected = (counts + 5.0 * agent.item_popularity_) / (in_group.sum() + 5.0)
    np.testing.assert_allclose(agent.score_items(users[:1])[0], expected)
    assert agent.score_items(users[:1]).sum() == pytest.approx(1.0)  # a distribution over items


def test_segment_popularity_backs_off_to_coarser_segments(toy, toy_log):
    agent = SegmentPopularityAgent(toy, features=["group"], prior=5.0).fit(toy_log)
    users = toy.unwrapped.test_users(200, seed=4)
    scores = agent.score_items(users)
    group = users.categorical[:, 0]
    g = int(group[0])
    in_group = toy_log.users.categorical[:, 0] == g
    for item in (0, 3):
        rows = in_group & (toy_log.actions == item)
        positives, events = (toy_log.rewards[rows] > 0).sum(), rows.sum()
        expected = (positives + 5.0 * agent.item_popularity_[item]) / (events + 5.0)
        assert scores[0, item] == pytest.approx(expected)
    # items shrink towards the popularity of all items, and a segment the log never saw keeps
    # the popularity of the whole log
    values = (toy_log.rewards > 0).astype(float)
    item = toy_log.actions == 2
    assert agent.item_popularity_[2] == pytest.approx(
        (values[item].sum() + 5.0 * values.mean()) / (item.sum() + 5.0)
    )
    others = ~in_group
    unseen = SegmentPopularityAgent(toy, features=["group"]).fit(
        dataclasses.replace(
            toy_log,
            users=toy_log.users[others],
            actions=toy_log.actions[others],
            rewards=toy_log.rewards[others],
            propensities=toy_log.propensities[others],
        )
    )
    np.testing.assert_array_equal(
        unseen.score_items(users[group == g]),
        np.tile(unseen.item_popularity_, ((group == g).sum(), 1)),
    )


def test_segment_popularity_orders_features_by_what_they_say_about_items(toy, toy_log):
    agent = SegmentPopularityAgent(toy).fit(toy_log)
    assert agent.features_ == ["group", "activity"]  # the group decides the liked items
    assert SegmentPopularityAgent(toy, max_depth=1).fit(toy_log).features_ == ["group"]


def test_agents_fit_on_slate_logs_and_act_in_sessions():
    kwargs = SMALL_ENV_KWARGS["VaccineMessaging-v0"]
    slate_env = gym.make("VaccineMessaging-v0", slate_size=3, **kwargs)
    agent = GBDTAgent(slate_env, max_iter=20).fit(collect(slate_env, n=1_000, seed=0))
    observation, _ = slate_env.reset(seed=0)
    slate = agent.recommend(observation, k=3)
    assert slate.shape == (1, 3) and slate_env.action_space.contains(slate[0])
    session_env = gym.make("VaccineMessaging-v0", session=True, **kwargs)
    plain_log = collect(gym.make("VaccineMessaging-v0", **kwargs), n=2_000, seed=0)
    agent = LinearAgent(session_env, allow_env_mismatch=True).fit(plain_log)
    observation, _ = session_env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):
        observation, _, terminated, truncated, _ = session_env.step(agent.act(observation))


# -- bad input ---------------------------------------------------------------------------------


def test_an_estimator_without_fit_or_predict_is_refused(toy, toy_log):
    with pytest.raises(TypeError, match="has no fit or predict"):
        SklearnAgent(toy, object()).fit(toy_log)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_a_log_of_another_env_or_setting_is_refused(name):
    env = gym.make("HMFashion-v0", n_customers=3_000)
    other = gym.make("HMFashion-v0", n_customers=3_000, test_fraction=0.4)
    with pytest.raises(ValueError, match="test_fraction=0.4 in the log"):
        AGENTS[name](env).fit(collect(other, n=500, seed=0))
    with pytest.raises(ValueError, match="features differ"):
        AGENTS[name](env).fit(collect(gym.make("Spotify-v0"), n=500, seed=0))


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_a_log_with_one_reward_value_is_refused(toy, toy_log, name):
    flat = with_rewards(toy_log, np.zeros(len(toy_log)))
    with pytest.raises(ValueError, match="every logged reward is 0"):
        AGENTS[name](toy).fit(flat)


def test_a_classifier_needs_both_classes(toy, toy_log):
    negative = with_rewards(toy_log, -(np.arange(len(toy_log)) % 2))  # 0 and -1: nothing liked
    with pytest.raises(ValueError, match="one class only"):
        SklearnAgent(toy, LogisticRegression()).fit(negative)
    SklearnAgent(toy, DummyRegressor()).fit(negative)  # a regressor learns from 0 and -1


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_scoring_before_fit_says_so(toy, name):
    with pytest.raises(RuntimeError, match="not fitted"):
        AGENTS[name](toy).score_items(toy.unwrapped.test_users(2, seed=0))


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        (lambda env: LinearAgent(env, ridge=0), "ridge"),
        (lambda env: SegmentPopularityAgent(env, n_bins=0), "n_bins"),
        (lambda env: SegmentPopularityAgent(env, prior=-1), "prior"),
        (lambda env: SegmentPopularityAgent(env, by="likes"), "by"),
        (lambda env: SegmentPopularityAgent(env, features=["age"]), "age"),
        (lambda env: SklearnAgent(env, Ridge(), chunk_rows=0), "chunk_rows"),
    ],
)
def test_bad_hyperparameters_are_named(toy, toy_log, agent, message):
    with pytest.raises(ValueError, match=message):
        agent(toy).fit(toy_log)


@pytest.mark.parametrize("agent_class", [GBDTAgent, SegmentPopularityAgent, LinearAgent])
def test_every_agent_refuses_users_with_a_missing_feature(agent_class):
    """Issue 45: the GBDT and segment popularity recommended to users with a NaN feature,
    while the per-item ridge refused them: one rule for all, naming the feature."""
    env = gym.make("ToyRec-v0")
    agent = agent_class(env).fit(collect(env, n=2_000, seed=0))
    users = env.unwrapped.test_users(4)
    users.numeric[2, 0] = np.nan
    name = env.unwrapped.user_schema.numeric[0].name
    with pytest.raises(ValueError, match=f"numeric feature '{name}' has NaN"):
        agent.score_items(users)
    with pytest.raises(ValueError, match=f"numeric feature '{name}' has NaN"):
        agent.recommend(users, 3)
