"""Property tests of every env argument and of ``step``: random types and values either get a
ValueError/TypeError that names an argument of the env, or build an env that holds exactly what
its spec says (nothing truncated, coerced or stored as the wrong type)."""

from __future__ import annotations

import inspect
import numbers
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.envs.base import MODE_DEFAULTS
from recsim_ft.envs.hm.env import HMFashionEnv
from recsim_ft.envs.spotify import SpotifyEnv
from recsim_ft.envs.vaccine import VaccineMessagingEnv

#: Bounded and derandomized, so the suite stays fast and every run tries the same examples.
FEW = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Values of any type, most of them wrong for any argument.
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "25", "abc", "1.5", "drop", "index", "rank"]),
    st.lists(st.integers(0, 3), max_size=3),
    st.builds(np.int64, st.integers(-3, 3)),
    st.builds(np.float64, st.floats(-3, 3)),
    st.sampled_from([np.bool_(True), np.array([3]), np.array(2.5), (0.1, 0.2, 0.3)]),
)


def near_misses(value: Any) -> list[Any]:
    """Values a user might pass for ``value``: the same number as a float or text, a bool, a
    one-element array, the number plus a half."""
    misses = [str(value), np.array([value]), [value]]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        misses += [float(value), value + 0.5, value == 1, np.float64(value)]
    if isinstance(value, str):
        misses += [value.upper(), f" {value}", value.encode()]
    return misses


def either(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A valid value two times in three, else a near miss of one or anything: some arguments
    are wrong, alone or together, and many envs get built."""
    return st.integers(0, 5).flatmap(
        lambda draw: (
            ANYTHING
            if draw == 0
            else valid.flatmap(lambda v: st.sampled_from(near_misses(v)))
            if draw == 1
            else valid
        )
    )


#: a tiny Kaggle-format data set, for the data_dir argument
TINY_KAGGLE = {
    "customers.csv": "customer_id,FN,Active,club_member_status,fashion_news_frequency,age\n"
    "c1,1.0,1.0,ACTIVE,Regularly,25\nc2,,,ACTIVE,NONE,\nc3,,,,,61\n",
    "articles.csv": "article_id,product_code,prod_name\n0100000001,100000,Tee\n"
    "0100000002,100000,Tee\n0200000001,200000,Jeans\n",
    "transactions_train.csv": "t_dat,customer_id,article_id,price\n2020-01-01,c1,0100000001,0.1\n"
    "2020-01-01,c1,0200000001,0.1\n2020-01-02,c2,0100000001,0.1\n2020-01-02,c3,0100000002,0.1\n",
}


@pytest.fixture(scope="module")
def kaggle_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("kaggle")
    for name, text in TINY_KAGGLE.items():
        (directory / name).write_text(text)
    return directory


def messages_and_embeddings() -> st.SearchStrategy:
    """``messages`` as distinct texts with distinct ``embeddings``, float32 (n_messages, 3)."""
    return st.integers(4, 30).flatmap(
        lambda n: st.fixed_dictionaries(
            {
                "messages": st.lists(
                    st.text("abcdef", min_size=1, max_size=6), min_size=n, max_size=n, unique=True
                ),
                "embeddings": hnp.arrays(
                    np.float32, (n, 3), elements=st.floats(-1, 1, width=32), unique=True
                ),
            }
        )
    )


def valid_arguments(env_id: str, kaggle_dir: Path) -> tuple[dict, dict]:
    """(always given, sometimes given) valid values of each argument of ``env_id``, valid
    together too; small populations, so that each env builds in well under a second."""
    if env_id == "Spotify-v0":
        pair = st.tuples(st.floats(0, 0.5), st.floats(0.5, 1))
        return {}, {
            "threshold": st.floats(0, 2),
            "genre_fraction": pair.flatmap(lambda p: st.sampled_from([p, list(p)])),
            "item_features": st.sampled_from(["rank", "audio", "both"]),
            "horizon": st.integers(1, 4),
        }
    if env_id == "VaccineMessaging-v0":
        return {"n_users": st.integers(20, 300), "clusters": st.integers(1, 4)}, {
            "messages": st.integers(4, 12),
            "p_match": st.floats(0, 1),
            "p_mismatch": st.floats(0, 1),
            "item_features": st.sampled_from(["index", "embedding"]),
            "seed": st.one_of(st.none(), st.integers(0, 2**32)),
            "horizon": st.integers(1, 4),
        }
    # n_items always given: the default 100 is more than the tiny Kaggle files sell (3)
    return {"n_customers": st.integers(50, 800), "n_items": st.integers(1, 3)}, {
        "data_dir": st.sampled_from([None, str(kaggle_dir), kaggle_dir]),
        "item_features": st.sampled_from(
            [("prod_name",), ("product_code",), ["prod_name", "product_code"]]
        ),
        "min_test_purchases": st.integers(1, 6),
        "test_fraction": st.floats(0.01, 0.99),
        "seed": st.integers(0, 10),
        "cache": st.booleans(),
        "cache_dir": st.one_of(st.none(), st.just(str(kaggle_dir / "cache"))),
        "unknown_ids": st.sampled_from(["drop", "error"]),
        "horizon": st.integers(1, 4),
    }


def mode_arguments(env_id: str, wrap: Callable[[st.SearchStrategy], st.SearchStrategy]):
    """No mode (half the time), the slate mode or the session mode with some of its arguments,
    each value drawn from ``wrap(valid values)``."""
    largest_slate = 1 if env_id == "HMFashion-v0" else 3  # H&M's tiny Kaggle set sells 3 articles
    slate = st.fixed_dictionaries(
        {"slate_size": wrap(st.integers(1, largest_slate))},
        optional={
            "choice_scale": wrap(st.floats(0, 5)),
            "no_choice_utility": wrap(st.floats(-2, 2)),
        },
    )
    session = st.fixed_dictionaries(
        {"session": wrap(st.just(True))},
        optional={
            "session_length": wrap(st.integers(1, 60)),
            "history_length": wrap(st.integers(0, 6)),
        },
    )
    return st.one_of(st.just({}), st.just({}), slate, session)


def with_modes(kwargs: dict, modes: dict) -> dict:
    """``kwargs`` and ``modes`` together; a session has no horizon (the user's leaving ends it)."""
    if "session" in modes:
        kwargs = {k: v for k, v in kwargs.items() if k != "horizon"}
    return {**kwargs, **modes}


def env_kwargs(
    env_id: str, kaggle_dir: Path, wrap: Callable[[st.SearchStrategy], st.SearchStrategy]
) -> st.SearchStrategy:
    """Kwargs of ``env_id``, each value drawn from ``wrap(valid values)``; the vaccine env gets
    its own message texts and embeddings one time in four."""
    required, optional = valid_arguments(env_id, kaggle_dir)
    kwargs = st.fixed_dictionaries(
        {k: wrap(v) for k, v in required.items()},
        optional={k: wrap(v) for k, v in optional.items()},
    )
    kwargs = st.builds(with_modes, kwargs, mode_arguments(env_id, wrap))
    if env_id != "VaccineMessaging-v0":
        return kwargs
    user_messages = st.one_of(st.just({}), st.just({}), st.just({}), messages_and_embeddings())
    return st.builds(lambda a, b: {**a, **b}, kwargs, user_messages)


def attribute(name: str) -> Callable[[Any], Any]:
    return lambda env: getattr(env, name)


#: the slate and session arguments every env holds as attributes of the same name
MODES_BUILT = {name: attribute(name) for name in MODE_DEFAULTS if name != "dynamics"}
#: per env and argument: what the built env holds for it (None: nothing to read back)
BUILT: dict[str, dict[str, Callable[[Any], Any] | None]] = {
    "Spotify-v0": {
        **MODES_BUILT,
        **{
            name: attribute(name)
            for name in ("threshold", "genre_fraction", "item_features", "horizon")
        },
    },
    "VaccineMessaging-v0": {
        **MODES_BUILT,
        **{
            name: attribute(name)
            for name in (
                "clusters",
                "n_users",
                "p_match",
                "p_mismatch",
                "item_features",
                "seed",
                "horizon",
            )
        },
        "messages": lambda env: env.n_items if env.message_ids[0] >= 0 else env.message_texts,
        "embeddings": attribute("message_embeddings"),
    },
    "HMFashion-v0": {
        **MODES_BUILT,
        **{
            name: attribute(name)
            for name in (
                "data_dir",
                "n_items",
                "min_test_purchases",
                "test_fraction",
                "seed",
                "cache",
                "cache_dir",
                "unknown_ids",
                "horizon",
            )
        },
        "n_customers": lambda env: (
            env.data_summary["customers"] if env.synthetic else env.n_customers
        ),
        # one name is a tuple of one
        "item_features": lambda env: env.item_features,
        "item_feature": lambda env: env.item_features[0],
    },
}
#: every argument of each env: its own, then the slate and session ones (its ``**modes``)
PARAMETERS = {
    env_id: tuple(
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    )
    + tuple(MODE_DEFAULTS)
    for env_id, cls in (
        ("Spotify-v0", SpotifyEnv),
        ("VaccineMessaging-v0", VaccineMessagingEnv),
        ("HMFashion-v0", HMFashionEnv),
    )
}


def same(built: Any, given: Any) -> bool:
    """``built`` is ``given``: equal values of the same kind (a string is not a number, a bool
    is not an integer, an integer is built from an integer only, not from ``2.0``); sequences
    element by element."""
    if isinstance(given, (np.ndarray, list, tuple)) and np.ndim(given) > 0:
        return (
            isinstance(built, (np.ndarray, list, tuple))
            and len(built) == len(given)
            and all(same(b, g) for b, g in zip(built, given, strict=True))
        )
    for kind in (str, (bool, np.bool_)):
        if isinstance(built, kind) != isinstance(given, kind):
            return False
    if isinstance(built, numbers.Integral) and not isinstance(given, numbers.Integral):
        return False
    return bool(built == given)


def check_make(env_id: str, kwargs: dict[str, Any], wrong: str | None = None) -> None:
    """The property: a clear error that names an argument (``wrong`` when given), or an env
    holding what its spec says."""
    try:
        env = gym.make(env_id, **kwargs)
    except (ValueError, TypeError) as err:
        message = str(err)
        named = [p for p in PARAMETERS[env_id] if re.search(rf"\b{p}\b", message)]
        assert named, f"{env_id}{kwargs}: the error names no argument: {message}"
        assert wrong is None or wrong in named, f"{env_id}: {wrong} is not named: {message}"
        event("refused")
        return
    event("built")
    assert env.spec.kwargs.keys() == kwargs.keys()
    for name, value in env.spec.kwargs.items():
        assert same(value, kwargs[name])  # gym keeps a copy
        read_back = BUILT[env_id].get(name)
        if (env_id, name) == ("HMFashion-v0", "n_items") and value is None:  # every article
            assert env.unwrapped.n_items == env.unwrapped.data_summary["articles"]
        elif (env_id, name) in DRAWN_FROM_NONE and value is None:
            drawn = read_back(env.unwrapped)
            assert isinstance(drawn, int) and env.unwrapped.spec_kwargs[name] == drawn
        elif read_back is not None and not (value is None and DEFAULTS[env_id].get(name) is None):
            built = read_back(env.unwrapped)
            assert same(built, value), f"{env_id}: {name}={value!r} built {built!r}"


#: arguments whose None draws a value, which the env records in ``spec_kwargs`` to be rebuilt
DRAWN_FROM_NONE = {("VaccineMessaging-v0", "seed")}


ENV_IDS = ("Spotify-v0", "VaccineMessaging-v0", "HMFashion-v0")
#: defaults of each env's arguments; None given for a None default means "derive it" (e.g. the
#: vaccine embeddings): what the env holds then is derived, not the None given
DEFAULTS = {
    env_id: {
        **{
            name: p.default
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        },
        **MODE_DEFAULTS,
    }
    for env_id, cls in (
        ("Spotify-v0", SpotifyEnv),
        ("VaccineMessaging-v0", VaccineMessagingEnv),
        ("HMFashion-v0", HMFashionEnv),
    )
}


@pytest.mark.parametrize("env_id", ENV_IDS)
@FEW
@given(data=st.data())
def test_random_arguments(kaggle_dir, env_id, data):
    """Several arguments wrong at once, or none."""
    check_make(env_id, data.draw(env_kwargs(env_id, kaggle_dir, either)))


@pytest.mark.parametrize("env_id", ENV_IDS)
@FEW
@given(data=st.data())
def test_one_wrong_argument_is_the_one_named(kaggle_dir, env_id, data):
    """Valid arguments but one, which is a near miss or anything: the env is refused naming that
    argument, or built from it as given."""
    kwargs = data.draw(env_kwargs(env_id, kaggle_dir, lambda valid: valid))
    name = data.draw(st.sampled_from(PARAMETERS[env_id]))
    required, optional = valid_arguments(env_id, kaggle_dir)
    valid = {**required, **optional}.get(name)
    misses = ANYTHING if valid is None else valid.flatmap(lambda v: st.sampled_from(near_misses(v)))
    kwargs[name] = data.draw(st.one_of(misses, ANYTHING))
    check_make(env_id, kwargs, wrong=name)


# -- step ------------------------------------------------------------------------------------------
ACTIONS = st.one_of(
    ANYTHING,
    st.integers(-2, 60),
    st.builds(np.int64, st.integers(-2, 60)),
    st.builds(np.uint8, st.integers(0, 60)),
    st.builds(np.float32, st.integers(0, 60)),
    hnp.arrays(
        st.sampled_from([np.int64, np.int32, np.float64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=2, max_side=2),
        elements={"min_value": 0, "max_value": 5},
    ),
)


@pytest.fixture(scope="module")
def envs() -> dict[str, gym.Env]:
    return {
        "Spotify-v0": gym.make("Spotify-v0"),
        "VaccineMessaging-v0": gym.make("VaccineMessaging-v0", n_users=300, clusters=3, messages=6),
        "HMFashion-v0": gym.make("HMFashion-v0", n_customers=2000, n_items=20),
    }


def is_item_index(action: Any, n_items: int) -> bool:
    """An integer (Python, numpy or a 0-d integer array), not a bool, in [0, n_items)."""
    array = np.asarray(action)
    return (
        array.ndim == 0
        and np.issubdtype(array.dtype, np.integer)
        and not isinstance(action, bool)
        and 0 <= int(array) < n_items
    )


@pytest.mark.parametrize("env_id", ENV_IDS)
@settings(FEW, max_examples=60)
@given(action=ACTIONS)
def test_step_takes_only_an_item_index(envs, env_id, action):
    """An item index is accepted and acts as that index; anything else is refused, named."""
    env = envs[env_id]
    n_items = env.unwrapped.n_items
    env.reset(seed=0)
    try:
        _, reward, _, _, info = env.step(action)
    except ValueError as err:
        assert str(err).startswith(f"action must be an integer item index in [0, {n_items}), got")
        assert not is_item_index(action, n_items)
        return
    assert is_item_index(action, n_items), f"{env_id} accepted {action!r}"
    env.reset(seed=0)
    _, same_reward, _, _, same_info = env.step(int(np.asarray(action)))
    assert (same_reward, same_info) == (reward, info)


@settings(FEW, max_examples=60)
@given(actions=ACTIONS)
def test_vector_step_takes_one_item_index_per_env(actions):
    envs = gym.make_vec("Spotify-v0", num_envs=2)
    envs.reset(seed=0)
    array = np.asarray(actions)
    valid = (
        array.shape == (2,)
        and np.issubdtype(array.dtype, np.integer)
        and ((array >= 0) & (array < 50)).all()
    )
    try:
        envs.step(actions)
    except ValueError as err:
        assert str(err).startswith("actions must be"), err
        assert not valid
        return
    assert valid, f"the vector env accepted {actions!r}"
