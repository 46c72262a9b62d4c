"""Moved to ``recsim_ft.envs.hm.data`` in version 0.2; this path serves its names for one
release, with a DeprecationWarning."""

import recsim_ft.envs.hm.data as _moved
from recsim_ft._deprecation import moved_names

__getattr__ = moved_names(
    __name__, {name: f"{_moved.__name__}.{name}" for name in dir(_moved) if name[:2] != "__"}
)
