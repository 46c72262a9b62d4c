"""The agent protocol, the baselines and evaluation inside an env."""

import gymnasium as gym
import numpy as np
import pytest
from toy_env import ToyEnv

from recsim_ft import ENV_IDS
from recsim_ft.agents import Agent, OracleAgent, PopularityAgent, RandomAgent
from recsim_ft.data import collect
from recsim_ft.evaluate import evaluate, recommended_minus_liked
from recsim_ft.metrics import ranking_metrics
from recsim_ft.protocol import PROTOCOLS, Protocol
from recsim_ft.schema import Batch


@pytest.fixture(scope="module")
def log(env):
    return collect(env, n=4_000, seed=0)


def test_oracle_is_a_perfect_ranker(env):
    metrics = evaluate(OracleAgent(env), env, n_users=500, seed=3)
    for key in ("HR@1", "MRR@10", "NDCG@5", "NDCG@10", "MAP@10", "R@10"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["P@5"] < 1.0  # a group of ToyEnv likes only 2 or 3 of the 10 items
    assert metrics["n_users"] + metrics["n_excluded"] == 500 and metrics["n_excluded"] > 20
    assert not recommended_minus_liked(OracleAgent(env), env, n_users=500, seed=3).any()


def test_evaluate_uses_the_envs_test_users(env):
    users = env.unwrapped.test_users(300, seed=5)
    relevant = env.unwrapped.relevant(users)
    agent = PopularityAgent(env).fit(collect(env, n=500, seed=1))
    expected = ranking_metrics(agent.score_items(users), relevant, ks=(1, 2))
    assert evaluate(agent, env, n_users=300, seed=5, ks=(1, 2)) == expected
    assert evaluate(agent, env, n_users=300, seed=6, ks=(1, 2)) != expected


def test_random_agent_is_reproducible_and_at_chance(env):
    a = evaluate(RandomAgent(env, seed=7), env, n_users=2_000, seed=0)
    assert a == evaluate(RandomAgent(env, seed=7), env, n_users=2_000, seed=0)
    assert a != evaluate(RandomAgent(env, seed=8), env, n_users=2_000, seed=0)
    users = env.unwrapped.test_users(2_000, seed=0)
    relevant = env.unwrapped.relevant(users)
    chance = relevant[relevant.any(1)].mean()  # expected precision of a random item
    assert a["P@1"] == pytest.approx(chance, abs=0.04)
    assert a["P@5"] == pytest.approx(chance, abs=0.03)


def test_popularity_learns_the_mean_reward_per_item(env, log):
    agent = PopularityAgent(env, by="mean_reward").fit(log)
    for item in range(env.unwrapped.n_items):
        assert agent.item_popularity_[item] == pytest.approx(
            log.rewards[log.actions == item].mean()
        )
    # and that estimates the env's mean expected reward per item
    truth = env.unwrapped.expected_reward(
        env.unwrapped.sample_users(20_000, np.random.default_rng(0))
    ).mean(0)
    assert np.abs(agent.item_popularity_ - truth).max() < 0.1
    users = env.unwrapped.test_users(4, seed=0)
    ranking = agent.recommend(users, 10)
    assert (ranking == ranking[0]).all()  # the same list for everybody
    assert ranking[0].tolist() == np.argsort(-agent.item_popularity_, kind="stable").tolist()


def test_popularity_rules_and_unlogged_items(env, log):
    seen = log.actions != 9
    partial = collect(env, n=10, seed=0)
    partial.actions, partial.rewards = log.actions[seen], log.rewards[seen]
    agent = PopularityAgent(env, by="positive_rate").fit(partial)
    assert agent.item_counts_[9] == 0
    assert agent.item_popularity_[9] == pytest.approx((partial.rewards > 0).mean())
    # ToyEnv's rewards are 0/1: both rules agree
    mean_reward = PopularityAgent(env, by="mean_reward").fit(partial)
    assert np.allclose(agent.item_popularity_[:9], mean_reward.item_popularity_[:9])


def test_popularity_by_share_counts_positives_whatever_was_shown(env, log):
    """An item logged 4 times and rewarded 3 times beats one logged once and rewarded once by
    share (how often it was bought), and loses to it by rate (how often it was bought when
    shown); an item never rewarded scores 0 by share."""
    tiny = collect(env, n=5, seed=0)
    tiny.actions, tiny.rewards = np.array([0, 0, 0, 0, 1]), np.array([1, 1, 1, 0, 1], np.float32)
    share = PopularityAgent(env, by="positive_share").fit(tiny)
    np.testing.assert_allclose(share.item_popularity_[:3], [0.75, 0.25, 0.0])
    assert share.recommend(env.unwrapped.test_users(1), 1)[0, 0] == 0
    rate = PopularityAgent(env, by="positive_rate").fit(tiny)
    assert rate.recommend(env.unwrapped.test_users(1), 1)[0, 0] == 1
    full = PopularityAgent(env, by="positive_share").fit(log)
    counts = np.bincount(log.actions[log.rewards > 0], minlength=env.unwrapped.n_items)
    np.testing.assert_allclose(full.item_popularity_, counts / counts.sum())


def test_popularity_errors(env, log):
    users = env.unwrapped.test_users(3)
    with pytest.raises(RuntimeError, match="not fitted yet: call fit"):
        PopularityAgent(env).score_items(users)
    with pytest.raises(ValueError, match="by must be one of .*'clicks'"):
        PopularityAgent(env, by="clicks")
    other = collect(gym.make("ToyRec-v0", n_items=12), n=100, seed=0)
    with pytest.raises(ValueError, match="item features"):
        PopularityAgent(env).fit(other)
    # issue 45: a log of another setting (same features) was counted as this env's
    setting = collect(gym.make("ToyRec-v0", p_none=0.5), n=100, seed=0)
    with pytest.raises(ValueError, match="p_none=0.5 in the log.*allow_env_mismatch=True"):
        PopularityAgent(env).fit(setting)
    PopularityAgent(env, allow_env_mismatch=True).fit(setting)
    with pytest.raises(ValueError, match="allow_env_mismatch must be True or False"):
        PopularityAgent(env, allow_env_mismatch="no").fit(setting)


def test_act_in_a_gymnasium_loop(env):
    agent, schema = OracleAgent(env), env.unwrapped.user_schema
    observation, _ = env.reset(seed=0)
    for _ in range(20):
        action = agent.act(observation)
        assert isinstance(action, int) and env.action_space.contains(action)
        best = env.unwrapped.expected_reward(Batch.from_observations(observation, schema)).max()
        _, _, terminated, _, info = env.step(action)
        assert terminated and info["expected_reward"] == pytest.approx(best)
        observation, _ = env.reset()
    batched = {"numeric": np.zeros((2, 1), np.float32), "categorical": np.zeros((2, 1), np.int64)}
    with pytest.raises(ValueError, match=r"one observation, got 2; use recommend\(observation"):
        agent.act(batched)


def test_recommend_takes_gymnasium_observations_one_or_batched():
    env = gym.make("Spotify-v0")
    agent, schema = OracleAgent(env), env.unwrapped.user_schema
    observation, _ = env.reset(seed=3)
    one = agent.recommend(observation, 5)
    assert one.shape == (1, 5)
    assert one.tolist() == agent.recommend(Batch.from_observations(observation, schema), 5).tolist()
    assert agent.act(observation) == one[0, 0]

    vec_env = gym.make_vec("Spotify-v0", num_envs=4)
    observations, _ = vec_env.reset(seed=3)
    batched = agent.recommend(observations, 3)
    assert batched.shape == (4, 3)
    expected = np.argsort(
        -env.unwrapped.expected_reward(Batch.from_observations(observations, schema)),
        axis=1,
        kind="stable",
    )[:, :3]
    assert batched.tolist() == expected.tolist()
    with pytest.raises(TypeError, match="a Gymnasium observation .* got list"):
        agent.recommend([1, 2], 3)


def test_recommend_is_top_k_with_ties_to_lower_index(env):
    class Constant(Agent):
        def score_items(self, users):
            return np.zeros((len(users), self.n_items))

    users = env.unwrapped.test_users(2)
    assert Constant(env).recommend(users, 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert Constant(env).recommend(users, 3).dtype == np.int64
    assert Constant(env).fit(None) is not None and Constant(env).update({}, 0, 1.0) is None
    assert repr(Constant(env)) == "Constant(env=ToyRec-v0)"
    assert repr(Constant(ToyEnv())) == "Constant(env=ToyEnv)"
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 10\], got 11"):
        Constant(env).recommend(users, 11)


def test_bad_agents_get_clear_errors(env):
    class WrongShape(Agent):
        def score_items(self, users):
            return np.zeros((len(users), 3))

    class NaNScores(Agent):
        def score_items(self, users):
            return np.full((len(users), self.n_items), np.nan)

    users = env.unwrapped.test_users(2)
    with pytest.raises(NotImplementedError, match="Agent must implement score_items"):
        Agent(env).recommend(users, 1)
    with pytest.raises(
        ValueError,
        match=r"WrongShape.score_items: expected shape .* = \(2, 10\), got shape \(2, 3\)",
    ):
        WrongShape(env).recommend(users, 1)
    with pytest.raises(ValueError, match="WrongShape.score_items"):
        evaluate(WrongShape(env), env)
    with pytest.raises(ValueError, match="NaNScores.score_items contain NaN"):
        evaluate(NaNScores(env), env)


def test_two_tower_agent_is_imported_lazily():
    import recsim_ft.agents as agents

    with pytest.raises(AttributeError, match="no attribute 'NoSuchAgent'"):
        agents.NoSuchAgent  # noqa: B018


def test_any_object_with_score_items_can_be_evaluated(env):
    class DuckTyped:
        def score_items(self, users):
            return env.unwrapped.expected_reward(users)

    assert evaluate(DuckTyped(), env, ks=(1,))["HR@1"] == 1.0


def test_protocol_extra_metrics_and_explicit_metrics(monkeypatch):
    """The env's protocol adds its own metrics (H&M: MAP@12); explicit ``metrics`` replace them."""
    if "ToyRecMap12-v0" not in gym.registry:
        gym.register(id="ToyRecMap12-v0", entry_point=ToyEnv)
    monkeypatch.setitem(PROTOCOLS, "ToyRecMap12-v0", Protocol(extra_metrics=("MAP@12",)))
    env = gym.make("ToyRecMap12-v0", n_items=12)
    plain = gym.make("ToyRec-v0", n_items=12)
    assert "MAP@12" not in evaluate(OracleAgent(plain), plain, ks=(1, 5))
    metrics = evaluate(OracleAgent(env), env, ks=(1, 5))
    assert metrics["MAP@12"] == pytest.approx(1.0) and "NDCG@5" in metrics
    only = evaluate(OracleAgent(env), env, ks=(3,), metrics=("HR",))
    assert set(only) == {"HR@3", "n_users", "n_excluded"}


def test_recommended_minus_liked_counts(env, log):
    agent = PopularityAgent(env).fit(log)
    counts = recommended_minus_liked(agent, env, n_users=200, seed=1)
    assert counts.shape == (10,) and counts.dtype == np.int64 and counts.sum() == 0
    users = env.unwrapped.test_users(200, seed=1)
    liked = env.unwrapped.relevant(users)
    expected = -liked.sum(0)
    for user_scores, n_liked in zip(agent.score_items(users), liked.sum(1), strict=True):
        for item in sorted(range(10), key=lambda i: (-user_scores[i], i))[:n_liked]:
            expected[item] += 1
    assert counts.tolist() == expected.tolist()
    assert counts[9] > 0 > counts[0]  # the most popular item is over-recommended


def make_or_skip(env_id):
    try:
        return gym.make(env_id)
    except (ImportError, FileNotFoundError, gym.error.Error) as err:
        pytest.skip(f"{env_id} is not available: {err}")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_baselines_in_every_env(env_id):
    env = make_or_skip(env_id)
    log = collect(env, n=2_000, seed=0)
    results = {
        type(agent).__name__: evaluate(agent, env, n_users=300, seed=0)
        for agent in (RandomAgent(env), PopularityAgent(env).fit(log), OracleAgent(env))
    }
    for metrics in results.values():
        assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if "@" in k)
    assert results["OracleAgent"]["NDCG@10"] > results["RandomAgent"]["NDCG@10"]
    if env_id == "HMFashion-v0":
        assert "MAP@12" in results["OracleAgent"]  # Kaggle's metric, asked for by the env


def test_spotify_reference_points():
    """Reference points of the Spotify rule: a perfect ranker gets P@5 0.983, R@10 0.706; ranking
    by how many users like a song gets HR@1 0.41, HR@5 0.96 (measured on 100,000 users; 3,000
    here, so a wide tolerance)."""
    env = make_or_skip("Spotify-v0")
    oracle = evaluate(OracleAgent(env), env, n_users=3_000, seed=11)
    assert oracle["HR@1"] == 1.0
    assert oracle["P@5"] == pytest.approx(0.983, abs=0.01)
    assert oracle["R@10"] == pytest.approx(0.706, abs=0.03)
    log = collect(
        env, n=160_000, seed=0
    )  # the paper's log size: close songs need it to be told apart
    liked = evaluate(PopularityAgent(env).fit(log), env, n_users=3_000, seed=11)  # the default
    assert liked["HR@1"] == pytest.approx(0.41, abs=0.04)
    assert liked["HR@5"] == pytest.approx(0.96, abs=0.03)
    # likes minus dislikes favours inoffensive songs: a weaker hit rate on this env
    mean_reward = evaluate(
        PopularityAgent(env, by="mean_reward").fit(log), env, n_users=3_000, seed=11
    )
    assert mean_reward["HR@5"] < liked["HR@5"] - 0.1


def test_popularity_agent_is_the_baseline_of_the_tables(tmp_path):
    """``PopularityAgent(env)`` of the quick tour scores what the tables' popularity runs score."""
    from recsim_ft.experiments import RunSpec, derived_seeds, run

    spec = RunSpec("Spotify-v0", "popularity", seed=4, n_samples=20_000, eval_users=200)
    table_run = run(spec, tmp_path)
    data_seed, _, test_seed = derived_seeds(4)
    env = gym.make("Spotify-v0")
    agent = PopularityAgent(env).fit(collect(env, n=20_000, seed=data_seed))
    assert evaluate(agent, env, n_users=200, seed=test_seed) == table_run


def test_no_silent_truncation_of_observations_or_counts(env, log):
    """A categorical code of 2.7 is no category, and 2.9 users are no count: both refused."""
    agent = PopularityAgent(env).fit(log)
    observation, _ = env.reset(seed=0)
    fractional = {**observation, "categorical": observation["categorical"] + 0.7}
    with pytest.raises(ValueError, match="categorical codes must be whole numbers, got"):
        agent.recommend(fractional, k=1)
    whole = {**observation, "categorical": observation["categorical"].astype(float)}
    assert agent.act(whole) == agent.act(observation)
    for n_users in (2.9, "5", 0):
        with pytest.raises(ValueError, match="n_users must be a positive integer"):
            evaluate(agent, env, n_users=n_users)
        with pytest.raises(ValueError, match="n_users must be a positive integer"):
            recommended_minus_liked(agent, env, n_users=n_users)
