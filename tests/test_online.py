"""Online learning: run_online's bookkeeping and the bandit agents' learning, on real and toy
envs."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from toy_env import ToyEnv

import recsim_ft
from recsim_ft.agents import OracleAgent, RandomAgent
from recsim_ft.agents.bandits import (
    EpsilonGreedyAgent,
    LinUCBAgent,
    OnlineTwoTowerAgent,
    ThompsonSamplingAgent,
    user_context,
)
from recsim_ft.agents.base import Agent
from recsim_ft.online import run_online


@pytest.fixture(scope="module")
def spotify():
    return gym.make("Spotify-v0")


@pytest.fixture(scope="module")
def toy():
    return ToyEnv(n_items=10, n_groups=5, p_none=0.0)


def _late_regret(result, last: int) -> float:
    return float(result.history["regret"].iloc[-last:].mean())


@pytest.mark.parametrize(
    "make_agent",
    [lambda env: LinUCBAgent(env, alpha=1.0), lambda env: ThompsonSamplingAgent(env, seed=0)],
    ids=["LinUCB", "Thompson"],
)
def test_linear_bandits_learn_spotify(spotify, make_agent):
    """Over 3,000 users the linear bandits' per-step regret falls far below chance and keeps
    falling, and their greedy ranking reaches a hit rate well above chance."""
    random = run_online(RandomAgent(spotify, seed=0), spotify, 3000, seed=1, progress=False)
    learner = run_online(make_agent(spotify), spotify, 3000, seed=1, progress=False)
    late = _late_regret(learner, 1000)
    assert late < 0.4 * _late_regret(random, 1000)
    assert late < 0.7 * float(learner.history["regret"].iloc[:1000].mean())
    assert learner.cum_regret < 0.6 * random.cum_regret
    assert learner.metrics["HR@1"] > random.metrics["HR@1"] + 0.3


def test_epsilon_greedy_finds_the_best_item_on_average(toy):
    """Context-free, so it can only learn the best item on average (the last one of the toy env)."""
    agent = EpsilonGreedyAgent(toy, epsilon=0.1, seed=0)
    result = run_online(agent, toy, 3000, seed=0, progress=False)
    random = run_online(RandomAgent(toy, seed=0), toy, 3000, seed=0, progress=False)
    assert int(np.argmax(agent.means_)) == toy.n_items - 1
    assert _late_regret(result, 1000) < 0.8 * _late_regret(random, 1000)
    assert agent.counts_.sum() == 3000


def test_epsilon_one_is_uniform(toy):
    agent = EpsilonGreedyAgent(toy, epsilon=1.0, seed=0)
    agent.update_batch(toy.sample_users(10, np.random.default_rng(0)), np.arange(10), np.zeros(10))
    counts = np.bincount(
        agent.act_batch(toy.sample_users(10_000, np.random.default_rng(1))), minlength=10
    )
    assert counts.min() > 800 and counts.max() < 1200


def test_result_columns_and_evaluation_steps(spotify):
    result = run_online(
        LinUCBAgent(spotify), spotify, 250, eval_every=100, eval_users=50, progress=False
    )
    history = result.history
    assert list(history.columns[:8]) == [
        "step",
        "user_id",
        "action",
        "reward",
        "expected_reward",
        "cum_reward",
        "regret",
        "cum_regret",
    ]
    assert history["step"].tolist() == list(range(1, 251))
    np.testing.assert_allclose(history["cum_reward"], np.cumsum(history["reward"]))
    np.testing.assert_allclose(history["cum_regret"], np.cumsum(history["regret"]))
    assert (history["regret"] >= 0).all()
    assert {"HR@1", "P@5", "NDCG@10", "MAP@10"} <= set(result.metric_names)
    assert result.evaluations["step"].tolist() == [100, 200, 250]
    assert history["HR@1"].notna().sum() == 3
    assert result.evaluations.iloc[-1]["cum_regret"] == pytest.approx(result.cum_regret)
    # the metrics are those of evaluate() on the same test users after the run
    expected = recsim_ft.evaluate.evaluate(result.agent, spotify, n_users=50, seed=0)
    assert result.metrics["HR@1"] == pytest.approx(expected["HR@1"])
    assert result.metrics["P@5"] == pytest.approx(expected["P@5"])


def test_oracle_has_zero_regret_and_perfect_hits(spotify):
    result = run_online(OracleAgent(spotify), spotify, 200, progress=False)
    assert result.cum_regret == 0.0
    assert result.metrics["HR@1"] == 1.0
    # Spotify rewards are deterministic labels, so the reward is the expected reward
    np.testing.assert_array_equal(result.history["reward"], result.history["expected_reward"])


def test_same_seed_same_result_other_seed_other_users(spotify):
    def run(seed, agent_seed=0, batch_size=7):
        agent = ThompsonSamplingAgent(spotify, seed=agent_seed)
        return run_online(
            agent, spotify, 300, seed=seed, batch_size=batch_size, eval_every=150, progress=False
        ).history

    pd.testing.assert_frame_equal(run(3), run(3))
    assert not np.array_equal(run(3)["user_id"], run(4)["user_id"])


def test_users_do_not_depend_on_batch_size(spotify):
    """The same seed shows the same users whatever the round size (a fixed agent then acts the
    same)."""
    one = run_online(
        OracleAgent(spotify), spotify, 300, seed=5, batch_size=1, progress=False
    ).history
    many = run_online(
        OracleAgent(spotify), spotify, 300, seed=5, batch_size=64, progress=False
    ).history
    pd.testing.assert_frame_equal(one, many)


class _RecordingAgent(Agent):
    """Scores nothing in particular, records every update call."""

    def __init__(self, env):
        super().__init__(env)
        self.updates = []

    def score_items(self, users):
        return np.zeros((len(users), self.n_items))

    def update(self, observation, action, reward):
        assert self.env.observation_space.contains(observation)
        self.updates.append((action, reward))


class _BatchRecordingAgent(_RecordingAgent):
    def update_batch(self, users, actions, rewards):
        self.updates.append(len(users))


def test_update_per_interaction_or_per_round(toy):
    plain = _RecordingAgent(toy)
    run_online(plain, toy, 50, batch_size=8, progress=False)
    assert len(plain.updates) == 50 and {a for a, _ in plain.updates} == {0}

    batched = _BatchRecordingAgent(toy)
    run_online(batched, toy, 50, batch_size=8, eval_every=20, progress=False)
    # rounds of 8, cut at the evaluation steps 20 and 40 and at the end
    assert batched.updates == [8, 8, 4, 8, 8, 4, 8, 2]


def test_bad_arguments_are_named(spotify):
    agent = LinUCBAgent(spotify)
    for kwargs, name in [
        ({"steps": 0}, "steps"),
        ({"steps": 10, "batch_size": 0}, "batch_size"),
        ({"steps": 10, "eval_every": 0}, "eval_every"),
        ({"steps": 2.5}, "steps"),
    ]:
        with pytest.raises(ValueError, match=name):
            run_online(agent, spotify, progress=False, **kwargs)
    with pytest.raises(TypeError, match="Agent interface"):
        run_online(object(), spotify, 10, progress=False)

    class Wild(Agent):
        def score_items(self, users):
            return np.zeros((len(users), self.n_items))

        def act_batch(self, users):
            return np.full(len(users), 99)

    with pytest.raises(ValueError, match=r"actions Wild chose must be item indices in \[0, 50\)"):
        run_online(Wild(spotify), spotify, 10, progress=False)


@pytest.mark.parametrize("n_rows", [1, 3, 40])
def test_linear_bandit_inverse_stays_exact(toy, n_rows):
    """Sherman-Morrison / Woodbury / direct updates all keep A_inv_ equal to inv(A_)."""
    agent = LinUCBAgent(toy, ridge=0.5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        users = toy.sample_users(n_rows, rng)
        agent.update_batch(users, rng.integers(0, 3, size=n_rows), rng.random(n_rows))
    np.testing.assert_allclose(agent.A_inv_, np.linalg.inv(agent.A_), atol=1e-9)
    x = user_context(users, toy.user_schema)
    ridge_fit = np.linalg.solve(agent.A_[0], agent.b_[0])
    np.testing.assert_allclose(agent.score_items(users)[:, 0], x @ ridge_fit, atol=1e-9)


def test_user_context_encoding(toy):
    users = toy.sample_users(5, np.random.default_rng(0))
    x = user_context(users, toy.user_schema)
    assert x.shape == (5, 1 + 6 + 1)  # activity, 5 groups + "none", intercept
    np.testing.assert_allclose(x[:, 0], users.numeric[:, 0])  # already in [0, 1]
    np.testing.assert_array_equal(x[:, 1:7].argmax(axis=1), users.categorical[:, 0])
    np.testing.assert_array_equal(x[:, 1:7].sum(axis=1), 1)
    np.testing.assert_array_equal(x[:, -1], 1)


def test_online_agents_work_in_a_gym_loop(spotify):
    agent = LinUCBAgent(spotify)
    observation, _ = spotify.reset(seed=0)
    for _ in range(20):
        action = agent.act(observation)
        assert spotify.action_space.contains(action)
        _, reward, terminated, _, _ = spotify.step(action)
        agent.update(observation, action, reward)
        if terminated:
            observation, _ = spotify.reset()
    assert agent.counts_.sum() == 20
    with pytest.raises(ValueError, match="update_batch needs one action and one reward"):
        agent.update_batch(
            spotify.unwrapped.sample_users(2, np.random.default_rng(0)), np.array([1]), np.ones(2)
        )


@pytest.mark.parametrize(
    "kwargs, name",
    [({"epsilon": 1.5}, "epsilon"), ({"alpha": -1}, "alpha"), ({"ridge": 0}, "ridge")],
)
def test_bad_agent_arguments(spotify, kwargs, name):
    cls = EpsilonGreedyAgent if name == "epsilon" else LinUCBAgent
    with pytest.raises(ValueError, match=name):
        cls(spotify, **kwargs)


def test_online_two_tower_refits_on_its_own_log(toy, one_torch_thread):
    """Uniform choices until the first refit, then greedy on the refitted model; each refit trains
    on everything seen so far, and the same seed repeats the run."""
    from recsim_ft.train import TrainConfig

    def run():
        config = TrainConfig(seed=0, steps=60, eval_every=None, checkpoint_every=None)
        agent = OnlineTwoTowerAgent(
            toy,
            embedder="mlp",
            preset="quick",
            refit_every=300,
            epsilon=0.0,
            seed=0,
            train_config=config,
        )
        assert agent.score_items(toy.test_users(3)).shape == (
            3,
            toy.n_items,
        )  # before any fit: flat
        return agent, run_online(agent, toy, 700, seed=0, batch_size=20, progress=False)

    agent, result = run()
    assert agent.fits_ == 2
    log = agent.log()
    assert len(log) == 700 and log.user_schema == toy.user_schema
    np.testing.assert_array_equal(log.actions, result.history["action"])
    assert len(agent.model_agent_.result_.curve) and agent.model_agent_.result_.config.steps == 60
    # uniform before the first fit (propensity 1/10), greedy (epsilon 0) on the model after it
    assert np.allclose(log.propensities[:300], 1 / 10) and np.allclose(log.propensities[600:], 1.0)
    assert len(np.unique(log.actions[:300])) == toy.n_items
    late_users = log.users[np.arange(600, 700)]
    np.testing.assert_array_equal(log.actions[600:], agent.recommend(late_users, 1)[:, 0])
    pd.testing.assert_frame_equal(result.history, run()[1].history)
    with pytest.raises(ValueError, match="refit_every"):
        OnlineTwoTowerAgent(toy, refit_every=0)


@pytest.mark.parametrize("mode", [{"session": True}, {"slate_size": 3}])
def test_modes_it_cannot_follow_are_refused(mode):
    """One item for a fresh user per step, rewarded by the bandit model: not a session's nor a
    slate's reward, so the regret would be that of another env."""
    env = gym.make("Spotify-v0", **mode)
    with pytest.raises(ValueError, match=f"{next(iter(mode))}=.*bandit env"):
        run_online(RandomAgent(env), env, steps=10, progress=False)


@pytest.mark.parametrize("agent", [LinUCBAgent, ThompsonSamplingAgent, EpsilonGreedyAgent])
def test_an_online_agent_refuses_to_learn_from_a_non_finite_feature(spotify, agent):
    """A NaN feature in one update would stay in the agent's sums and decide every later choice."""
    bandit = agent(spotify)
    users = spotify.unwrapped.test_users(4, seed=0)
    users.numeric[1, 2] = np.nan
    with pytest.raises(ValueError, match="update users: numeric feature 'ambient' has NaN"):
        bandit.update_batch(users, np.array([0, 3, 1, 2]), np.ones(4))
    observation, _ = spotify.reset(seed=0)
    observation["numeric"][0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        bandit.update(observation, 3, 1.0)


def test_a_malformed_observation_is_named(spotify):
    bandit = LinUCBAgent(spotify)
    observation, _ = spotify.reset(seed=0)
    for bad, fragment in (
        ({"numeric": observation["numeric"][:5]}, "'numeric' must hold 20 values per user"),
        ({"numeric": observation["numeric"].reshape(1, 2, 10)}, "got shape (1, 2, 10)"),
        ([observation, "not one"], "a list of them"),
    ):
        with pytest.raises((ValueError, TypeError), match=re.escape(fragment)):
            bandit.act(bad)
        with pytest.raises((ValueError, TypeError), match=re.escape(fragment)):
            bandit.update(bad, 0, 1.0)
