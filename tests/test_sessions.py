"""Session mode: each env's documented dynamics, what the observation shows, how an episode
ends, seeding, the native vector env, and that it is a real RL problem (planning beats the greedy
one-step oracle on Spotify)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.schema import Batch

SMALL = {
    "Spotify-v0": {},
    "VaccineMessaging-v0": {"clusters": 3, "messages": 6, "n_users": 300},
    "HMFashion-v0": {"n_customers": 3000},
}


def user_of(env, observation, user_id=-1) -> Batch:
    """The user's own features: the leading columns of a session observation."""
    schema = env.user_schema
    numeric = observation.get("numeric", np.zeros(0))[: schema.n_numeric]
    categorical = observation.get("categorical", np.zeros(0, np.int64))[: schema.n_categorical]
    return Batch(numeric[None], categorical[None].astype(np.int64), np.array([user_id]))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# -- what the observation shows --------------------------------------------------------------------
@pytest.mark.parametrize("env_id", sorted(SMALL))
def test_observation_adds_recent_history_and_step_never_the_hidden_state(env_id):
    env = gym.make(env_id, session=True, history_length=2, **SMALL[env_id]).unwrapped
    names = [f.name for f in env.observation_schema.features]
    user_names = [f.name for f in env.user_schema.features]
    assert names == [
        *user_names,
        "recent_item_1",
        "recent_item_2",
        "recent_reward_1",
        "recent_reward_2",
        "step",
    ]
    assert env.observation_space == env.observation_schema.space()
    obs, info = env.reset(seed=0)
    n_num, n_cat = env.user_schema.n_numeric, env.user_schema.n_categorical
    assert obs["categorical"][n_cat:].tolist() == [env.n_items, env.n_items]  # "none"
    assert obs["numeric"][n_num:].tolist() == [0.0, 0.0, 0.0]
    consumed = []
    for t in range(1, 4):
        action = (3 * t) % env.n_items
        obs, reward, terminated, truncated, info = env.step(action)
        consumed.append((action, reward))
        assert env.observation_space.contains(obs)
        assert obs["categorical"][n_cat] == action and obs["numeric"][n_num] == reward
        assert obs["numeric"][-1] == t
        if t > 1:
            assert obs["categorical"][n_cat + 1] == consumed[-2][0]
        if terminated or truncated:
            break
    hidden = set(env._episodes.state)  # the session state lives outside the observation
    assert hidden and not hidden & set(names)


# -- the documented equations ----------------------------------------------------------------------
def test_spotify_boredom_satisfaction_and_leaving_follow_the_docstring():
    env = gym.make("Spotify-v0", session=True).unwrapped
    d = env.dynamics
    obs, _ = env.reset(seed=3)
    preference = user_of(env, obs).numeric.astype(np.float64)[0] @ env.affinity
    boredom, satisfaction = np.zeros(env.n_items), 0.0
    song = int(np.argmax(preference))  # the favourite, played again and again
    for _ in range(6):
        labels = env._label(preference - d["boredom_weight"] * boredom)
        expected, going_on = env.session_outlook()
        np.testing.assert_array_equal(expected, labels)
        after = d["satisfaction_memory"] * satisfaction + (1 - d["satisfaction_memory"]) * labels
        leave = sigmoid(
            d["leave_bias"] + d["leave_boredom"] * boredom - d["leave_satisfaction"] * after
        )
        np.testing.assert_allclose(going_on, 1 - leave)
        _, reward, terminated, truncated, info = env.step(song)
        assert reward == labels[song] == info["expected_reward"]
        boredom = d["boredom_decay"] * boredom + env.song_similarity[song]
        satisfaction = after[song]
        if terminated or truncated:
            break
    assert boredom[song] > 2.5  # the repeats bored the listener of that song


def test_spotify_repeats_turn_a_liked_song_neutral_and_raise_the_chance_of_leaving():
    env = gym.make("Spotify-v0", session=True, dynamics={"leave_bias": -50.0}).unwrapped
    obs, _ = env.reset(seed=3)
    preference = user_of(env, obs).numeric.astype(np.float64)[0] @ env.affinity
    song = int(np.flatnonzero((preference > 0.1) & (preference < 0.3))[0])
    rewards = [env.step(song)[1] for _ in range(4)]
    assert rewards[0] == 1 and rewards[-1] < 1
    default = gym.make("Spotify-v0", session=True).unwrapped
    default.reset(seed=3)
    fresh = 1 - default.session_outlook()[1][song]
    for _ in range(3):
        default.step(song)
    assert 1 - default.session_outlook()[1][song] > 5 * fresh


def test_vaccine_persuasion_grows_only_with_matching_messages():
    env = gym.make(
        "VaccineMessaging-v0",
        session=True,
        dynamics={"persuasion_scale": 1e6},  # vaccination ~impossible: watch the state grow
        **SMALL["VaccineMessaging-v0"],
    ).unwrapped
    d = env.dynamics
    obs, _ = env.reset(seed=0)
    cluster = env.user_clusters(user_of(env, obs))[0]
    match = env.message_clusters == cluster
    first_match, first_other = int(np.argmax(match)), int(np.argmax(~match))
    persuasion, reads = 0.0, np.zeros(env.n_items)
    for step, message in enumerate([first_match, first_match, first_other], start=1):
        expected, going_on = env.session_outlook()
        gain = match * d["repeat_persuasion"] ** reads
        ready = 1 - np.exp(-(persuasion + gain) / d["persuasion_scale"])
        np.testing.assert_allclose(expected, match * ready)  # p_match = 1, p_mismatch = 0
        stays = np.exp(-d["opt_out_rate"] * step)
        np.testing.assert_allclose(going_on, (1 - expected) * stays)
        env.step(message)
        persuasion += gain[message]
        reads[message] += 1
    assert persuasion == pytest.approx(1.5)  # 1 + 0.5 for the repeat, 0 for the mismatch


def test_vaccination_ends_the_campaign_with_reward_one():
    env = gym.make("VaccineMessaging-v0", session=True, **SMALL["VaccineMessaging-v0"])
    ends = []
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        cluster = env.unwrapped.user_clusters(user_of(env.unwrapped, obs))[0]
        messages = np.flatnonzero(env.unwrapped.message_clusters == cluster)
        for t in range(50):
            _, reward, terminated, truncated, _ = env.step(int(messages[t % len(messages)]))
            if terminated or truncated:
                ends.append((reward, terminated))
                break
    assert {end for end in ends} <= {(1.0, True), (0.0, True)} and len(ends) == 30
    assert sum(reward for reward, _ in ends) > 20  # matching messages persuade


def test_hm_no_rebuying_a_basket_budget_and_patience():
    env = gym.make("HMFashion-v0", session=True, **SMALL["HMFashion-v0"]).unwrapped
    obs, info = env.reset(seed=1)
    likes = env.relevant(user_of(env, obs, info["user_id"]))[0]
    wanted, unwanted = np.flatnonzero(likes), np.flatnonzero(~likes)
    expected, _ = env.session_outlook()
    np.testing.assert_array_equal(expected, likes.astype(float))
    _, reward, terminated, _, _ = env.step(int(wanted[0]))
    assert reward == 1.0 and not terminated
    expected, going_on = env.session_outlook()
    assert expected[wanted[0]] == 0  # never bought twice in a visit
    decay = env.dynamics["basket_decay"]
    np.testing.assert_allclose(expected[wanted[1:]], decay)  # one item in the basket
    np.testing.assert_array_equal(going_on, 1.0)  # patience 3 left
    outcomes = [env.step(int(unwanted[i]))[1:3] for i in range(3)]  # (reward, terminated)
    assert outcomes == [(0.0, False), (0.0, False), (0.0, True)]  # patience ran out


# -- episode end and seeding -----------------------------------------------------------------------
def test_truncated_after_session_length_when_nobody_leaves():
    env = gym.make("Spotify-v0", session=True, session_length=7, dynamics={"leave_bias": -50.0})
    env.reset(seed=0)
    ends = [env.step(t % 50)[2:4] for t in range(7)]
    assert ends == [(False, False)] * 6 + [(False, True)]
    with pytest.raises(RuntimeError, match=r"truncated=True.*call reset\(\)"):
        env.step(0)
    env.reset()
    assert env.step(0)[2:4] == (False, False)


def test_terminated_when_the_user_leaves():
    env = gym.make("Spotify-v0", session=True, dynamics={"leave_bias": 50.0})
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(0)
    assert terminated and not truncated
    with pytest.raises(RuntimeError, match=r"terminated=True.*call reset\(\)"):
        env.step(1)


@pytest.mark.parametrize("env_id", sorted(SMALL))
def test_a_seed_replays_a_session_exactly(env_id):
    def episode(seed):
        env = gym.make(env_id, session=True, slate_size=3, **SMALL[env_id])
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        out = [obs, info]
        for _ in range(20):
            step = env.step(env.action_space.sample())
            out.append(step)
            if step[2] or step[3]:
                break
        return out

    first, again, other = episode(5), episode(5), episode(6)
    assert repr(first) == repr(again) and repr(first) != repr(other)


def test_bad_mode_arguments_are_named():
    with pytest.raises(ValueError, match="session_length=5 applies only with session=True"):
        gym.make("Spotify-v0", session_length=5)
    with pytest.raises(ValueError, match="choice_scale=1.0 applies only with slate_size=k"):
        gym.make("Spotify-v0", choice_scale=1.0)
    with pytest.raises(ValueError, match=r"horizon=3 applies only to the bandit mode"):
        gym.make("Spotify-v0", session=True, horizon=3)
    with pytest.raises(ValueError, match=r"unknown dynamics parameters \['boredom'\]"):
        gym.make("Spotify-v0", session=True, dynamics={"boredom": 1.0})
    with pytest.raises(ValueError, match=r"dynamics\['patience'\] must be a positive integer"):
        gym.make("HMFashion-v0", session=True, n_customers=3000, dynamics={"patience": 2.5})
    with pytest.raises(ValueError, match="session must be one of"):
        gym.make("Spotify-v0", session="yes")
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        gym.make("Spotify-v0", sessions=True)


# -- the native vector env -------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", sorted(SMALL))
def test_one_slot_vector_env_replays_the_single_env_step_for_step(env_id):
    kwargs = {"session": True, "slate_size": 2, "session_length": 6, **SMALL[env_id]}
    single = gym.make(env_id, **kwargs)
    envs = gym.make_vec(env_id, num_envs=1, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    obs, info = single.reset(seed=4)
    vobs, vinfo = envs.reset(seed=4)
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(40):
        for key in obs:
            np.testing.assert_array_equal(vobs[key][0], obs[key])
        action = rng.integers(0, single.unwrapped.n_items, size=2)
        obs, reward, terminated, truncated, info = single.step(action)
        vobs, vreward, vterminated, vtruncated, vinfo = envs.step(action[None])
        assert (reward, terminated, truncated) == (vreward[0], vterminated[0], vtruncated[0])
        reported = vinfo["final_info"] if terminated or truncated else vinfo
        assert reported["expected_reward"][0] == info["expected_reward"]
        assert reported["chosen_item"][0] == info["chosen_item"]
        if terminated or truncated:
            episodes += 1
            obs, _ = single.reset()  # the same generator, as the vector env's autoreset
    assert episodes >= 2


def test_vector_sessions_truncate_then_autoreset():
    envs = gym.make_vec(
        "Spotify-v0",
        num_envs=3,
        session=True,
        session_length=2,
        dynamics={"leave_bias": -50.0},
    )
    envs.reset(seed=0)
    ends = [envs.step(np.zeros(3, np.int64))[2:4] for _ in range(3)]
    assert [(t.tolist(), u.tolist()) for t, u in ends] == [
        ([False] * 3, [False] * 3),
        ([False] * 3, [True] * 3),
        ([False] * 3, [False] * 3),  # the reset step
    ]
    obs, rewards, _, _, infos = envs.step(np.zeros(3, np.int64))
    assert (obs["numeric"][:, -1] == 1).all()  # step 1 of the new sessions


# -- a real RL problem -----------------------------------------------------------------------------
def session_returns(policy, n=2000, seed=0, **kwargs) -> np.ndarray:
    """Return of one session per slot of a vector env, the policy reading ``session_outlook``."""
    envs = gym.make_vec("Spotify-v0", num_envs=n, session=True, **kwargs)
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    returns, done = np.zeros(n), np.zeros(n, bool)
    while not done.all():
        expected, going_on = envs.session_outlook()
        _, rewards, terminated, truncated, _ = envs.step(policy(expected, going_on, rng))
        returns += np.where(done, 0.0, rewards)
        done |= terminated | truncated
    return returns


def greedy(expected, going_on, rng):
    """The greedy one-step oracle: the best expected reward now, ties to the lower index."""
    return expected.argmax(axis=1)


def greedy_random_ties(expected, going_on, rng):
    return (expected + 1e-9 * rng.random(expected.shape)).argmax(axis=1)


def planner(expected, going_on, rng):
    """Reward now plus the value of the listener staying (5 rewards), by the hidden state."""
    return (expected + 5.0 * going_on).argmax(axis=1)


def test_a_planning_policy_beats_the_greedy_one_step_oracle_on_spotify():
    plans, greedy_returns = session_returns(planner), session_returns(greedy)
    shuffled = session_returns(greedy_random_ties)

    def margin(a, b):
        difference = a.mean() - b.mean()
        return difference, np.hypot(a.std(ddof=1), b.std(ddof=1)) / np.sqrt(len(a))

    difference, std_error = margin(plans, greedy_returns)
    assert difference > 5.0 and difference > 8 * std_error  # measured: +12.2 +- 0.6
    difference, std_error = margin(plans, shuffled)
    assert difference > 4 * std_error  # measured: +3.3 +- 0.55
