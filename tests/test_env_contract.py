"""The contract every recsim-ft environment keeps (``recsim_ft/envs/base.py``), checked for each
env id under a few settings: Gymnasium and Stable-Baselines3 checkers, spaces, seeding, episode
length, and the shapes and dtypes of the vectorized API the collector, trainer and evaluator use.

An env id whose module does not exist yet is skipped (the envs are written in parallel); a module
that exists but fails to import is an error.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recsim_ft
from recsim_ft.envs import RecEnv
from recsim_ft.protocol import protocol_for
from recsim_ft.schema import Batch

# a few settings per env id, each cheap to construct
SETTINGS: dict[str, list[dict]] = {
    "Spotify-v0": [
        {},
        {"item_features": "audio"},
        {"item_features": "both", "threshold": 0.3, "horizon": 3},
    ],
    "HMFashion-v0": [{}, {"horizon": 2}],
    "VaccineMessaging-v0": [
        {"clusters": 25},
        {"clusters": 25, "messages": 50, "item_features": "embedding", "horizon": 2},
    ],
}
CASES = [(env_id, kwargs) for env_id in recsim_ft.ENV_IDS for kwargs in SETTINGS[env_id]]


def _case_id(case: tuple[str, dict]) -> str:
    env_id, kwargs = case
    return env_id + "".join(f"-{k}={v}" for k, v in kwargs.items())


def _skip_if_not_written(env_id: str) -> None:
    module = gym.spec(env_id).entry_point.split(":")[0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        pytest.skip(f"{module} (for {env_id}) does not exist yet")


@pytest.fixture(scope="module", params=CASES, ids=_case_id)
def case(request) -> tuple[str, dict, RecEnv]:
    """(env id, kwargs, the unwrapped env), built once per module."""
    env_id, kwargs = request.param
    _skip_if_not_written(env_id)
    return env_id, kwargs, gym.make(env_id, **kwargs).unwrapped


def _within(values: np.ndarray, bounds: tuple[float, float]) -> bool:
    return bool(np.all((values >= bounds[0]) & (values <= bounds[1])))


# -- the checkers ----------------------------------------------------------------------------------
def _checker_warnings(checker, env: RecEnv) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checker(env)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_gymnasium_check_env(case):
    from gymnasium.utils.env_checker import check_env

    assert _checker_warnings(lambda env: check_env(env, skip_render_check=True), case[2]) == []


def test_stable_baselines3_check_env(case):
    sb3_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    assert _checker_warnings(sb3_checker.check_env, case[2]) == []


#: the slate and session modes of every env, on small instances
SMALL = {
    "Spotify-v0": {},
    "HMFashion-v0": {"n_customers": 3000},
    "VaccineMessaging-v0": {"clusters": 5, "messages": 10, "n_users": 500},
}
MODES = [
    {"slate_size": 3},
    {"session": True},
    {"session": True, "slate_size": 2, "history_length": 2, "session_length": 10},
]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
@pytest.mark.parametrize("env_id", recsim_ft.ENV_IDS)
def test_every_mode_passes_the_gymnasium_and_sb3_checkers(env_id, mode):
    from gymnasium.utils.env_checker import check_env

    sb3_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    env = gym.make(env_id, **SMALL[env_id], **mode).unwrapped
    assert _checker_warnings(lambda e: check_env(e, skip_render_check=True), env) == []
    assert _checker_warnings(sb3_checker.check_env, env) == []
    expected_action_space = (
        gym.spaces.MultiDiscrete([env.n_items] * mode["slate_size"])
        if "slate_size" in mode
        else gym.spaces.Discrete(env.n_items)
    )
    assert env.action_space == expected_action_space


def test_step_after_the_episode_ended_is_an_error_naming_reset(case):
    env = case[2]
    env.reset(seed=0)
    for _ in range(env.horizon):
        *_, terminated, truncated, _ = env.step(0)
    assert terminated
    with pytest.raises(RuntimeError, match=r"ended \(terminated=True.*call reset\(\)"):
        env.step(0)
    env.reset(seed=0)
    env.step(0)  # a new episode steps again


@pytest.mark.parametrize("env_id", recsim_ft.ENV_IDS)
def test_gym_make_with_module_prefix_in_a_fresh_process(env_id):
    _skip_if_not_written(env_id)
    kwargs = SETTINGS[env_id][0]
    code = (
        "import json, sys, gymnasium as gym\n"
        f"env = gym.make('recsim_ft:{env_id}', **json.loads(sys.argv[1]))\n"
        "obs, info = env.reset(seed=0)\n"
        "assert env.observation_space.contains(obs)\n"
        "print(type(env.unwrapped).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == gym.spec(env_id).entry_point.split(":")[1]


# -- Gymnasium API ---------------------------------------------------------------------------------
def test_episodes_stay_in_their_spaces_and_end_after_horizon(case):
    _, kwargs, env = case
    horizon = env.horizon
    assert horizon == kwargs.get("horizon", 1)
    assert env.action_space == gym.spaces.Discrete(env.n_items)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs) and isinstance(info["user_id"], int)
        for t in range(1, horizon + 1):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
            assert env.reward_bounds[0] <= reward <= env.reward_bounds[1]
            assert _within(np.array([info["expected_reward"]]), env.reward_bounds)
            assert terminated == (t == horizon) and truncated is False
    env.reset(seed=0)
    with pytest.raises(
        ValueError, match=rf"action must be an integer item index in \[0, {env.n_items}\)"
    ):
        env.step(env.n_items)


def test_an_instance_rebuilt_from_spec_kwargs_replays_the_same_episodes(case):
    env_id, kwargs, env = case
    assert env.spec_kwargs == {**env.spec_kwargs, **kwargs}
    rebuilt = gym.make(env_id, **env.spec_kwargs)
    assert (
        rebuilt.unwrapped.item_schema == env.item_schema
        and rebuilt.unwrapped.user_schema == env.user_schema
    )
    users = env.test_users(20, seed=0)
    np.testing.assert_array_equal(
        rebuilt.unwrapped.expected_reward(users), env.expected_reward(users)
    )

    def episode(instance, seed):
        obs, info = instance.reset(seed=seed)
        return obs, info["user_id"], instance.step(3 % env.n_items)[1]

    for seed in (0, 1, 12345):
        (obs_a, user_a, reward_a), (obs_b, user_b, reward_b) = (
            episode(env, seed),
            episode(rebuilt, seed),
        )
        assert user_a == user_b and reward_a == reward_b
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
    users = [env.reset(seed=s)[1]["user_id"] for s in range(20)]
    assert len(set(users)) > 1, "different seeds should draw different users"


# -- vectorized API --------------------------------------------------------------------------------
def _check_batch(batch: Batch, n: int, schema, what: str) -> None:
    assert isinstance(batch, Batch) and len(batch) == n
    assert batch.numeric.dtype == np.float32 and batch.numeric.shape == (n, schema.n_numeric)
    assert batch.categorical.dtype == np.int64 and batch.categorical.shape == (
        n,
        schema.n_categorical,
    )
    assert batch.ids.dtype == np.int64 and batch.ids.shape == (n,)
    schema.validate(batch, what)


def test_user_and_item_batches_fit_their_schemas(case):
    env = case[2]
    users = env.sample_users(64, np.random.default_rng(0))
    _check_batch(users, 64, env.user_schema, "users")
    assert env.observation_space == env.user_schema.space()
    for i in range(len(users)):
        assert env.observation_space.contains(users.observation(i, env.user_schema))
    items = env.item_table()
    _check_batch(items, env.n_items, env.item_schema, "item table")
    np.testing.assert_array_equal(items.ids, np.arange(env.n_items))
    test_users = env.test_users(10, seed=4)
    _check_batch(test_users, 10, env.user_schema, "test users")
    np.testing.assert_array_equal(test_users.numeric, env.test_users(10, seed=4).numeric)
    np.testing.assert_array_equal(test_users.categorical, env.test_users(10, seed=4).categorical)


def test_validation_users_are_reproducible_and_not_the_test_users(case):
    """``recsim-ft tune`` chooses hyperparameters on these: they must never be the test users."""
    env = case[2]
    n = 10
    validation, test = env.validation_users(n, seed=4), env.test_users(n, seed=4)
    _check_batch(validation, n, env.user_schema, "validation users")
    np.testing.assert_array_equal(validation.ids, env.validation_users(n, seed=4).ids)
    np.testing.assert_array_equal(
        validation.categorical, env.validation_users(n, seed=4).categorical
    )

    def rows(b):
        return {
            (*b.numeric[i].tolist(), *b.categorical[i].tolist(), int(b.ids[i]))
            for i in range(len(b))
        }

    assert not rows(validation) & rows(test)
    if case[0].startswith("HMFashion"):  # real customers: never the same person
        assert not set(validation.ids) & set(test.ids)
    np.testing.assert_array_equal(env.eval_users("validation", n, 4).ids, validation.ids)
    with pytest.raises(ValueError, match="split must be one of"):
        env.eval_users("train", n, 4)


def test_rewards_and_relevance_have_the_agreed_shapes(case):
    env = case[2]
    rng = np.random.default_rng(1)
    users = env.sample_users(40, rng)
    expected = env.expected_reward(users)
    assert expected.shape == (40, env.n_items) and np.issubdtype(expected.dtype, np.floating)
    assert _within(expected, env.reward_bounds)
    relevant = env.relevant(users)
    assert relevant.shape == (40, env.n_items) and relevant.dtype == np.bool_
    items = rng.integers(0, env.n_items, size=40)
    rewards = env.sample_reward(users, items, rng)
    assert (
        rewards.shape == (40,)
        and rewards.dtype == np.float32
        and _within(rewards, env.reward_bounds)
    )
    assert protocol_for(env).lr > 0 and env.reward_bounds[0] < env.reward_bounds[1]


def test_sample_log_is_the_behaviour_policy(case):
    env = case[2]
    users, actions, propensities = env.sample_log(500, np.random.default_rng(2))
    _check_batch(users, 500, env.user_schema, "logged users")
    assert actions.dtype == np.int64 and actions.shape == (500,)
    assert actions.min() >= 0 and actions.max() < env.n_items
    assert propensities.dtype == np.float64 and propensities.shape == (500,)
    assert np.all((propensities > 0) & (propensities <= 1))
    again = env.sample_log(500, np.random.default_rng(2))
    np.testing.assert_array_equal(again[1], actions)
    np.testing.assert_array_equal(again[0].ids, users.ids)


def test_a_paper_sized_sample_works_in_one_call(case):
    """160,000 users and rewards in one vectorized call (speed is measured in benchmarks/)."""
    env = case[2]
    rng = np.random.default_rng(3)
    users = env.sample_users(160_000, rng)
    _check_batch(users, 160_000, env.user_schema, "users")
    rewards = env.sample_reward(users, rng.integers(0, env.n_items, size=160_000), rng)
    assert rewards.shape == (160_000,) and _within(rewards, env.reward_bounds)


# -- properties ------------------------------------------------------------------------------------
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1), action_key=st.integers(0, 10_000))
def test_any_seed_gives_reproducible_in_space_episodes(case, seed, action_key):
    env = case[2]
    obs, info = env.reset(seed=seed)
    action = action_key % env.n_items
    _, reward, *_ = env.step(action)
    assert env.observation_space.contains(obs)
    assert env.reward_bounds[0] <= reward <= env.reward_bounds[1]
    obs_again, info_again = env.reset(seed=seed)
    assert info_again["user_id"] == info["user_id"] and env.step(action)[1] == reward
    for key in obs:
        np.testing.assert_array_equal(obs[key], obs_again[key])


# valid parameters of the envs that are cheap to construct
PARAMETERS = {
    "Spotify-v0": st.fixed_dictionaries(
        {
            "threshold": st.floats(0.0, 3.0),
            "genre_fraction": st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(
                lambda p: tuple(sorted(p))
            ),
            "item_features": st.sampled_from(["rank", "audio", "both"]),
            "horizon": st.integers(1, 4),
        }
    ),
}


@pytest.mark.parametrize("env_id", sorted(PARAMETERS))
def test_any_valid_parameters_give_a_working_env(env_id):
    _skip_if_not_written(env_id)

    @settings(max_examples=25, deadline=None)
    @given(kwargs=PARAMETERS[env_id], seed=st.integers(0, 2**32 - 1))
    def check(kwargs, seed):
        env, twin = gym.make(env_id, **kwargs), gym.make(env_id, **kwargs)
        obs, info = env.reset(seed=seed)
        assert twin.reset(seed=seed)[1] == info
        for t in range(1, env.unwrapped.horizon + 1):
            action = env.action_space.sample()
            obs, reward, terminated, _, _ = env.step(action)
            assert twin.step(action)[1] == reward
            assert env.observation_space.contains(obs)
            assert env.unwrapped.reward_bounds[0] <= reward <= env.unwrapped.reward_bounds[1]
            assert terminated == (t == env.unwrapped.horizon)
        users = env.unwrapped.sample_users(50, np.random.default_rng(seed))
        assert _within(env.unwrapped.expected_reward(users), env.unwrapped.reward_bounds)
        env.unwrapped.item_schema.validate(env.unwrapped.item_table(), "item table")

    check()


def test_user_counts_are_whole_numbers(case):
    """2.9 users are no count: refused, never truncated to 2."""
    env = case[2]
    for draw in (env.test_users, env.validation_users, env.eval_users):
        for n in (2.9, "5", -1):
            with pytest.raises(ValueError, match="n must be an integer >= 0"):
                draw(n) if draw != env.eval_users else draw("test", n)
