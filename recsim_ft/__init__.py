"""recsim-ft: recommendation environments, logged data, and FT-Mamba / FT-Transformer two-tower
recommenders evaluated back inside the same environments."""

from typing import Any

from recsim_ft.envs import ENV_IDS, RecEnv, register_envs
from recsim_ft.schema import Batch, Feature, Schema

register_envs()

__version__ = "0.2.0.dev0"
__all__ = ["ENV_IDS", "Batch", "Feature", "RecEnv", "Schema", "__version__", "run_online"]


def __getattr__(name: str) -> Any:
    """``run_online`` is imported on first use, so ``import recsim_ft`` stays light."""
    if name == "run_online":
        from recsim_ft.online import run_online

        return run_online
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
