"""One run: fit (or build) one agent on one env setting with one seed, evaluate it on the env's
test users, and write its run directory (``recsim_ft.experiments.rundir``: its files, the
order they are written in, and what reads them)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_ft.agents import Agent
from recsim_ft.agents.registry import entry
from recsim_ft.data import InteractionLog, collect
from recsim_ft.envs import make_env
from recsim_ft.evaluate import evaluate, recommended_minus_liked
from recsim_ft.experiments.rundir import (
    CONFIG_FILE,
    CURVE_FILE,
    DONE_MARKER,
    ITEMS_FILE,
    METRICS_FILE,
    RunDir,
    SavedRun,
)
from recsim_ft.experiments.specs import RunSpec, derived_seeds
from recsim_ft.models.io import MODEL_FILE
from recsim_ft.protocol import protocol_for
from recsim_ft.train import CHECKPOINT_NAME, Progress


def _metrics_for_json(
    agent: Any, env: Any, spec: RunSpec, n_users: int, test_seed: int
) -> dict[str, float]:
    """``evaluate``'s metrics as floats, as ``metrics.json`` stores them."""
    metrics = evaluate(
        agent, env, n_users=n_users, seed=test_seed, ks=spec.train.ks, split=spec.train.eval_split
    )
    return {name: float(value) for name, value in metrics.items()}


class _TimedScoring:
    """An agent's ``score_items`` with a stopwatch: what scoring the test users cost."""

    def __init__(self, agent: Agent) -> None:
        self.agent, self.env = agent, agent.env
        self.seconds, self.users = 0.0, 0

    def score_items(self, users: Any) -> np.ndarray:
        start = time.perf_counter()
        scores = self.agent.score_items(users)
        self.seconds += time.perf_counter() - start
        self.users += len(users)
        return scores

    @property
    def ms_per_1000_users(self) -> float:
        return 1e6 * self.seconds / max(self.users, 1)


def run(
    spec: RunSpec,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: Progress = None,
    keep_checkpoint: bool = True,
) -> dict[str, float]:
    """Fit and evaluate the agent of ``spec``, writing the run directory; returns the metrics.

    ``resume`` continues an interrupted two-tower training from its checkpoint (resume state)
    in ``run_dir``; ``keep_checkpoint=False`` deletes the checkpoint once the run is finished
    (sweeps); ``progress`` shows the training (see ``recsim_ft.train.Progress``). ``None``
    fields of ``spec`` take the env's protocol (``recsim_ft.protocol``).
    """
    run_dir = RunDir(run_dir)
    kept = (run_dir / CHECKPOINT_NAME).exists() or run_dir.done
    changed = run_dir.differences(spec) if resume and kept else []
    if changed:  # refused before anything in run_dir is touched
        raise ValueError(
            f"cannot resume {run_dir}: it holds a run with other settings ({', '.join(changed)}); "
            "resume with its settings, or write to another directory"
        )
    run_dir.path.mkdir(parents=True, exist_ok=True)
    data_seed, train_seed, test_seed = derived_seeds(spec.seed)
    env = make_env(spec.env_id, spec.env_kwargs)
    config: dict[str, Any] = {
        "spec": spec.to_dict(),
        "seeds": {"data": data_seed, "train": train_seed, "test": test_seed},
    }
    run_dir.write(CONFIG_FILE, config)

    costs: dict[str, float] = {}
    start = time.perf_counter()
    log: InteractionLog | None = None
    registered = entry(spec.agent)
    if registered.fits:
        if spec.data is not None:
            log = InteractionLog.load(spec.data)
        else:
            log = collect(env, n=spec.n_samples or protocol_for(env).n_samples, seed=data_seed)
        costs["collect_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    extra: dict[str, Any] = {}
    # the train seed also seeds a two-tower model's initial weights
    train_config = replace(spec.train, seed=train_seed, eval_seed=test_seed)
    agent = registered.build(
        env,
        seed=train_seed,
        params=spec.params,
        preset=spec.preset,
        train=train_config,
        model=spec.model,
    )
    if registered.trains_model:
        agent.fit(log, out_dir=run_dir.path, resume=resume, progress=progress)
        result = agent.result_
        config.update(model=asdict(agent.model_.config), train=asdict(result.config))
        run_dir.write(CONFIG_FILE, config)
        run_dir.write(CURVE_FILE, result.curve.to_csv(index=False))
        agent.save(run_dir / MODEL_FILE, overwrite=True)
        extra["n_params"] = sum(p.numel() for p in agent.model_.parameters() if p.requires_grad)
        extra["train_steps_per_s"] = result.steps_per_s
    elif registered.fits:
        agent.fit(log)
    fit_seconds = time.perf_counter() - start

    timed = _TimedScoring(agent)
    evaluation = spec.train
    metrics = _metrics_for_json(timed, env, spec, evaluation.eval_users, test_seed)
    costs["score_ms_per_1000_users"] = timed.ms_per_1000_users
    users = env.eval_users(evaluation.eval_split, evaluation.eval_users, test_seed)
    items = pd.DataFrame(
        {
            "item": np.arange(env.n_items),
            "liked": env.relevant(users).sum(axis=0),
            "recommended_minus_liked": recommended_minus_liked(
                agent, env, evaluation.eval_users, test_seed, evaluation.eval_split
            ),
        }
    )
    run_dir.write(ITEMS_FILE, items.to_csv(index=False))
    run_dir.write(METRICS_FILE, {"metrics": metrics, "fit_seconds": fit_seconds, **costs, **extra})
    run_dir.write(DONE_MARKER, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if spec.trains_model and not keep_checkpoint:
        (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    return metrics


def evaluate_saved_model(
    run: str | os.PathLike | SavedRun, n_users: int | None = None, seed: int | None = None
) -> dict[str, float]:
    """Evaluate the model file of a finished two-tower run (its directory, or the run loaded)
    again, on ``n_users`` test users drawn with ``seed`` (default: the run's own test users)."""
    saved = run if isinstance(run, SavedRun) else RunDir(run).load()
    test_seed = saved.test_seed if seed is None else seed
    n_users = n_users or saved.spec.train.eval_users
    return _metrics_for_json(saved.agent, saved.env, saved.spec, n_users, test_seed)


def add_scoring_cost(run_dir: Path) -> None:
    """Give a finished two-tower run made before the cost columns its scoring cost: load its
    model, score its test users as the run did (the first call embeds the catalogue, as in a
    run), and add ``score_ms_per_1000_users`` to its ``metrics.json``; a run that has it, or has
    no model file, is left alone."""
    run = RunDir(run_dir)
    saved = json.loads((run / METRICS_FILE).read_text())
    if "score_ms_per_1000_users" in saved or not (run / MODEL_FILE).is_file():
        return
    loaded = run.load()
    timed = _TimedScoring(loaded.agent)
    timed.score_items(loaded.users(loaded.spec.train.eval_users))
    saved["score_ms_per_1000_users"] = timed.ms_per_1000_users
    run.write(METRICS_FILE, saved)
