"""Open Bandit Pipeline interop: the exported layouts and OBP's own estimators on them.

The layout tests need no OBP. The equality tests run OBP itself (``pip install obp==0.5.7
--no-deps --ignore-requires-python``, which ``.ci/run`` does: obp's own pins cannot be installed
beside recsim-ft); they skip where it is missing, and fail under CI, where it must be there.
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from conftest import require
from recsim_ft.agents import OracleAgent, PopularityAgent
from recsim_ft.data import collect, to_obp
from recsim_ft.ope import (
    dm,
    dr,
    exact_slate_value,
    exact_value,
    from_obp_action_dist,
    iips,
    ips,
    obp_slate_pscores,
    rips,
    slate_ips,
    snips,
    target_distribution,
    to_obp_action_dist,
)

VACCINE = {"clusters": 5, "messages": 6}


@pytest.fixture(scope="module")
def slate_env():
    return gym.make("VaccineMessaging-v0", slate_size=2, **VACCINE)


@pytest.fixture(scope="module")
def slate_log(slate_env):
    return collect(slate_env, n=20_000, seed=0)


@pytest.fixture(scope="module")
def env():
    return gym.make("VaccineMessaging-v0", **VACCINE)


@pytest.fixture(scope="module")
def log(env):
    return collect(env, n=5_000, seed=0)


@pytest.fixture
def obp():
    require(importlib.util.find_spec("obp") is not None, "obp", "pip install obp==0.5.7 ...")
    import obp

    return obp


# -- the layouts -----------------------------------------------------------------------------------
def test_the_slate_layout_is_obps(slate_log, slate_env):
    feedback = to_obp(slate_log, slate_env)
    n, k, m = 20_000, 2, 6
    assert (feedback["n_rounds"], feedback["len_list"], feedback["n_unique_action"]) == (n, k, m)
    for key in ("slate_id", "action", "reward", "position", "pscore", "pscore_item_position"):
        assert feedback[key].shape == (n * k,), key
    assert feedback["context"].shape[0] == n
    np.testing.assert_array_equal(feedback["slate_id"], np.repeat(np.arange(n), k))
    np.testing.assert_array_equal(feedback["position"], np.tile(np.arange(k), n))
    # the whole slate's probability on each row (OBP's pscore), the item's beside it
    np.testing.assert_allclose(feedback["pscore"], 1 / (m * (m - 1)))
    np.testing.assert_allclose(feedback["pscore_item_position"], 1 / m)
    np.testing.assert_allclose(feedback["pscore_cascade"], np.tile([1 / m, 1 / (m * (m - 1))], n))
    assert "expected_reward" not in feedback


def test_a_slate_log_of_another_policy_has_no_cascade(slate_env):
    def first_two(users, rng):
        n = len(users)
        return np.tile([0, 1], (n, 1)), np.full((n, 2), 0.5), np.full(n, 0.5)

    log = collect(slate_env, n=50, policy=first_two, seed=0)
    assert "pscore_cascade" not in to_obp(log)  # the log does not determine it
    with pytest.raises(ValueError, match="uniform slate policy"):
        rips(log, OracleAgent(slate_env))


def test_the_impression_layout_and_wrong_layouts(slate_log, log):
    impressions = to_obp(slate_log, layout="impressions")
    np.testing.assert_allclose(impressions["pscore"], slate_log.propensities)
    assert impressions["n_rounds"] == len(slate_log) and "pscore_item_position" not in impressions
    with pytest.raises(ValueError, match="'slates' is for slate logs"):
        to_obp(log, layout="slates")
    with pytest.raises(ValueError, match="'bandit' is for a log of single recommendations"):
        to_obp(slate_log, layout="bandit")
    with pytest.raises(ValueError, match="layout must be one of"):
        to_obp(log, layout="slate")


def test_action_dist_round_trips_and_both_shapes_are_accepted(env, log):
    target = OracleAgent(env)
    probabilities = target_distribution(log, target)
    action_dist = to_obp_action_dist(target, log)
    assert action_dist.shape == (len(log), 6, 1)
    np.testing.assert_array_equal(from_obp_action_dist(action_dist), probabilities)
    np.testing.assert_array_equal(to_obp_action_dist(probabilities), action_dist)
    assert ips(log, action_dist).value == ips(log, probabilities).value
    with pytest.raises(ValueError, match="one position"):
        from_obp_action_dist(np.ones((3, 6, 2)) / 6)


def test_slate_estimators_follow_their_formulas(slate_log, slate_env):
    target = PopularityAgent(slate_env).fit(slate_log)
    slates = target.recommend(slate_log.users[::2], 2)
    logged = slate_log.actions.reshape(-1, 2)
    rewards = slate_log.rewards.reshape(-1, 2)
    same = slates == logged
    m = 6
    sips_terms = rewards.sum(axis=1) * same.all(axis=1) * m * (m - 1)
    rips_terms = rewards[:, 0] * same[:, 0] * m + rewards[:, 1] * same.all(axis=1) * m * (m - 1)
    assert slate_ips(slate_log, target).value == pytest.approx(sips_terms.mean(), rel=1e-12)
    assert rips(slate_log, target).value == pytest.approx(rips_terms.mean(), rel=1e-12)
    with pytest.raises(ValueError, match="deterministic target"):
        slate_ips(slate_log, np.full((len(slates), 2, m), 1 / m))


# -- OBP's own estimators --------------------------------------------------------------------------
def test_obps_slate_estimators_equal_ours(obp, slate_log, slate_env):
    from obp.ope import (
        SlateIndependentIPS,
        SlateOffPolicyEvaluation,
        SlateRewardInteractionIPS,
        SlateStandardIPS,
    )

    target = PopularityAgent(slate_env).fit(slate_log)
    evaluation = SlateOffPolicyEvaluation(
        bandit_feedback=to_obp(slate_log, slate_env),
        ope_estimators=[
            SlateStandardIPS(len_list=2),
            SlateIndependentIPS(len_list=2),
            SlateRewardInteractionIPS(len_list=2),
        ],
    )
    theirs = evaluation.estimate_policy_values(**obp_slate_pscores(slate_log, target))
    truth = exact_slate_value(slate_env, slate_log, target)
    for name, ours in (("sips", slate_ips), ("iips", iips), ("rips", rips)):
        estimate = ours(slate_log, target)
        assert theirs[name] == pytest.approx(estimate.value, rel=1e-12, abs=1e-12), name
        assert estimate.ci_low < truth < estimate.ci_high, name


def test_obps_bandit_estimators_and_truth_equal_ours(obp, env, log):
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        OffPolicyEvaluation,
        SelfNormalizedInverseProbabilityWeighting,
    )

    target = OracleAgent(env)
    feedback = to_obp(log, env)
    action_dist = to_obp_action_dist(target, log)
    q_hat = env.unwrapped.expected_reward(log.users)
    evaluation = OffPolicyEvaluation(
        bandit_feedback=feedback,
        ope_estimators=[
            InverseProbabilityWeighting(),
            SelfNormalizedInverseProbabilityWeighting(),
            DirectMethod(),
            DoublyRobust(),
        ],
    )
    theirs = evaluation.estimate_policy_values(
        action_dist=action_dist, estimated_rewards_by_reg_model=q_hat[:, :, None]
    )
    ours = {
        "ipw": ips(log, target).value,
        "snipw": snips(log, target).value,
        "dm": dm(log, target, q_hat).value,
        "dr": dr(log, target, q_hat).value,
    }
    for name, value in ours.items():
        assert theirs[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    truth = obp.dataset.SyntheticBanditDataset.calc_ground_truth_policy_value(
        None, expected_reward=feedback["expected_reward"], action_dist=action_dist
    )
    assert truth == pytest.approx(exact_value(env, log, target), rel=1e-12)
