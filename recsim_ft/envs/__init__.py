"""Gymnasium environments of recsim-ft, registered on ``import recsim_ft``, and ``make_env``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import register, registry

from recsim_ft._deprecation import moved_names
from recsim_ft.envs.base import RecEnv

#: ``Batch``, ``Feature`` and ``Schema`` were exported here before version 0.2.
__getattr__ = moved_names(
    __name__, {name: f"recsim_ft.schema.{name}" for name in ("Batch", "Feature", "Schema")}
)

ENV_IDS = ("Spotify-v0", "HMFashion-v0", "VaccineMessaging-v0")

_ENTRY_POINTS = {
    "Spotify-v0": "recsim_ft.envs.spotify:SpotifyEnv",
    "HMFashion-v0": "recsim_ft.envs.hm.env:HMFashionEnv",
    "VaccineMessaging-v0": "recsim_ft.envs.vaccine:VaccineMessagingEnv",
}

#: Native batched versions, used by ``gym.make_vec(env_id, num_envs=N)`` (see ``envs/vector.py``).
_VECTOR_ENTRY_POINTS = {
    "Spotify-v0": "recsim_ft.envs.vector:SpotifyVectorEnv",
    "HMFashion-v0": "recsim_ft.envs.vector:HMFashionVectorEnv",
    "VaccineMessaging-v0": "recsim_ft.envs.vector:VaccineMessagingVectorEnv",
}


def register_envs() -> None:
    """Register every env id with Gymnasium (idempotent)."""
    for env_id, entry_point in _ENTRY_POINTS.items():
        if env_id not in registry:
            register(
                id=env_id,
                entry_point=entry_point,
                vector_entry_point=_VECTOR_ENTRY_POINTS[env_id],
                disable_env_checker=False,
            )


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> RecEnv:
    """``gym.make(env_id, **env_kwargs).unwrapped``, with errors that name the bad id or kwarg.

    ``env_id`` may be ``"module:EnvId"`` (Gymnasium imports the module first), which lets sweep
    workers build envs registered outside recsim-ft. A bad kwarg value is refused by the env's
    own argument checks (a ValueError naming the argument).
    """
    try:
        env = gym.make(env_id, **(env_kwargs or {})).unwrapped
    except (gym.error.Error, ModuleNotFoundError) as err:
        raise ValueError(
            f"unknown env id {env_id!r} ({err}); recsim-ft envs: {', '.join(ENV_IDS)}"
        ) from None
    except TypeError as err:  # an argument the env does not take
        raise ValueError(f"bad kwargs {env_kwargs!r} for {env_id}: {err}") from None
    if not isinstance(env, RecEnv):
        raise ValueError(
            f"{env_id} is a Gymnasium env but not a recsim-ft one ({type(env).__name__} has no "
            f"users, items or logs); recsim-ft envs: {', '.join(ENV_IDS)}"
        )
    return env


__all__ = ["ENV_IDS", "RecEnv", "make_env", "register_envs"]
