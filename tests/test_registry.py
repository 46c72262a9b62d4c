"""The agent registry (``recsim_ft.agents.registry``): every name a run, a table or the command
line takes is one entry, and a new entry is a new agent everywhere a run goes."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from recsim_ft import experiments
from recsim_ft.agents import Agent, SegmentPopularityAgent
from recsim_ft.agents.registry import REGISTRY, AgentEntry, entry, names
from recsim_ft.data import collect
from recsim_ft.evaluate import evaluate
from recsim_ft.experiments import RunSpec, derived_seeds
from recsim_ft.experiments.specs import agent_label, row_order
from recsim_ft.train import TrainConfig

TOY = "toy_env:ToyRec-v0"


def test_the_views_of_the_registry_are_the_tables_agents():
    assert experiments.TABLE_AGENTS == names(table=True)
    assert experiments.STRONG_BASELINES == ("gbdt", "linear", "segment_popularity")
    assert experiments.TUNE_AGENTS == ("mamba", "transformer")
    assert set(experiments.BASELINE_GRIDS) == {n for n, e in REGISTRY.items() if e.grid}
    assert set(experiments.TUNABLE_AGENTS) == set(names(trains_model=True)) | set(
        experiments.BASELINE_GRIDS
    )
    with pytest.raises(ValueError, match="unknown agent 'gbm'; choose from"):
        entry("gbm")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_agent_builds_from_its_entry_and_ranks_the_catalogue(name):
    env = gym.make(TOY)
    registered = REGISTRY[name]
    train = TrainConfig(steps=2, eval_every=None, batch_size=16)
    agent = registered.build(env, seed=1, params={}, preset="quick", train=train, model={})
    assert isinstance(agent, Agent)
    if registered.fits:
        log = collect(env, n=200, seed=0)
        agent.fit(log, progress=False) if registered.trains_model else agent.fit(log)
    users = env.unwrapped.sample_users(5, np.random.default_rng(0))
    assert agent.checked_scores(users).shape == (5, env.unwrapped.n_items)
    assert registered.trains_model == (name in experiments.EMBEDDERS)


def test_a_new_entry_is_an_agent_every_run_takes(tmp_path, monkeypatch):
    """One entry: the run builds, fits, evaluates and labels it; its hyperparameters are checked."""
    monkeypatch.setitem(
        REGISTRY,
        "segments",
        AgentEntry(
            "segments",
            "segment shares",
            lambda env, seed, params, **_: SegmentPopularityAgent(
                env, by="positive_share", **params
            ),
            {"prior": (1000.0, 10.0)},
        ),
    )
    spec = RunSpec(TOY, "segments", 0, setting="toy", params={"prior": 1000.0}, n_samples=400)
    assert spec.relative_dir().as_posix() == "toy/segments-prior1000/seed0"
    with pytest.raises(ValueError, match="has no hyperparameter 'ridge'"):
        RunSpec(TOY, "segments", params={"ridge": 1.0})
    with pytest.raises(ValueError, match="unknown agent 'segment'"):
        RunSpec(TOY, "segment")
    metrics = experiments.run(spec, tmp_path / "run")
    same = SegmentPopularityAgent(gym.make(TOY), by="positive_share", prior=1000.0)
    expected = evaluate(
        same.fit(collect(gym.make(TOY), n=400, seed=derived_seeds(0)[0])),
        gym.make(TOY),
        n_users=100,
        seed=derived_seeds(0)[2],
    )
    assert metrics["HR@1"] == pytest.approx(expected["HR@1"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["spec"]
    assert saved["agent"] == "segments" and saved["lr"] is None  # trains no model
    assert (
        agent_label("segments") == "segment shares"
        and row_order("segments")[0] == len(REGISTRY) - 1
    )
