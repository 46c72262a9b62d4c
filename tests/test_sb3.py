"""Stable-Baselines3 plug-in: replay-buffer export, the FT features extractor, SB3 models as
agents."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import recsim_ft  # noqa: F401  (registers the envs)

pytest.importorskip("stable_baselines3")

from gymnasium import spaces  # noqa: E402
from stable_baselines3 import DQN, PPO  # noqa: E402
from stable_baselines3.common.buffers import DictReplayBuffer  # noqa: E402
from stable_baselines3.common.preprocessing import preprocess_obs  # noqa: E402

from recsim_ft.agents import PopularityAgent  # noqa: E402
from recsim_ft.agents.sb3 import FTFeaturesExtractor, SB3Agent  # noqa: E402
from recsim_ft.data import collect, to_replay_buffer  # noqa: E402
from recsim_ft.evaluate import evaluate  # noqa: E402
from recsim_ft.models import FeatureTensors  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vaccine():
    return gym.make("VaccineMessaging-v0", clusters=3, messages=6, n_users=300, seed=0)


@pytest.fixture(scope="module")
def log(vaccine):
    return collect(vaccine, n=40, seed=0)


# -- replay-buffer export --------------------------------------------------------------------------
def test_dict_buffer_holds_the_log_as_one_step_episodes(log):
    buffer = to_replay_buffer(log)
    assert isinstance(buffer, DictReplayBuffer) and buffer.full and buffer.size() == len(log)
    np.testing.assert_array_equal(buffer.observations["numeric"][:, 0], log.users.numeric)
    np.testing.assert_array_equal(buffer.observations["categorical"][:, 0], log.users.categorical)
    for key in ("numeric", "categorical"):
        np.testing.assert_array_equal(buffer.next_observations[key], buffer.observations[key])
    np.testing.assert_array_equal(buffer.actions[:, 0, 0], log.actions)
    np.testing.assert_array_equal(buffer.rewards[:, 0], log.rewards)
    assert (buffer.dones == 1).all() and (buffer.timeouts == 0).all()
    sample = buffer.sample(16)
    assert (sample.dones == 1).all()
    torch.testing.assert_close(sample.next_observations["numeric"], sample.observations["numeric"])


def test_export_equals_filling_with_sb3_add(log):
    schema = log.user_schema
    by_hand = DictReplayBuffer(len(log), schema.space(), spaces.Discrete(log.n_items))
    for i in range(len(log)):
        observation = {k: v[None] for k, v in log.users.observation(i, schema).items()}
        by_hand.add(
            observation,
            observation,
            log.actions[i : i + 1],
            log.rewards[i : i + 1],
            np.ones(1),
            [{}],
        )
    exported = to_replay_buffer(log)
    for key in ("numeric", "categorical"):
        np.testing.assert_array_equal(exported.observations[key], by_hand.observations[key])
        np.testing.assert_array_equal(
            exported.next_observations[key], by_hand.next_observations[key]
        )
    for name in ("actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(exported, name), getattr(by_hand, name))
    assert (exported.pos, exported.full) == (by_hand.pos, by_hand.full)


def test_flat_buffer_matches_gymnasium_flatten(log):
    buffer = to_replay_buffer(log, flatten=True)
    space = log.user_schema.space()
    expected = np.stack(
        [spaces.flatten(space, log.users.observation(i, log.user_schema)) for i in range(len(log))]
    )
    np.testing.assert_array_equal(buffer.observations[:, 0], expected)
    np.testing.assert_array_equal(buffer.next_observations[:, 0], expected)


def test_export_appends_and_refuses_to_overrun(log):
    buffer = DictReplayBuffer(100, log.user_schema.space(), spaces.Discrete(log.n_items))
    to_replay_buffer(log, buffer)
    to_replay_buffer(log, buffer)
    assert buffer.pos == 80 and not buffer.full
    np.testing.assert_array_equal(buffer.actions[40:80, 0, 0], log.actions)
    with pytest.raises(ValueError, match="room for 20 more transitions, the log has 40"):
        to_replay_buffer(log, buffer)
    assert buffer.pos == 80 and (buffer.dones[80:] == 0).all()


def test_export_refuses_a_buffer_of_another_env(log):
    spotify = gym.make("Spotify-v0")
    with pytest.raises(ValueError, match="observation space"):
        to_replay_buffer(
            log, DictReplayBuffer(100, spotify.observation_space, spotify.action_space)
        )


# -- features extractor ----------------------------------------------------------------------------
@pytest.mark.parametrize("embedder", ["mamba", "transformer", "mlp"])
def test_extractor_reads_sb3_one_hot_observations_as_category_codes(vaccine, log, embedder):
    extractor = FTFeaturesExtractor(vaccine.observation_space, embedder=embedder, d_token=16)
    raw = {
        "numeric": torch.as_tensor(log.users.numeric),
        "categorical": torch.as_tensor(log.users.categorical),
    }
    features = extractor(preprocess_obs(raw, vaccine.observation_space))
    assert features.shape == (len(log), extractor.features_dim)
    direct = extractor.embedder(
        extractor.tokenizer(FeatureTensors(raw["numeric"], raw["categorical"]))
    )
    torch.testing.assert_close(features, direct)


def test_extractor_on_numeric_only_observations():
    env = gym.make("Spotify-v0")
    extractor = FTFeaturesExtractor(env.observation_space, embedder="mamba", d_token=16)
    assert extractor.schema.n_numeric == 20 and extractor.schema.n_categorical == 0
    assert extractor({"numeric": torch.ones(3, 20)}).shape == (3, extractor.features_dim)


def test_extractor_refuses_a_flattened_space():
    with pytest.raises(ValueError, match="MultiInputPolicy"):
        FTFeaturesExtractor(spaces.Box(0, 1, (20,)))


# -- SB3 models as agents --------------------------------------------------------------------------
def test_tiny_ppo_with_ft_mamba_is_scored_by_evaluate():
    env = gym.make("Spotify-v0")
    ppo = PPO(
        "MultiInputPolicy",
        env,
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        gamma=0.0,
        seed=0,
        policy_kwargs=dict(
            features_extractor_class=FTFeaturesExtractor,
            features_extractor_kwargs=dict(embedder="mamba", d_token=16),
        ),
    )
    ppo.learn(total_timesteps=64)
    agent = SB3Agent(env, ppo)
    users = env.unwrapped.test_users(20, seed=0)
    probabilities = agent.score_items(users)
    assert probabilities.shape == (20, 50)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    observation, _ = env.reset(seed=3)
    assert agent.act(observation) == int(ppo.predict(observation, deterministic=True)[0])
    metrics = evaluate(agent, env, n_users=50)
    assert 0.0 <= metrics["HR@1"] <= 1.0 and metrics["n_users"] > 0


def test_dqn_pretrained_on_an_exported_log_learns_the_rewards():
    """DQN with gamma 0 regresses Q on the logged rewards: its greedy ranking must beat
    popularity."""
    env = gym.make("Spotify-v0")
    log = collect(env, n=20_000, seed=0)
    dqn = DQN(
        "MultiInputPolicy",
        env,
        gamma=0.0,
        buffer_size=len(log) + 1,
        learning_starts=0,
        train_freq=1,
        gradient_steps=300,
        batch_size=64,
        learning_rate=1e-3,
        seed=0,
    )
    to_replay_buffer(log, dqn.replay_buffer)
    dqn.learn(total_timesteps=1)  # one env step, then 300 gradient steps on the logged transitions
    agent = SB3Agent(env, dqn)
    assert agent.score_items(env.unwrapped.test_users(5, seed=0)).shape == (5, 50)
    dqn_hr1 = evaluate(agent, env, n_users=200)["HR@1"]
    popularity_hr1 = evaluate(PopularityAgent(env).fit(log), env, n_users=200)["HR@1"]
    assert dqn_hr1 > popularity_hr1 + 0.3


def test_sb3_agent_refuses_a_model_of_another_env(vaccine):
    spotify_model = PPO("MultiInputPolicy", gym.make("Spotify-v0"), n_steps=16, batch_size=16)
    with pytest.raises(ValueError, match="Discrete"):
        SB3Agent(vaccine, spotify_model)


def test_sb3_agent_takes_a_flattened_observation_model():
    env = gym.make("Spotify-v0")
    ppo = PPO("MlpPolicy", gym.wrappers.FlattenObservation(env), n_steps=16, batch_size=16, seed=0)
    agent = SB3Agent(env, ppo)
    assert agent.flatten and agent.score_items(env.unwrapped.test_users(4, seed=0)).shape == (4, 50)
