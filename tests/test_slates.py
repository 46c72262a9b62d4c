"""Slate mode: the multinomial-logit choice with a no-choice option, rewards of the chosen item,
the uniform slate behaviour policy and its exact propensities, slate logs, the vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.data import InteractionLog, collect, to_obp
from recsim_ft.envs.base import first_occurrences


@pytest.fixture(scope="module")
def env():
    return gym.make("Spotify-v0", slate_size=3).unwrapped


def test_choice_probabilities_are_the_documented_logit(env):
    values = np.array([[1.0, 0.0, -1.0, 1.0]])
    slates = np.array([[0, 1, 2], [3, 3, 1]])
    values = np.repeat(values, 2, axis=0)
    chosen = env.choice_probabilities(values, slates)
    e = np.exp(3.0 * np.array([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(chosen[0], e / (1.0 + e.sum()))  # exp(tau q_0) = 1
    # a repeated item is shown once: slate [3, 3, 1] shows items 3 and 1
    shown = np.exp(3.0 * np.array([1.0, 0.0]))
    np.testing.assert_allclose(chosen[1], [shown[0], 0.0, shown[1]] / (1.0 + shown.sum()))
    np.testing.assert_array_equal(first_occurrences(slates), [[1, 1, 1], [1, 0, 1]])


def test_choices_and_rewards_follow_the_model(env):
    rng = np.random.default_rng(0)
    users = env.sample_users(40_000, rng)
    slates = rng.integers(0, env.n_items, size=(len(users), 3))  # repeats allowed in actions
    response = env.respond(users, slates, np.random.default_rng(1))
    values = env.expected_reward(users)
    chosen = env.choice_probabilities(values, slates)
    frequency = np.array([(response.positions == j).mean() for j in (-1, 0, 1, 2)])
    expected = np.r_[1 - chosen.sum(axis=1).mean(), chosen.mean(axis=0)]
    np.testing.assert_allclose(frequency, expected, atol=4 * np.sqrt(0.25 / len(users)))
    took = response.positions >= 0
    rows = np.flatnonzero(took)
    np.testing.assert_array_equal(response.consumed[took], slates[rows, response.positions[took]])
    np.testing.assert_array_equal(response.rewards[took], values[rows, response.consumed[took]])
    assert (response.rewards[~took] == 0).all() and (response.consumed[~took] == -1).all()
    # the slate's expected reward, as info reports it, is the mean reward
    assert abs(response.rewards.mean() - response.expected.mean()) < 0.01
    assert env.slate_expected_reward(users[:5], slates[:5]) == pytest.approx(response.expected[:5])


def test_step_reports_the_choice(env):
    env.reset(seed=2)
    _, reward, terminated, truncated, info = env.step(np.array([4, 9, 4]))
    assert terminated and not truncated
    assert info["chosen_position"] in (-1, 0, 1) and info["chosen_item"] in (-1, 4, 9)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be one slate of 3 integer item indices"):
        env.step(3)
    with pytest.raises(ValueError, match=r"\[0, 50\), got 50 at position 1"):
        env.step([1, 50, 2])


def test_uniform_slate_behaviour_policy_and_its_exact_propensities(env):
    users, slates, position_p, slate_p = env.sample_slate_log(60_000, np.random.default_rng(0))
    assert slates.shape == (60_000, 3) and len(users) == 60_000
    assert (np.sort(slates, axis=1)[:, 1:] != np.sort(slates, axis=1)[:, :-1]).all()
    np.testing.assert_array_equal(position_p, 1 / 50)
    np.testing.assert_array_equal(slate_p, 1 / (50 * 49 * 48))
    for j in range(3):  # every item equally likely at every position
        counts = np.bincount(slates[:, j], minlength=50)
        assert abs(counts / 60_000 - 1 / 50).max() < 4 * np.sqrt(0.02 / 60_000)


def test_slate_log_rows_round_trip_and_export(env, tmp_path):
    log = collect(env, n=2_000, seed=0)
    columns = log.slate_columns
    assert len(log) == 6_000 and columns.slate_size == 3
    chosen = columns.chosen.reshape(2_000, 3)
    assert (chosen.sum(axis=1) <= 1).all() and 0.3 < chosen.any(axis=1).mean() < 1
    assert (log.rewards[~columns.chosen] == 0).all()
    np.testing.assert_array_equal(log.propensities, 1 / 50)
    loaded = InteractionLog.load(log.save(tmp_path / "slates.parquet"))
    assert loaded.to_pandas().equals(log.to_pandas())
    np.testing.assert_array_equal(loaded.slate_columns.chosen, columns.chosen)
    feedback = to_obp(log)  # OBP's slate layout (tests/test_obp.py has the rest)
    assert feedback["n_rounds"] == 2_000 and feedback["position"].max() == 2
    np.testing.assert_array_equal(feedback["slate_id"], columns.slate_ids)
    np.testing.assert_allclose(feedback["pscore"], 1 / (50 * 49 * 48))


def test_a_slate_policy_of_your_own_and_bad_ones(env):
    def top_three(users, rng):
        n = len(users)
        return np.tile([0, 1, 2], (n, 1)), np.ones((n, 3)), np.ones(n)

    log = collect(env, n=100, policy=top_three, seed=0)
    assert set(log.actions) == {0, 1, 2}
    unreported = collect(env, n=10, policy=lambda u, rng: np.tile([5, 6, 7], (len(u), 1)))
    assert np.isnan(unreported.propensities).all()
    with pytest.raises(ValueError, match="the policy's slates must hold distinct items"):
        collect(env, n=10, policy=lambda u, rng: np.tile([5, 5, 7], (len(u), 1)))
    with pytest.raises(ValueError, match=r"slate_propensities must have shape \(10,\)"):
        collect(env, n=10, policy=lambda u, rng: (np.tile([5, 6, 7], (10, 1)), np.ones((10, 3)), 1))
    with pytest.raises(ValueError, match="runs sessions"):
        collect(gym.make("Spotify-v0", session=True), n=10)


def test_vector_env_steps_slates():
    envs = gym.make_vec("Spotify-v0", num_envs=4, slate_size=2)
    assert envs.action_space.shape == (4, 2)
    envs.reset(seed=0)
    _, rewards, terminated, _, infos = envs.step(np.array([[0, 1], [2, 3], [4, 4], [5, 6]]))
    assert terminated.all() and infos["_chosen_position"].all()
    took = infos["chosen_position"] >= 0
    assert (rewards[~took] == 0).all() and set(infos["chosen_item"][2:3]) <= {-1, 4}
