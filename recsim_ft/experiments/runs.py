"""One run: fit (or build) one agent on one env setting with one seed, evaluate it on the env's
test users, and write its run directory::

    config.json        what was run (the RunSpec, the model and train configs, the seeds)
    metrics.json       the evaluation metrics, the costs (seconds to collect the log and to fit,
                       milliseconds to score 1,000 test users), parameter count
    curve.csv          the training curve (two-tower agents)
    items.csv          per item: times liked by the test users, recommended minus liked (Fig. 5)
    model.safetensors  the model file (two-tower agents)
    DONE               written last: the run is finished

Each file is written under a temporary name and renamed, and ``DONE`` comes last, so a sweep
that is killed and restarted knows which runs finished.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_ft.agents import Agent, TwoTowerAgent
from recsim_ft.agents.registry import entry
from recsim_ft.checks import check_int
from recsim_ft.data import InteractionLog, collect
from recsim_ft.envs import make_env
from recsim_ft.evaluate import evaluate, recommended_minus_liked
from recsim_ft.experiments.specs import RunSpec, derived_seeds
from recsim_ft.fileio import atomic_path
from recsim_ft.models.io import MODEL_FILE
from recsim_ft.models.presets import config_from_dict, make_config
from recsim_ft.protocol import protocol_for
from recsim_ft.retrieval import export_model
from recsim_ft.train import CHECKPOINT_NAME, Progress

DONE_MARKER = "DONE"
ERROR_FILE = "error.txt"


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` via a temporary file and a rename (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)


def to_json(obj: Any) -> str:
    """The JSON text of every file a run writes: indented, keys sorted, one final newline."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


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
    run_dir = Path(run_dir)
    kept = (run_dir / CHECKPOINT_NAME).exists() or (run_dir / DONE_MARKER).exists()
    changed = differences(spec, run_dir) if resume and kept else []
    if changed:  # refused before anything in run_dir is touched
        raise ValueError(
            f"cannot resume {run_dir}: it holds a run with other settings ({', '.join(changed)}); "
            "resume with its settings, or write to another directory"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    data_seed, train_seed, test_seed = derived_seeds(spec.seed)
    env = make_env(spec.env_id, spec.env_kwargs)
    config: dict[str, Any] = {
        "spec": spec.to_dict(),
        "seeds": {"data": data_seed, "train": train_seed, "test": test_seed},
    }
    write_atomic(run_dir / "config.json", to_json(config))

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
        agent.fit(log, out_dir=run_dir, resume=resume, progress=progress)
        result = agent.result_
        config.update(model=asdict(agent.model_.config), train=asdict(result.config))
        write_atomic(run_dir / "config.json", to_json(config))
        write_atomic(run_dir / "curve.csv", result.curve.to_csv(index=False))
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
    write_atomic(run_dir / "items.csv", items.to_csv(index=False))
    write_atomic(
        run_dir / "metrics.json",
        to_json({"metrics": metrics, "fit_seconds": fit_seconds, **costs, **extra}),
    )
    write_atomic(run_dir / DONE_MARKER, to_json({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    if spec.trains_model and not keep_checkpoint:
        (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    return metrics


def evaluate_saved_model(
    run_dir: str | os.PathLike, n_users: int | None = None, seed: int | None = None
) -> dict[str, float]:
    """Evaluate the model file of a finished two-tower run again, on ``n_users`` test users
    drawn with ``seed`` (default: the run's own test users)."""
    spec, test_seed, env, agent = saved_model_run(Path(run_dir))
    test_seed = test_seed if seed is None else seed
    return _metrics_for_json(agent, env, spec, n_users or spec.train.eval_users, test_seed)


def export_saved_model(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    n_users: int = 0,
    seed: int | None = None,
    onnx: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the model of a finished two-tower run for serving
    (:func:`recsim_ft.retrieval.export_model` into ``out``): its env's whole catalogue and, with
    ``n_users``, that many test users drawn with ``seed`` (default: the run's test users)."""
    spec, test_seed, env, agent = saved_model_run(Path(run_dir))
    check_int("n_users", n_users, low=0)
    users = (
        env.unwrapped.eval_users(
            spec.train.eval_split, n_users, test_seed if seed is None else seed
        )
        if n_users
        else None
    )
    return export_model(
        agent.model_, env.unwrapped.item_table(), out, users=users, onnx=onnx, overwrite=overwrite
    )


def add_scoring_cost(run_dir: Path) -> None:
    """Give a finished two-tower run made before the cost columns its scoring cost: load its
    model, score its test users as the run did (the first call embeds the catalogue, as in a
    run), and add ``score_ms_per_1000_users`` to its ``metrics.json``; a run that has it, or has
    no model file, is left alone."""
    path = run_dir / "metrics.json"
    saved = json.loads(path.read_text())
    if "score_ms_per_1000_users" in saved or not (run_dir / MODEL_FILE).is_file():
        return
    spec, test_seed, env, agent = saved_model_run(run_dir)
    timed = _TimedScoring(agent)
    timed.score_items(env.eval_users(spec.train.eval_split, spec.train.eval_users, test_seed))
    saved["score_ms_per_1000_users"] = timed.ms_per_1000_users
    write_atomic(path, to_json(saved))


def saved_model_run(run_dir: Path) -> tuple[RunSpec, int, Any, TwoTowerAgent]:
    """The spec, test-user seed, env and loaded agent of the two-tower run in ``run_dir``."""
    config = json.loads((run_dir / "config.json").read_text())
    spec = RunSpec.from_dict(config["spec"])
    if not (run_dir / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir} has no model file ({MODEL_FILE}); is the run finished "
            f"and a two-tower run (agent {spec.agent!r})?"
        )
    env = make_env(spec.env_id, spec.env_kwargs)
    return spec, config["seeds"]["test"], env, TwoTowerAgent.load(run_dir, env)


def differences(spec: RunSpec, run_dir: Path) -> list[str]:
    """What differs between ``spec`` and the run saved in ``run_dir`` (its ``config.json``): the
    spec's fields, and the fields of the model the spec builds today (a default may change
    between versions); empty when ``run_dir`` holds no run, an error when its file is damaged."""
    path = run_dir / "config.json"
    if not path.is_file():
        return []
    try:
        config = json.loads(path.read_text())
        saved = RunSpec.from_dict(config["spec"]).to_dict()
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is damaged or not a recsim-ft run's ({err!r})") from None
    wanted = spec.to_dict()
    changed = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
    if spec.trains_model and "model" in config:
        built = asdict(config_from_dict(config["model"]))
        model = asdict(make_config(spec.preset, spec.agent, **spec.model))
        changed += sorted(f"model.{k}" for k in model if k != "seed" and built.get(k) != model[k])
    return changed


def finished(spec: RunSpec, run_dir: Path) -> bool:
    """True when ``run_dir`` holds a finished run of ``spec``; an error when it holds another's."""
    if not (run_dir / DONE_MARKER).exists():
        return False
    changed = differences(spec, run_dir)
    if changed:
        raise ValueError(
            f"{run_dir} holds a finished run with different settings ({', '.join(changed)}); "
            "write the sweep to another --out directory"
        )
    return True


def read_metrics(run_dir: Path) -> dict[str, float]:
    """The metrics a finished run wrote."""
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


#: What a run cost, as ``metrics.json`` stores it (runs before the cost columns lack the last two,
#: and their ``fit_seconds`` includes collecting the log).
COSTS = ("fit_seconds", "score_ms_per_1000_users", "collect_seconds")


def read_costs(run_dir: Path) -> dict[str, float]:
    """The costs (``COSTS``) a finished run wrote, those it has."""
    saved = json.loads((run_dir / "metrics.json").read_text())
    return {name: float(saved[name]) for name in COSTS if name in saved}
