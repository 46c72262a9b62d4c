"""Native vector envs: the same spaces, shapes, autoreset semantics and infos as Gymnasium's
SyncVectorEnv over the same env, with rewards that follow the env's reward rule."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from toy_env import ToyEnv

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.envs.vector import RecVectorEnv, SpotifyVectorEnv
from recsim_ft.schema import Batch

N = 5
SMALL_KWARGS = {
    "Spotify-v0": {},
    "VaccineMessaging-v0": {"clusters": 3, "messages": 6, "n_users": 300},
    "HMFashion-v0": {"n_customers": 3000},
}


def _pair(env_id, mode=AutoresetMode.NEXT_STEP, **kwargs):
    native = gym.make_vec(
        env_id, num_envs=N, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kwargs
    )
    sync = gym.make_vec(
        env_id,
        num_envs=N,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": mode},
        **kwargs,
    )
    return native, sync


def _same_structure(a, b):
    """Same keys, dtypes and shapes (values may differ: the two draw different users)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for key in a:
            _same_structure(a[key], b[key])
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same_structure(x, y)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape


def _same_masks(a, b):
    """The ``_key`` masks (which slots report each info) agree."""
    for key in a:
        if key.startswith("_"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        elif isinstance(a[key], dict):
            _same_masks(a[key], b[key])


@pytest.mark.parametrize("env_id", sorted(SMALL_KWARGS))
def test_make_vec_uses_the_native_env_by_default(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Gymnasium's warning about missing autoreset metadata
        envs = gym.make_vec(env_id, num_envs=3, **SMALL_KWARGS[env_id])
    assert isinstance(envs, RecVectorEnv) and envs.num_envs == 3
    assert envs.spec.id == env_id
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    observations, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(observations)
    observations, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert (
        envs.observation_space.contains(observations) and terminated.all() and not truncated.any()
    )
    envs.close()
    sync = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", **SMALL_KWARGS[env_id])
    assert isinstance(sync, SyncVectorEnv)


@pytest.mark.parametrize("horizon", [1, 3])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_semantics_match_sync_vector_env(horizon, mode):
    native, sync = _pair("Spotify-v0", mode, horizon=horizon)
    for space in (
        "single_observation_space",
        "single_action_space",
        "observation_space",
        "action_space",
    ):
        assert getattr(native, space) == getattr(sync, space), space
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"] == mode

    results = [envs.reset(seed=0) for envs in (native, sync)]
    _same_structure(results[0], results[1])
    _same_masks(results[0][1], results[1][1])
    rng = np.random.default_rng(0)
    for _ in range(3 * horizon + 1):
        actions = rng.integers(0, 50, size=N)
        steps = [envs.step(actions) for envs in (native, sync)]
        (
            (obs, rewards, terminated, truncated, infos),
            (s_obs, s_rewards, s_terminated, s_truncated, s_infos),
        ) = steps
        _same_structure(steps[0], steps[1])
        _same_masks(infos, s_infos)
        np.testing.assert_array_equal(terminated, s_terminated)
        np.testing.assert_array_equal(truncated, s_truncated)
        if mode == AutoresetMode.NEXT_STEP:  # slots on their reset step earn nothing
            stepped = infos.get("_expected_reward", np.zeros(N, bool))
            assert (rewards[~stepped] == 0).all() and (s_rewards[~stepped] == 0).all()
        if "final_obs" in infos:
            assert all(
                native.single_observation_space.contains(o) for o in infos["final_obs"][terminated]
            )


def test_next_step_autoreset_keeps_the_finished_user_then_ignores_the_action():
    envs = SpotifyVectorEnv(num_envs=N)
    spotify = envs.env
    observations, infos = envs.reset(seed=1)
    actions = np.arange(N)
    users = Batch.from_observations(observations, spotify.user_schema)
    after, rewards, terminated, _, infos = envs.step(actions)
    assert terminated.all()
    np.testing.assert_array_equal(
        after["numeric"], observations["numeric"]
    )  # still the finished user
    labels = spotify.expected_reward(users)[np.arange(N), actions]
    np.testing.assert_array_equal(rewards, labels)  # the Spotify reward is the user's label
    np.testing.assert_array_equal(infos["expected_reward"], labels)

    reset_obs, rewards, terminated, truncated, infos = envs.step(np.full(N, 49))  # reset step
    assert not terminated.any() and not truncated.any() and (rewards == 0).all()
    assert (
        "expected_reward" not in infos and infos["_user_id"].all()
    )  # as SyncVectorEnv: no slot stepped
    new_users = Batch.from_observations(reset_obs, spotify.user_schema)
    assert not np.array_equal(reset_obs["numeric"], observations["numeric"])
    genre_mask = new_users.numeric.astype(np.int64) @ (
        np.int64(1) << np.arange(20)
    )  # Spotify user ids
    np.testing.assert_array_equal(infos["user_id"], genre_mask)


def test_same_step_autoreset_reports_the_finished_user():
    envs = SpotifyVectorEnv(num_envs=N, autoreset_mode="SameStep")
    observations, _ = envs.reset(seed=2)
    new_obs, rewards, terminated, _, infos = envs.step(np.zeros(N, dtype=np.int64))
    assert terminated.all() and infos["_final_obs"].all() and infos["_final_info"].all()
    finished = np.stack([o["numeric"] for o in infos["final_obs"]])
    np.testing.assert_array_equal(finished, observations["numeric"])
    np.testing.assert_array_equal(infos["final_info"]["expected_reward"], rewards)
    assert "expected_reward" not in infos  # the new users have not been recommended to yet
    _, rewards, terminated, _, _ = envs.step(np.zeros(N, dtype=np.int64))
    assert terminated.all()  # no wasted reset step in this mode


def test_horizon_keeps_the_user_for_the_whole_episode():
    envs = SpotifyVectorEnv(num_envs=N, horizon=3)
    observations, infos = envs.reset(seed=0)
    for expected_end in (False, False, True):
        obs, _, terminated, _, step_infos = envs.step(np.zeros(N, dtype=np.int64))
        np.testing.assert_array_equal(obs["numeric"], observations["numeric"])
        np.testing.assert_array_equal(step_infos["user_id"], infos["user_id"])
        assert (terminated == expected_end).all()


def test_seeding_and_rewards_follow_the_env():
    """Same seed, same episodes; the mean reward of many slots matches the env's expected reward."""

    def rollout(seed):
        envs = RecVectorEnv(ToyEnv(horizon=5), num_envs=512)  # every step of 4 is a recommendation
        obs, _ = envs.reset(seed=seed)
        out = [obs["categorical"]]
        for t in range(4):
            obs, rewards, terminated, _, infos = envs.step(np.full(512, t % 10))
            out += [obs["categorical"], rewards, infos["expected_reward"]]
        return out

    first, again, other = rollout(0), rollout(0), rollout(1)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    rewards, expected = first[2], first[3]  # the first step: 512 Bernoulli draws
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    assert abs(rewards.mean() - expected.mean()) < 4 * np.sqrt(0.25 / 512)


def test_reset_mask_resets_only_the_chosen_slots():
    envs = SpotifyVectorEnv(num_envs=N)
    before, _ = envs.reset(seed=0)
    envs.step(np.zeros(N, dtype=np.int64))
    mask = np.array([True, False, False, True, False])
    after, infos = envs.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(infos["_user_id"], mask)
    np.testing.assert_array_equal(after["numeric"][~mask], before["numeric"][~mask])
    _, _, terminated, _, _ = envs.step(np.zeros(N, dtype=np.int64))
    # reset slots start a new episode; the others were waiting for their autoreset step
    np.testing.assert_array_equal(terminated, mask)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="num_envs"):
        SpotifyVectorEnv(num_envs=0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        SpotifyVectorEnv(num_envs=2, autoreset_mode="disabled")
    with pytest.raises(ValueError, match="only apply when env is an id"):
        RecVectorEnv(ToyEnv(), num_envs=2, n_items=4)
    with pytest.raises(TypeError, match="RecEnv"):
        RecVectorEnv(gym.make("CartPole-v1"), num_envs=2)
    envs = SpotifyVectorEnv(num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.zeros(2, dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="2 integers"):
        envs.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        envs.step(np.array([0, 50]))
    with pytest.raises(ValueError, match="reset_mask"):
        envs.reset(options={"reset_mask": np.array([1, 0])})


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"slate_size": 3},
        {"session": True, "session_length": 4},
        {"session": True, "session_length": 4, "slate_size": 2},
    ],
    ids=lambda kw: "-".join(kw),
)
def test_slates_and_sessions_match_sync_vector_env(kwargs, mode):
    """Same spaces, shapes, info keys and masks, and the same step at which episodes end when
    nobody leaves (a session then ends by truncation at ``session_length``)."""
    if kwargs.get("session"):
        kwargs = {**kwargs, "dynamics": {"leave_bias": -50.0}}
    native, sync = _pair("Spotify-v0", mode, **kwargs)
    for space in ("single_observation_space", "single_action_space", "action_space"):
        assert getattr(native, space) == getattr(sync, space), space
    results = [envs.reset(seed=0) for envs in (native, sync)]
    _same_structure(results[0], results[1])
    for _ in range(10):
        actions = native.action_space.sample()
        steps = [envs.step(actions) for envs in (native, sync)]
        _same_structure(steps[0], steps[1])
        _same_masks(steps[0][4], steps[1][4])
        for j in (2, 3):  # terminated, truncated
            np.testing.assert_array_equal(steps[0][j], steps[1][j])
