"""Gymnasium environments of recsim-ft, registered on ``import recsim_ft``."""

from gymnasium.envs.registration import register, registry

from recsim_ft.envs.base import Batch, Feature, RecEnv, Schema, TrainDefaults

ENV_IDS = ("Spotify-v0", "HMFashion-v0", "VaccineMessaging-v0")

_ENTRY_POINTS = {
    "Spotify-v0": "recsim_ft.envs.spotify:SpotifyEnv",
    "HMFashion-v0": "recsim_ft.envs.hm:HMFashionEnv",
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
            register(id=env_id, entry_point=entry_point, vector_entry_point=_VECTOR_ENTRY_POINTS[env_id],
                     disable_env_checker=False)


__all__ = ["Batch", "ENV_IDS", "Feature", "RecEnv", "Schema", "TrainDefaults", "register_envs"]
