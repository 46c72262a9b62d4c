"""Every agent a run, a sweep, a table or the command line can name, in one table: what the
name builds, its label in a table, the hyperparameters it takes (and the grid ``tune`` searches),
whether it trains a two-tower model, and whether it is a strong baseline.

Adding an agent is one entry of ``REGISTRY``: ``recsim-ft reproduce --agents NAME`` and
``tune``, the tables' labels and order and the paired tests read it.

>>> REGISTRY["gbdt"].label, REGISTRY["gbdt"].strong, trains_model("mamba"), trains_model("gbdt")
('GBDT', True, True, False)
>>> names(table=True)
('mamba', 'transformer', 'gbdt', 'linear', 'segment_popularity', 'oracle', 'popularity', 'random')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from recsim_ft.agents.base import Agent
from recsim_ft.agents.baselines import OracleAgent, PopularityAgent, RandomAgent
from recsim_ft.agents.tabular import GBDTAgent, LinearAgent, SegmentPopularityAgent
from recsim_ft.models.presets import EMBEDDERS

#: How an entry builds its agent, unfitted: ``build(env, seed, params, preset, train, model)``
#: (``seed``: the run's training seed; ``params``: the agent's hyperparameters; ``preset``,
#: ``train`` (a ``recsim_ft.train.TrainConfig``) and ``model`` (``ModelConfig`` options): the
#: two-tower models' only).
Builder = Callable[..., Agent]


@dataclass(frozen=True)
class AgentEntry:
    """One agent name. ``grid``: the hyperparameters it takes and the values ``tune`` tries (the
    first of each: the agent's default); ``trains_model``: a two-tower model, trained with a
    preset and a ``TrainConfig``, saved with its run; ``strong``: a strong baseline, beside
    every model in every table; ``paired``: where a table has it, the models are tested
    against it (as against ``REFERENCE_BASELINE`` always); ``fits``: it learns from the logged
    data (the oracle and chance do not); ``table``: in a paper table by default; ``tuned``:
    ``tune`` searches it by default."""

    name: str
    label: str
    build: Builder
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict, hash=False)
    trains_model: bool = False
    strong: bool = False
    paired: bool = False
    fits: bool = True
    table: bool = False
    tuned: bool = False


def _two_tower(embedder: str) -> Builder:
    def build(env: gym.Env, seed: int, params: dict, preset: str, train: Any, model: dict):
        from recsim_ft.agents.two_tower import TwoTowerAgent  # torch models on first use

        return TwoTowerAgent(env, embedder, preset, train, **model)

    return build


def _plain(cls: Callable[..., Agent], seeded: bool = False, **fixed: Any) -> Builder:
    """A builder of ``cls(env, **fixed, **params)`` (and ``seed=seed`` where ``seeded``)."""

    def build(env: gym.Env, seed: int, params: dict, *_: Any, **__: Any) -> Agent:
        return cls(env, **fixed, **({"seed": seed} if seeded else {}), **params)

    return build


_SEGMENT_GRID = {"prior": (10.0, 1.0, 100.0), "n_bins": (4, 2, 8)}
_TWO_TOWER_LABELS = {"mamba": "FT-Mamba", "transformer": "FT-Transformer", "mlp": "MLP two-tower"}

#: Every agent by name, in table order.
REGISTRY: dict[str, AgentEntry] = {
    entry.name: entry
    for entry in (
        *(
            AgentEntry(
                embedder,
                _TWO_TOWER_LABELS[embedder],
                _two_tower(embedder),
                trains_model=True,
                table=embedder != "mlp",
                tuned=embedder != "mlp",
            )
            for embedder in EMBEDDERS
        ),
        AgentEntry(
            "gbdt",
            "GBDT",
            _plain(GBDTAgent, seeded=True),
            {"learning_rate": (0.1, 0.05, 0.2), "max_leaf_nodes": (31, 63)},
            strong=True,
            table=True,
        ),
        AgentEntry(
            "linear",
            "per-item ridge",
            _plain(LinearAgent),
            {"ridge": (1.0, 0.1, 10.0, 100.0)},
            strong=True,
            table=True,
        ),
        AgentEntry(
            "segment_popularity",
            "segment popularity",
            _plain(SegmentPopularityAgent),
            _SEGMENT_GRID,
            strong=True,
            table=True,
        ),
        # popularity counted as each item's share of the positive rewards: the popularity
        # baselines to show over a large catalogue, where an item is logged a few times and a
        # rate is noise (docs/results/ranking_preset.md); not in the paper's tables by default
        # (over 100 items or fewer they rank as the rate does)
        AgentEntry(
            "popularity_share",
            "popularity (share)",
            _plain(PopularityAgent, by="positive_share"),
            paired=True,
        ),
        AgentEntry(
            "segment_popularity_share",
            "segment popularity (share)",
            _plain(SegmentPopularityAgent, by="positive_share"),
            _SEGMENT_GRID,
            paired=True,
        ),
        AgentEntry("oracle", "oracle", _plain(OracleAgent), fits=False, table=True),
        AgentEntry("popularity", "popularity", _plain(PopularityAgent), table=True),
        AgentEntry("random", "random", _plain(RandomAgent, seeded=True), fits=False, table=True),
    )
}


#: The strong default every model of a table is tested against (``recsim_ft.experiments.stats``)
#: and drawn beside in its curves.
REFERENCE_BASELINE = "gbdt"


def entry(name: str) -> AgentEntry:
    """The entry of agent ``name``, or an error naming the agents there are."""
    if name not in REGISTRY:
        raise ValueError(f"unknown agent {name!r}; choose from {tuple(REGISTRY)}")
    return REGISTRY[name]


def trains_model(name: str) -> bool:
    """Whether agent ``name`` trains a two-tower model (False for a name not registered)."""
    return name in REGISTRY and REGISTRY[name].trains_model


def names(**wanted: bool) -> tuple[str, ...]:
    """The agent names, in table order, whose entries have every ``wanted`` flag value
    (``names(strong=True)``: the strong baselines)."""
    return tuple(
        name
        for name, e in REGISTRY.items()
        if all(getattr(e, flag) == value for flag, value in wanted.items())
    )
