"""The off-policy estimators beyond IPS / SNIPS (DM, DR, SNDR, switch-DR; IIPS and the
pseudo-inverse for slates), their confidence intervals and effective sample sizes, checked
against exact values on well-posed cases: a known synthetic bandit (``ToyEnv``) with a uniform
behaviour policy, and slates whose clicks follow a position-based model (additive over positions,
each position's click depending only on its item: the assumptions of IIPS and PI)."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
from sklearn.dummy import DummyRegressor
from toy_env import ToyEnv  # noqa: F401  (registers ToyRec-v0)

from recsim_ft.agents import OracleAgent
from recsim_ft.data import collect, to_obp
from recsim_ft.ope import (
    BanditData,
    SlateData,
    cross_fitted_rewards,
    dm,
    dr,
    exact_slate_value,
    exact_value,
    iips,
    ips,
    pseudo_inverse,
    pseudo_inverse_weights,
    sndr,
    snips,
    switch_dr,
)

N_ITEMS = 10


@pytest.fixture(scope="module")
def env():
    return gym.make("ToyRec-v0", n_items=N_ITEMS, n_groups=4)


def epsilon_greedy_oracle(env, log, epsilon=0.3):
    """The oracle's item with probability 1 - epsilon, else a uniform one: (n, n_items)."""
    best = env.unwrapped.expected_reward(log.users).argmax(axis=1)
    return (1 - epsilon) * np.eye(N_ITEMS)[best] + epsilon / N_ITEMS


def single_item_estimates(log, target, reward_model):
    return {
        "IPS": ips(log, target),
        "SNIPS": snips(log, target),
        "DM": dm(log, target, reward_model),
        "DR": dr(log, target, reward_model),
        "SNDR": sndr(log, target, reward_model),
        "Switch-DR": switch_dr(log, target, reward_model, tau=5.0),
    }


# the slate case: m items, slates of k, position-based clicks for two kinds of users
M, K = 8, 3
EXAMINE = np.array([1.0, 0.6, 0.3])
ATTRACT = np.random.default_rng(123).uniform(0.1, 0.6, size=(2, M))


def slate_log(n: int, seed: int) -> tuple[np.ndarray, SlateData]:
    """Uniformly random slates; each position is clicked independently with probability
    examine[j] * attract[user, item]; the slate reward is the number of clicks."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 2, n)
    slates = np.argsort(rng.random((n, M)), axis=1)[:, :K]
    clicks = rng.random((n, K)) < EXAMINE * ATTRACT[kinds[:, None], slates]
    slate_probability = 1 / (M * (M - 1) * (M - 2))
    return kinds, SlateData(
        slates, clicks.astype(float), np.full((n, K), 1 / M), np.full(n, slate_probability), M
    )


def slate_target(kinds: np.ndarray) -> np.ndarray:
    """A mixture: the best k items (by attractiveness) with 0.7, the worst k with 0.3."""
    best = np.argsort(-ATTRACT, axis=1)[:, :K][kinds]
    worst = np.argsort(ATTRACT, axis=1)[:, :K][kinds]
    return 0.7 * np.eye(M)[best] + 0.3 * np.eye(M)[worst]


def slate_truth(kinds: np.ndarray, marginals: np.ndarray) -> float:
    return float(
        (marginals * EXAMINE[None, :, None] * ATTRACT[kinds][:, None, :]).sum((1, 2)).mean()
    )


# -- accuracy --------------------------------------------------------------------------------------
def test_every_estimator_lands_within_10_percent_of_the_truth_on_a_well_posed_case(env):
    log = collect(env, n=20_000, seed=0)
    target = epsilon_greedy_oracle(env, log)
    truth = exact_value(env, log, target)
    estimates = single_item_estimates(log, target, cross_fitted_rewards(log))
    kinds, slates = slate_log(30_000, seed=0)
    marginals = slate_target(kinds)
    slate_value = slate_truth(kinds, marginals)
    for name, estimate in estimates.items():
        assert abs(estimate.value - truth) < 0.1 * truth, (name, estimate.value, truth)
    for estimator in (iips, pseudo_inverse):
        estimate = estimator(slates, marginals)
        assert abs(estimate.value - slate_value) < 0.1 * slate_value, (estimate, slate_value)


@pytest.mark.parametrize(
    "model", [None, DummyRegressor()], ids=["ridge (good model)", "item means (poor model)"]
)
def test_dr_error_is_no_worse_than_1_5x_the_better_of_dm_and_ips(env, model):
    """Root-mean-square errors over 10 logs: DR keeps up with the better of DM and IPS whether
    the reward model is good (DM best) or poor (DM biased, IPS best)."""
    errors = {"DM": [], "IPS": [], "DR": []}
    for seed in range(10):
        log = collect(env, n=10_000, seed=seed)
        target = epsilon_greedy_oracle(env, log)
        truth = exact_value(env, log, target)
        rewards = cross_fitted_rewards(log, model)
        errors["DM"].append(dm(log, target, rewards).value - truth)
        errors["IPS"].append(ips(log, target).value - truth)
        errors["DR"].append(dr(log, target, rewards).value - truth)
    rmse = {name: float(np.sqrt(np.mean(np.square(e)))) for name, e in errors.items()}
    assert rmse["DR"] <= 1.5 * min(rmse["DM"], rmse["IPS"]), rmse


def test_dm_is_exact_with_the_true_reward_model_and_biased_with_a_poor_one(env):
    log = collect(env, n=5_000, seed=1)
    target = epsilon_greedy_oracle(env, log)
    truth = exact_value(env, log, target)
    assert dm(log, target, OracleAgent(env)).value == pytest.approx(truth, abs=1e-12)
    poor = dm(log, target, cross_fitted_rewards(log, DummyRegressor())).value
    assert abs(poor - truth) > 0.1 * truth  # ignores who the user is


def test_pseudo_inverse_weights_are_the_general_pseudo_inverse_and_unbiased():
    """Against Swaminathan et al.'s definition w = q^T Gamma^+ 1_s, computed by brute force
    over every slate of 3 of 5 items, and E_mu[r w] = V(pi) exactly for additive rewards."""
    m, k = 5, 3
    every = np.array(list(itertools.permutations(range(m), k)))
    indicators = np.zeros((len(every), k * m))
    for j in range(k):
        indicators[np.arange(len(every)), j * m + every[:, j]] = 1
    gamma = indicators.T @ indicators / len(every)  # the uniform policy's second moment
    rng = np.random.default_rng(0)
    target = rng.dirichlet(np.ones(len(every)) * 0.5)  # any distribution over slates
    marginals = (indicators * target[:, None]).sum(axis=0)  # q: (position, item) marginals
    data = SlateData(
        every,
        np.zeros((len(every), k)),
        np.full((len(every), k), 1 / m),
        np.full(len(every), 1 / len(every)),
        m,
    )
    weights = pseudo_inverse_weights(
        data, np.broadcast_to(marginals.reshape(k, m), (len(every), k, m))
    )
    np.testing.assert_allclose(weights, indicators @ np.linalg.pinv(gamma) @ marginals, atol=1e-9)
    phi = rng.normal(size=(k, m))  # additive reward: sum of per-position terms
    rewards = phi[np.arange(k), every].sum(axis=1)
    assert (rewards * weights).mean() == pytest.approx((target * rewards).sum(), abs=1e-12)


# -- intervals and effective sample size -----------------------------------------------------------
def test_bootstrap_intervals_cover_the_truth_like_normal_ones(env):
    covered = {"normal": 0, "bootstrap": 0}
    for seed in range(10):
        log = collect(env, n=5_000, seed=100 + seed)
        target = epsilon_greedy_oracle(env, log)
        truth = exact_value(env, log, target)
        rewards = cross_fitted_rewards(log)
        for ci in covered:
            estimate = dr(log, target, rewards, ci=ci, n_bootstrap=400, seed=seed)
            assert estimate.ci_method == ci and estimate.ci_low < estimate.value < estimate.ci_high
            covered[ci] += estimate.ci_low <= truth <= estimate.ci_high
    assert covered["normal"] >= 8 and covered["bootstrap"] >= 8


def test_bootstrap_is_reproducible_and_its_width_close_to_normal(env):
    log = collect(env, n=5_000, seed=7)
    target = epsilon_greedy_oracle(env, log)
    first, again = (snips(log, target, ci="bootstrap", seed=3) for _ in range(2))
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    other = snips(log, target, ci="bootstrap", seed=4)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    normal = snips(log, target)
    width_ratio = (first.ci_high - first.ci_low) / (normal.ci_high - normal.ci_low)
    assert 0.8 < width_ratio < 1.25 and first.value == normal.value
    with pytest.raises(ValueError, match="ci must be one of"):
        ips(log, target, ci="percentile")


def test_effective_sample_size(env):
    log = collect(env, n=10_000, seed=2)
    greedy = np.eye(N_ITEMS)[env.unwrapped.expected_reward(log.users).argmax(axis=1)]
    # weights are n_items on a tenth of the events, 0 elsewhere: worth n / n_items events
    assert ips(log, greedy).effective_sample_size == pytest.approx(1_000, rel=0.1)
    rewards = cross_fitted_rewards(log)
    assert dm(log, greedy, rewards).effective_sample_size == len(log)
    assert switch_dr(log, greedy, rewards, tau=5.0).effective_sample_size == 0  # all switched
    uniform = np.full((len(log), N_ITEMS), 1 / N_ITEMS)
    assert dr(log, uniform, rewards).effective_sample_size == pytest.approx(len(log))


def test_switch_dr_between_dm_and_dr(env):
    log = collect(env, n=5_000, seed=3)
    target, rewards = epsilon_greedy_oracle(env, log), cross_fitted_rewards(log)
    assert switch_dr(log, target, rewards, tau=0.0).value == pytest.approx(
        dm(log, target, rewards).value
    )
    assert switch_dr(log, target, rewards, tau=np.inf).value == pytest.approx(
        dr(log, target, rewards).value
    )


# -- inputs ----------------------------------------------------------------------------------------
def test_arrays_and_logs_give_the_same_estimates(env):
    log = collect(env, n=3_000, seed=4)
    target, rewards = epsilon_greedy_oracle(env, log), cross_fitted_rewards(log)
    arrays = BanditData(log.rewards, log.actions, log.propensities, N_ITEMS)
    assert dr(arrays, target, rewards) == dr(log, target, rewards)
    with pytest.raises(ValueError, match="needs the logged users"):
        dr(arrays, OracleAgent(env), rewards)
    with pytest.raises(ValueError, match=r"reward predictions must have shape \(3000, 10\)"):
        dr(log, target, rewards[:10])


def test_slate_and_single_item_logs_go_to_their_own_estimators():
    spotify = gym.make("Spotify-v0", slate_size=2)
    slates = collect(spotify, n=500, seed=0)
    single = collect(gym.make("Spotify-v0"), n=500, seed=0)
    agent = OracleAgent(spotify)
    with pytest.raises(ValueError, match="slate log .*iips or pseudo_inverse"):
        ips(slates, agent)
    with pytest.raises(ValueError, match="single recommendations, not slates"):
        iips(single, agent)
    assert iips(slates, agent).n == pseudo_inverse(slates, agent).n == 500

    def not_uniform(users, rng):
        return np.tile([0, 1], (len(users), 1)), np.full((len(users), 2), 0.5), np.ones(500)

    skewed = collect(spotify, n=500, policy=not_uniform, seed=0)
    with pytest.raises(ValueError, match="needs slates logged by the uniform policy"):
        pseudo_inverse(skewed, agent)
    assert iips(skewed, agent).n == 500


def test_bandit_feedback_layout(env):
    log = collect(env, n=1_000, seed=0)
    feedback = to_obp(log, env)
    assert set(feedback) == {
        "n_rounds",
        "n_actions",
        "context",
        "action",
        "reward",
        "pscore",
        "position",
        "action_context",
        "expected_reward",
    }
    assert (feedback["n_rounds"], feedback["n_actions"]) == (1_000, N_ITEMS)
    assert feedback["context"].shape == (1_000, 1 + 5)  # activity, then group one-hot
    assert (
        feedback["action_context"].shape == (N_ITEMS, N_ITEMS) and feedback["position"].sum() == 0
    )
    np.testing.assert_array_equal(feedback["action"], log.actions)
    np.testing.assert_array_equal(feedback["pscore"], log.propensities)
    np.testing.assert_array_equal(
        feedback["expected_reward"], env.unwrapped.expected_reward(log.users)
    )
    unlogged = collect(env, n=10, policy=lambda users, rng: np.zeros(len(users), np.int64))
    with pytest.raises(ValueError, match="10 propensities are NaN"):
        to_obp(unlogged)
    # issue 45: pscores of 0, -1 or 7 passed, and another env's expected rewards were added
    for bad in (0.0, -1.0, 7.0):
        log.propensities[3] = bad
        with pytest.raises(ValueError, match=f"row 3, value {bad!r}"):
            to_obp(log)
    log.propensities[3] = 1.0 / N_ITEMS
    other = gym.make("ToyRec-v0", n_items=N_ITEMS, n_groups=4, p_none=0.5)
    with pytest.raises(ValueError, match="0.5 in the env"):
        to_obp(log, other)


def test_the_truth_is_refused_in_another_env_than_the_logs():
    """The oracle's exact value, taken in a vaccine env of another seed, would be ~0.37, not 1:
    the same checks as training's (features, then id and kwargs)."""
    kwargs = {"clusters": 5, "messages": 10}
    logged_in = gym.make("VaccineMessaging-v0", seed=0, **kwargs)
    log = collect(logged_in, n=500, seed=0)
    other = gym.make("VaccineMessaging-v0", seed=1, **kwargs)  # other messages
    with pytest.raises(ValueError, match="'message' has other categories"):
        exact_value(other, log, OracleAgent(other))
    other = gym.make("VaccineMessaging-v0", seed=0, p_match=0.5, **kwargs)  # other rewards
    with pytest.raises(ValueError, match="p_match=.*, 0.5 in the env"):
        exact_value(other, log, OracleAgent(other))
    mismatched = exact_value(other, log, OracleAgent(other), allow_env_mismatch=True)
    assert mismatched < exact_value(logged_in, log, OracleAgent(logged_in))
    slate_env = gym.make("VaccineMessaging-v0", seed=0, slate_size=2, **kwargs)
    slate_log = collect(slate_env, n=300, seed=0)
    other_slates = gym.make("VaccineMessaging-v0", seed=0, slate_size=2, choice_scale=3.0, **kwargs)
    with pytest.raises(ValueError, match="choice_scale"):
        exact_slate_value(other_slates, slate_log, OracleAgent(other_slates))
    assert exact_slate_value(slate_env, slate_log, OracleAgent(slate_env)) > 0


def test_an_empty_log_is_refused_by_every_estimator(env):
    log = collect(env, n=100, seed=0)
    empty = BanditData.from_log(log)
    empty = BanditData(empty.rewards[:0], empty.actions[:0], empty.propensities[:0], N_ITEMS)
    target = np.full((0, N_ITEMS), 1 / N_ITEMS)
    q_hat = np.zeros((0, N_ITEMS))
    calls = (
        lambda: ips(empty, target),
        lambda: snips(empty, target),
        lambda: dm(empty, target, q_hat),
        lambda: dr(empty, target, q_hat),
        lambda: sndr(empty, target, q_hat),
        lambda: switch_dr(empty, target, q_hat, tau=10.0),
    )
    for call in calls:
        with pytest.raises(ValueError, match="the log is empty"):
            call()
