"""Off-policy estimates (IPS, SNIPS) against the true values the env knows, and the bandit table."""

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

import recsim_ft  # noqa: F401  (registers the envs)
from recsim_ft.agents import Agent, OracleAgent, PopularityAgent
from recsim_ft.data import collect, to_bandit_table
from recsim_ft.ope import ips, policy_value, snips, target_probabilities


class AntiOracleAgent(Agent):
    """Recommends the item the user likes least: a policy whose value is far below the others."""

    def score_items(self, users):
        return -self.rec_env.expected_reward(users)


@pytest.fixture(scope="module")
def env():
    return gym.make("Spotify-v0")


@pytest.fixture(scope="module")
def log(env):
    return collect(env, n=50_000, seed=0)


def agent_named(name, env):
    if name == "popularity":
        return PopularityAgent(env, by="positive_rate").fit(collect(env, n=5_000, seed=1))
    return {"oracle": OracleAgent, "anti-oracle": AntiOracleAgent}[name](env)


@pytest.mark.parametrize("name", ["oracle", "popularity", "anti-oracle"])
@pytest.mark.parametrize("estimator", [ips, snips])
def test_estimate_matches_true_value_within_a_few_standard_errors(env, log, name, estimator):
    agent = agent_named(name, env)
    estimate, truth = estimator(log, agent), policy_value(agent, env, n_users=20_000, seed=7)
    assert estimate.n == len(log) and 0 < estimate.std_error < 0.05
    assert abs(estimate.value - truth.value) < 4 * np.hypot(estimate.std_error, truth.std_error)
    assert estimate.ci_low < estimate.value < estimate.ci_high


def test_estimates_tell_good_from_bad_agents(env, log):
    values = {
        name: snips(log, agent_named(name, env)).value
        for name in ("oracle", "popularity", "anti-oracle")
    }
    assert values["oracle"] > values["popularity"] + 0.2 > values["anti-oracle"] + 0.4


def test_target_equal_to_behaviour_gives_the_logged_mean(log):
    uniform = np.full((len(log), log.n_items), 1 / log.n_items)
    for estimate in (ips(log, uniform), snips(log, uniform)):
        assert estimate.value == pytest.approx(log.rewards.mean(), abs=1e-9)
        assert estimate.effective_sample_size == pytest.approx(len(log))


def test_stochastic_target_matches_its_true_value_on_the_logged_users(env, log):
    expected = env.unwrapped.expected_reward(log.users)
    logits = 3.0 * expected
    target = np.exp(logits - logits.max(axis=1, keepdims=True))
    target /= target.sum(axis=1, keepdims=True)
    truth = (target * expected).sum(axis=1).mean()
    for estimate in (ips(log, target), snips(log, target)):
        assert abs(estimate.value - truth) < 4 * estimate.std_error


def test_snips_of_a_greedy_agent_is_the_mean_reward_where_it_agrees_with_the_log(env, log):
    agent = OracleAgent(env)
    agrees = target_probabilities(log, agent) == 1
    assert snips(log, agent).value == pytest.approx(log.rewards[agrees].mean())


def test_snips_moves_with_a_reward_shift_and_ips_does_not(env, log):
    agent = agent_named("popularity", env)
    shifted = replace(log, rewards=log.rewards + 2.0)
    assert snips(shifted, agent).value == pytest.approx(snips(log, agent).value + 2.0)
    weights_mean = (target_probabilities(log, agent) / log.propensities).mean()
    assert ips(shifted, agent).value == pytest.approx(ips(log, agent).value + 2.0 * weights_mean)
    assert weights_mean != pytest.approx(1.0)


@pytest.mark.parametrize(
    ("bad", "message"), [(np.nan, "NaN"), (0.0, "zero or negative"), (1.5, "above 1")]
)
def test_bad_propensities_are_named(env, bad, message):
    small = collect(env, n=200, seed=3)
    propensities = small.propensities.copy()
    propensities[17] = bad
    with pytest.raises(ValueError, match=rf"1 propensities are {message} \(first: row 17"):
        ips(replace(small, propensities=propensities), OracleAgent(env))


def test_log_without_propensities_is_refused(env):
    unlogged = collect(
        env, n=100, policy=lambda users, rng: rng.integers(0, 50, len(users)), seed=0
    )
    with pytest.raises(ValueError, match="100 propensities are NaN"):
        snips(unlogged, OracleAgent(env))


def test_bad_target_matrix_is_named(log):
    with pytest.raises(ValueError, match=r"shape \(50000, 50\)"):
        ips(log, np.ones((3, 50)) / 50)
    target = np.full((len(log), log.n_items), 1 / log.n_items)
    target[5, 0] = 0.5
    with pytest.raises(ValueError, match="first: row 5"):
        snips(log, target)


def test_snips_undefined_when_the_target_never_matches(env):
    small = collect(
        env, n=100, policy=lambda users, rng: (np.zeros(len(users), np.int64), np.ones(len(users)))
    )
    never_zero = np.zeros((100, 50))
    never_zero[:, 1] = 1.0
    assert ips(small, never_zero).value == 0.0
    with pytest.raises(ValueError, match="probability 0 to every logged action"):
        snips(small, never_zero)


def test_bandit_table_holds_the_log(log):
    table = to_bandit_table(log)
    assert list(table.columns) == [f"user.{f.name}" for f in log.user_schema.features] + [
        "action",
        "reward",
        "propensity",
    ]
    np.testing.assert_array_equal(table.filter(like="user.").to_numpy(), log.users.numeric)
    np.testing.assert_array_equal(table["action"], log.actions)
    np.testing.assert_array_equal(table["reward"], log.rewards)
    np.testing.assert_array_equal(table["propensity"], log.propensities)


def test_bandit_table_keeps_categorical_codes():
    env = gym.make("VaccineMessaging-v0", clusters=3, messages=6, n_users=300, seed=0)
    small = collect(env, n=50, seed=0)
    table = to_bandit_table(small)
    for j, feature in enumerate(small.user_schema.categorical):
        np.testing.assert_array_equal(table[f"user.{feature.name}"], small.users.categorical[:, j])


def test_confidence_interval_widens_with_the_level_and_bad_levels_are_named(env, log):
    agent = OracleAgent(env)
    narrow, wide = snips(log, agent, level=0.5), snips(log, agent, level=0.99)
    assert wide.ci_low < narrow.ci_low < narrow.value < narrow.ci_high < wide.ci_high
    with pytest.raises(ValueError, match=r"level must be a number in \(0, 1\)"):
        ips(log, agent, level=95)
