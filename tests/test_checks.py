"""The one argument check of recsim-ft (``recsim_ft.checks``) and the places a user meets it: env
constructors, ``env.step`` and the vector env, with errors that name the argument, what was given
and what is allowed; nothing is truncated or coerced silently."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.checks import (
    check_action,
    check_actions,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_path,
    check_str,
)

NOT_INTEGERS = [
    2.5,
    2.0,
    True,
    False,
    "25",
    None,
    np.float64(2.5),
    np.float32(3.0),
    np.bool_(True),
    np.array([3]),
    np.array(2.5),
    [3],
]


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
def test_an_integer_argument_refuses_anything_but_an_integer(value):
    with pytest.raises(ValueError) as error:
        check_int("clusters", value, low=1)
    message = str(error.value)
    assert message.startswith("clusters must be a positive integer, got ")
    assert f"got {value!r} ({type(value).__name__})" in message


@pytest.mark.parametrize("value", [3, np.int64(3), np.int8(3), np.uint16(3), np.array(3)], ids=repr)
def test_an_integer_argument_accepts_python_and_numpy_integers(value):
    assert check_int("clusters", value, low=1) == 3 and type(check_int("clusters", value)) is int


def test_integer_bounds_and_none():
    assert check_int("seed", None, allow_none=True) is None
    with pytest.raises(
        ValueError, match=re.escape("seed must be an integer >= 0 or None, got -1 (int)")
    ):
        check_int("seed", -1, low=0, allow_none=True)
    with pytest.raises(
        ValueError, match=re.escape("messages must be an integer in [1, 100], got 101 (int)")
    ):
        check_int("messages", 101, low=1, high=100)
    with pytest.raises(
        ValueError, match=re.escape("n must be a positive integer, got None (NoneType)")
    ):
        check_int("n", None, low=1)


def test_a_number_argument():
    assert (
        check_float("p_match", 1, low=0, high=1) == 1.0 and check_float("p", np.float32(0.5)) == 0.5
    )
    for value in (1.5, -0.1, float("nan"), float("inf"), "0.5", True, None):
        with pytest.raises(
            ValueError, match=re.escape(f"p_match must be a number in [0, 1], got {value!r}")
        ):
            check_float("p_match", value, low=0, high=1)
    with pytest.raises(
        ValueError, match=re.escape("test_fraction must be a number in (0, 1), got 1.0 (float)")
    ):
        check_float("test_fraction", 1.0, low=0, high=1, low_open=True, high_open=True)
    with pytest.raises(
        ValueError, match=re.escape("lr must be a positive number, got 0.0 (float)")
    ):
        check_float("lr", 0.0, low=0, low_open=True)


def test_a_choice_argument():
    assert check_choice("split", "test", ("test", "validation")) == "test"
    with pytest.raises(
        ValueError,
        match=re.escape("split must be one of ('test', 'validation'), got 'train' (str)"),
    ):
        check_choice("split", "train", ("test", "validation"))
    with pytest.raises(
        ValueError, match="got 1 \\(int\\)"
    ):  # True == 1, but 1 is not the choice True
        check_choice("flag", 1, (True, False))


def test_flag_text_and_path_arguments():
    assert check_bool("cache", np.bool_(True)) is True and check_str("item_feature", "x") == "x"
    assert check_path("data_dir", None, allow_none=True) is None
    assert check_path("data_dir", Path("d")) == Path("d")
    for value in (1, "yes", None):
        with pytest.raises(
            ValueError, match=re.escape(f"cache must be True or False, got {value!r}")
        ):
            check_bool("cache", value)
    for value in ("", 3, None):
        with pytest.raises(ValueError, match=re.escape("item_feature must be a non-empty string")):
            check_str("item_feature", value)
    for value in ("", 3, b"d"):
        with pytest.raises(
            ValueError,
            match=re.escape(f"data_dir must be a path (str or os.PathLike) or None, got {value!r}"),
        ):
            check_path("data_dir", value, allow_none=True)


@pytest.mark.parametrize(
    "action", [3.7, "3", True, np.array([3]), None, np.float64(3.0), 50, -1], ids=repr
)
def test_a_single_action_must_be_an_item_index(action):
    env = gym.make("Spotify-v0")
    env.reset(seed=0)
    expected = (
        f"action must be an integer item index in [0, 50), got {action!r} ({type(action).__name__})"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        env.step(action)


@pytest.mark.parametrize("action", [np.int64(3), np.array(3), 3], ids=repr)
def test_numpy_integer_actions_act_like_python_ints(action):
    env = gym.make("Spotify-v0")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(action)
    env.reset(seed=0)
    assert env.step(3)[1] == reward and check_action(action, 50) == 3


def test_a_batch_of_actions():
    assert check_actions([1, 2], n_items=3, n=2).dtype == np.int64
    with pytest.raises(
        ValueError, match=re.escape("actions must be 2 integers, one item per user, got a float64")
    ):
        check_actions(np.array([1.0, 2.0]), n_items=3, n=2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "actions must be item indices in [0, 3), got 3 at position 1 (1 of 2 outside)"
        ),
    ):
        check_actions(np.array([0, 3]), n_items=3, n=2)
    envs = gym.make_vec("Spotify-v0", num_envs=2)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be 2 integers"):
        envs.step(np.array([0.0, 1.5]))


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"clusters": 2.5}, "clusters must be a positive integer, got 2.5 (float)"),
        ({"clusters": True}, "clusters must be a positive integer, got True (bool)"),
        ({"clusters": "25"}, "clusters must be a positive integer, got '25' (str)"),
        ({"clusters": None}, "clusters must be a positive integer, got None (NoneType)"),
        ({"n_users": 2.5}, "n_users must be a positive integer, got 2.5 (float)"),
        ({"horizon": 2.5}, "horizon must be a positive integer, got 2.5 (float)"),
        ({"messages": 25.0}, "messages must be an integer in [1, 100], got 25.0 (float)"),
        ({"p_match": "high"}, "p_match must be a number in [0, 1], got 'high' (str)"),
        ({"seed": 1.5}, "seed must be an integer >= 0 or None, got 1.5 (float)"),
    ],
)
def test_vaccine_arguments_are_checked_not_truncated(kwargs, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        gym.make("VaccineMessaging-v0", **{"n_users": 300, "clusters": 3, "messages": 6, **kwargs})


@pytest.mark.parametrize(
    ("env_id", "kwargs", "shown"),
    [
        (
            "HMFashion-v0",
            {"n_items": "10"},
            "n_items must be a positive integer or 'all', got '10'",
        ),
        (
            "HMFashion-v0",
            {"n_customers": 1e3},
            "n_customers must be a positive integer, got 1000.0 (float)",
        ),
        (
            "HMFashion-v0",
            {"test_fraction": "half"},
            "test_fraction must be a number in (0, 1), got 'half' (str)",
        ),
        (
            "HMFashion-v0",
            {"item_feature": 3},
            "item_feature must be a column name or a list of them, got 3",
        ),
        ("HMFashion-v0", {"cache": "yes"}, "cache must be True or False, got 'yes' (str)"),
        (
            "HMFashion-v0",
            {"data_dir": 3},
            "data_dir must be a path (str or os.PathLike) or None, got 3 (int)",
        ),
        (
            "HMFashion-v0",
            {"unknown_ids": "skip"},
            "unknown_ids must be one of ('drop', 'error'), got 'skip' (str)",
        ),
        ("Spotify-v0", {"horizon": True}, "horizon must be a positive integer, got True (bool)"),
        (
            "Spotify-v0",
            {"item_features": "genre"},
            "item_features must be one of ('rank', 'audio', 'both')",
        ),
    ],
)
def test_other_env_arguments_are_checked(env_id, kwargs, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        gym.make(env_id, **kwargs)


def test_vector_env_arguments():
    with pytest.raises(
        ValueError, match=re.escape("num_envs must be a positive integer, got 2.5 (float)")
    ):
        gym.make_vec("Spotify-v0", num_envs=2.5)
