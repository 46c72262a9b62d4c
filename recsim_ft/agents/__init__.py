"""Recommenders behind one protocol (``Agent``): the two-tower models and the baselines.

``TwoTowerAgent`` is imported on first use, so the baselines work without loading torch models.
"""

from typing import Any

from recsim_ft.agents.base import Agent
from recsim_ft.agents.baselines import OracleAgent, PopularityAgent, RandomAgent
from recsim_ft.agents.online import (
    EpsilonGreedyAgent,
    LinUCBAgent,
    OnlineAgent,
    OnlineTwoTowerAgent,
    ThompsonSamplingAgent,
)

__all__ = ["Agent", "EpsilonGreedyAgent", "LinUCBAgent", "OnlineAgent", "OnlineTwoTowerAgent", "OracleAgent",
           "PopularityAgent", "RandomAgent", "ThompsonSamplingAgent", "TwoTowerAgent"]


def __getattr__(name: str) -> Any:
    if name == "TwoTowerAgent":
        from recsim_ft.agents.two_tower import TwoTowerAgent

        return TwoTowerAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
