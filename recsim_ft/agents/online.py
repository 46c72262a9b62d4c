"""Deprecated: the bandit agents live in ``recsim_ft.agents.bandits`` since version 0.2 (the
online loop itself is ``recsim_ft.online.run_online``)."""

from recsim_ft._deprecation import moved_names
from recsim_ft.agents import bandits

__getattr__ = moved_names(
    __name__, {name: f"{bandits.__name__}.{name}" for name in bandits.__all__}
)
