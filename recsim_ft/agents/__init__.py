"""Recommenders behind one interface (``Agent``): the two-tower models, the baselines (chance,
popularity, the oracle, and the strong ones of ``tabular``: any scikit-learn model, a GBDT,
per-item ridge, segment popularity) and the bandits that learn online.

``TwoTowerAgent`` is imported on first use, so the baselines work without loading torch models.
"""

from typing import Any

from recsim_ft.agents.bandits import (
    EpsilonGreedyAgent,
    LinUCBAgent,
    OnlineAgent,
    OnlineTwoTowerAgent,
    ThompsonSamplingAgent,
)
from recsim_ft.agents.base import Agent
from recsim_ft.agents.baselines import OracleAgent, PopularityAgent, RandomAgent
from recsim_ft.agents.tabular import (
    GBDTAgent,
    LinearAgent,
    SegmentPopularityAgent,
    SklearnAgent,
)

__all__ = [
    "Agent",
    "EpsilonGreedyAgent",
    "GBDTAgent",
    "LinearAgent",
    "LinUCBAgent",
    "OnlineAgent",
    "OnlineTwoTowerAgent",
    "OracleAgent",
    "PopularityAgent",
    "RandomAgent",
    "SegmentPopularityAgent",
    "SklearnAgent",
    "ThompsonSamplingAgent",
    "TwoTowerAgent",
]


def __getattr__(name: str) -> Any:
    if name == "TwoTowerAgent":
        from recsim_ft.agents.two_tower import TwoTowerAgent

        return TwoTowerAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
