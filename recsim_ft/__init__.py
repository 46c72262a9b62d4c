"""recsim-ft: recommendation environments, logged data, and FT-Mamba / FT-Transformer two-tower
recommenders evaluated back inside the same environments."""

from recsim_ft.envs import ENV_IDS, Batch, Feature, RecEnv, Schema, register_envs

register_envs()

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "Batch", "Feature", "RecEnv", "Schema", "__version__"]
