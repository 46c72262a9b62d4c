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

from recsim_ft.checks import check_choice
from recsim_ft.data.log import (
    InteractionLog,
    check_propensities,
    logged_uniform_slates,
    uniform_slate_cascade,
)
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


#: The layouts of ``to_obp``, and which OBP estimators each is for.
OBP_LAYOUTS = ("bandit", "slates", "impressions")


def to_obp(log: InteractionLog, env: Any = None, layout: str | None = None) -> dict[str, Any]:
    """The log in one of Open Bandit Pipeline's ``bandit_feedback`` layouts (``docs/obp.md``).

    ``layout`` (default: ``"bandit"`` for a log of single recommendations, ``"slates"`` for a
    slate log):

    - ``"bandit"``, for OBP's ``OffPolicyEvaluation`` (IPW, SNIPW, DM, DR, ...): one row per
      event. Keys ``n_rounds``, ``n_actions``, ``context`` ((n_rounds, d) float64: the user's
      one-hot categorical features then the numeric ones, as ``user_observations(...,
      flatten=True)``), ``action``, ``reward``, ``pscore`` (the behaviour policy's probability of
      the row's action), ``position`` (all 0) and ``action_context`` ((n_actions, d_item)
      float64 item features, flattened the same way). With ``env`` (the log's env) it adds
      ``expected_reward`` ((n_rounds, n_actions), the env's true mean rewards of the logged
      users), which obp's ``calc_ground_truth_policy_value`` reads.
    - ``"slates"``, for OBP's ``SlateOffPolicyEvaluation`` (``SlateStandardIPS``,
      ``SlateIndependentIPS``, ``SlateRewardInteractionIPS``): one row per (slate, position),
      slate by slate. Keys ``n_rounds`` (slates), ``n_unique_action``, ``len_list`` (k),
      ``slate_id``, ``context`` (one row per slate), ``action``, ``reward``, ``position``,
      ``pscore`` (the whole slate's probability, on each of its rows),
      ``pscore_item_position`` (the item's at its position), ``pscore_cascade`` (the slate's
      first items', up to the row's position; only where the log determines it, the uniform
      slate policy: see ``recsim_ft.ope.cascade_propensities``) and ``action_context``.
    - ``"impressions"``, a slate log for OBP's ``OffPolicyEvaluation`` as the Open Bandit
      Dataset stores one: each shown item is a round at its ``position``, ``pscore`` the item's
      probability at that position. OBP's IPW there is recsim-ft's ``iips`` divided by the slate
      size (a mean over impressions, not slates); OBP's slate estimators must not read it.

    A log without propensities (NaN, from a policy that did not report them) or with one outside
    (0, 1] is refused, as recsim-ft's own estimators refuse it: obp's need them; so is an ``env``
    the log was not collected in.
    """
    slates = log.slate_columns
    layout = check_choice(
        "layout",
        ("bandit" if slates is None else "slates") if layout is None else layout,
        OBP_LAYOUTS,
    )
    if (slates is None) != (layout == "bandit"):
        raise ValueError(
            f"layout {layout!r} is for "
            + ("a log of single recommendations" if layout == "bandit" else "slate logs")
            + f"; this {log.env_id} log holds "
            + ("single recommendations" if slates is None else "slates")
        )
    if env is not None:
        log.check_env(env)  # expected_reward of another env's users would be another's
    check_propensities(log.propensities, f"{log.env_id} log")  # every pscore in (0, 1]
    items = user_observations(log.item_table, log.item_schema, flatten=True)
    if layout == "slates":
        k = slates.slate_size
        feedback: dict[str, Any] = {
            "n_rounds": len(log) // k,
            "n_unique_action": log.n_items,
            "len_list": k,
            "slate_id": slates.slate_ids.copy(),
            "context": user_observations(log.users[::k], log.user_schema, flatten=True),
            "action": log.actions.copy(),
            "reward": log.rewards.astype(np.float64),
            "position": slates.positions.copy(),
            "pscore": slates.slate_propensities.copy(),
            "pscore_item_position": log.propensities.copy(),
            "action_context": items,
        }
        item_propensities = log.propensities.reshape(-1, k)
        slate_propensities = slates.slate_propensities[::k]
        if logged_uniform_slates(item_propensities, slate_propensities, log.n_items):
            # else the log does not determine them, and OBP's RIPS cannot run on it
            cascade = uniform_slate_cascade(log.n_items, k)
            feedback["pscore_cascade"] = np.tile(cascade, len(log) // k)
        return feedback
    feedback = {
        "n_rounds": len(log),
        "n_actions": log.n_items,
        "context": user_observations(log.users, log.user_schema, flatten=True),
        "action": log.actions.copy(),
        "reward": log.rewards.astype(np.float64),
        "pscore": log.propensities.copy(),
        "position": np.zeros(len(log), np.int64) if slates is None else slates.positions.copy(),
        "action_context": items,
    }
    if env is not None and slates is None:
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
