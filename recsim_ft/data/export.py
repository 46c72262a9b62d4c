"""Hand a collected log to other tools: Stable-Baselines3 replay buffers, off-policy tables and
Open Bandit Pipeline's ``bandit_feedback`` dict (without depending on obp).

Every recsim-ft env is a contextual bandit, so each logged event is one whole episode: the
transition ``(obs, action, reward, next_obs, done)`` has ``done=True`` and ``next_obs = obs``
(nothing follows it, and with ``done=True`` an off-policy learner never bootstraps from
``next_obs``). Stable-Baselines3 is the ``rl`` extra and is imported only by
:func:`to_replay_buffer`.

>>> import gymnasium as gym
>>> from recsim_ft.data import collect
>>> log = collect(gym.make("Spotify-v0"), n=100, seed=0)
>>> to_bandit_table(log).columns[-3:].tolist()
['action', 'reward', 'propensity']
>>> user_observations(log.users[:2], log.user_schema)["numeric"].shape
(2, 20)
>>> feedback = to_obp(log)
>>> feedback["n_rounds"], feedback["n_actions"], feedback["action_context"].shape
(100, 50, (50, 50))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from gymnasium import spaces

from recsim_ft.data.log import InteractionLog
from recsim_ft.schema import Batch, Schema

if TYPE_CHECKING:
    from stable_baselines3.common.buffers import ReplayBuffer


def user_observations(
    users: Batch, schema: Schema, flatten: bool = False
) -> dict[str, np.ndarray] | np.ndarray:
    """The observations of ``users`` as a vector env would return them, one row per user.

    ``flatten=False``: a dict of ``schema.space()`` with one leading row axis (what
    ``MultiInputPolicy`` reads). ``flatten=True``: what Gymnasium's ``FlattenObservation`` wrapper
    gives, row by row (``spaces.flatten``: sub-spaces in key order, categorical codes one-hot),
    a (n, flatdim) float64 array for ``MlpPolicy``.
    """
    schema.validate(users, "users")
    if not flatten:
        return users.observations(schema)
    parts = []
    for key in schema.space().spaces:  # the Dict space's own key order, as spaces.flatten uses
        if key == "numeric":
            parts.append(users.numeric.astype(np.float64))
        else:
            parts += [
                np.eye(card, dtype=np.float64)[codes]
                for card, codes in zip(schema.cardinalities, users.categorical.T, strict=True)
            ]
    return np.concatenate(parts, axis=1)


def to_bandit_table(log: InteractionLog) -> pd.DataFrame:
    """One row per event: the context (``user.<feature>``, categorical features as codes), then
    ``action``, ``reward`` and ``propensity``, the columns off-policy estimators read.

    Propensities are NaN where the behaviour policy did not report them.
    """
    columns = {
        f"user.{f.name}": log.users.numeric[:, j] for j, f in enumerate(log.user_schema.numeric)
    }
    columns |= {
        f"user.{f.name}": log.users.categorical[:, j]
        for j, f in enumerate(log.user_schema.categorical)
    }
    return pd.DataFrame(
        {**columns, "action": log.actions, "reward": log.rewards, "propensity": log.propensities}
    )


def to_obp(log: InteractionLog, env: Any = None) -> dict[str, Any]:
    """The log in Open Bandit Pipeline's ``bandit_feedback`` layout, for its estimators.

    Keys: ``n_rounds`` (rows), ``n_actions`` (items), ``context`` ((n_rounds, d) float64: the
    user's numeric features then one-hot categorical ones, as ``user_observations(...,
    flatten=True)``), ``action``, ``reward``, ``pscore`` (the behaviour policy's probability of
    the row's action), ``position`` (int64: 0 for single recommendations; the slate position in
    a slate log, whose rows are then impressions as in the Open Bandit Dataset, ``pscore`` the
    probability of the item at that position) and ``action_context`` ((n_actions, d_item)
    float64 item features, flattened the same way). A slate log adds ``slate_id`` and
    ``pscore_slate`` (the whole slate's probability). With ``env`` (the log's env) it adds
    ``expected_reward`` ((n_rounds, n_actions), the env's true mean rewards of the logged users),
    which obp's ground-truth helpers read.

    A log without propensities (NaN, from a policy that did not report them) is refused: obp's
    estimators need them.
    """
    missing = np.isnan(log.propensities)
    if missing.any():
        raise ValueError(
            f"{log.env_id} log: {int(missing.sum())} of {len(log)} propensities are NaN; "
            "bandit_feedback needs the behaviour policy's pscore of every row"
        )
    slates = log.slate_columns
    feedback: dict[str, Any] = {
        "n_rounds": len(log),
        "n_actions": log.n_items,
        "context": user_observations(log.users, log.user_schema, flatten=True),
        "action": log.actions.copy(),
        "reward": log.rewards.astype(np.float64),
        "pscore": log.propensities.copy(),
        "position": np.zeros(len(log), np.int64) if slates is None else slates.positions.copy(),
        "action_context": user_observations(log.item_table, log.item_schema, flatten=True),
    }
    if slates is not None:
        feedback["slate_id"] = slates.slate_ids.copy()
        feedback["pscore_slate"] = slates.slate_propensities.copy()
    if env is not None:
        feedback["expected_reward"] = env.unwrapped.expected_reward(log.users)
    return feedback


def to_replay_buffer(
    log: InteractionLog,
    buffer: ReplayBuffer | None = None,
    *,
    flatten: bool = False,
    device: Any = "cpu",
) -> ReplayBuffer:
    """Write ``log`` into a Stable-Baselines3 replay buffer, one one-step episode per event.

    Args:
        log: the events to export.
        buffer: an existing ``ReplayBuffer`` / ``DictReplayBuffer`` (e.g. ``dqn.replay_buffer``,
            to pretrain on logged data) with room for ``len(log)`` more transitions and one env;
            ``None`` makes a new one of exactly ``len(log)`` transitions.
        flatten: for a new buffer, store flattened observations (a ``ReplayBuffer`` for an env
            wrapped in ``FlattenObservation``) instead of dict ones (a ``DictReplayBuffer`` for
            ``MultiInputPolicy``).
        device: torch device of the samples of a new buffer.

    Returns:
        the buffer, with ``pos`` advanced past the new transitions (``full`` when it is).
    """
    from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

    dict_space = log.user_schema.space()
    action_space = spaces.Discrete(log.n_items)
    if buffer is None:
        if flatten:
            buffer = ReplayBuffer(
                len(log), spaces.flatten_space(dict_space), action_space, device=device
            )
        else:
            buffer = DictReplayBuffer(len(log), dict_space, action_space, device=device)
    flatten = not isinstance(buffer, DictReplayBuffer)
    expected_space = spaces.flatten_space(dict_space) if flatten else dict_space
    if buffer.observation_space != expected_space:
        raise ValueError(
            f"the buffer's observation space {buffer.observation_space} is not the log's "
            f"({log.env_id}: {expected_space})"
        )
    if buffer.action_space != action_space:
        raise ValueError(
            f"the buffer's action space {buffer.action_space} is not the log's {action_space}"
        )
    if buffer.n_envs != 1:
        raise ValueError(
            f"the buffer has n_envs={buffer.n_envs}; logged events fill a buffer with n_envs=1"
        )
    if getattr(buffer, "optimize_memory_usage", False):
        raise ValueError(
            "the buffer has optimize_memory_usage=True, which stores no next observation; "
            "make one with optimize_memory_usage=False"
        )
    room = buffer.buffer_size - buffer.size()
    if len(log) > room:
        raise ValueError(
            f"the buffer has room for {room} more transitions, the log has {len(log)} events; "
            "nothing was written"
        )

    rows = slice(buffer.pos, buffer.pos + len(log))
    observation = user_observations(log.users, log.user_schema, flatten=flatten)
    if flatten:
        buffer.observations[rows, 0] = observation
        buffer.next_observations[rows, 0] = observation
    else:
        for key, values in observation.items():
            buffer.observations[key][rows, 0] = values
            buffer.next_observations[key][rows, 0] = values
    buffer.actions[rows, 0, 0] = log.actions
    buffer.rewards[rows, 0] = log.rewards
    buffer.dones[rows, 0] = 1.0
    buffer.timeouts[rows, 0] = 0.0
    buffer.pos += len(log)
    if buffer.pos == buffer.buffer_size:
        buffer.full, buffer.pos = True, 0
    return buffer
