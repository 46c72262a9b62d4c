"""A run directory, the one place that knows its layout::

    config.json        what was run (the RunSpec, the model and train configs, the seeds)
    metrics.json       the evaluation metrics, the costs (seconds to collect the log and to fit,
                       milliseconds to score 1,000 test users), parameter count
    curve.csv          the training curve (two-tower agents)
    items.csv          per item: times liked by the test users, recommended minus liked (Fig. 5)
    model.safetensors  the model file (two-tower agents)
    checkpoint.pt      the resume state while training (a sweep deletes it when the run is done)
    error.txt          why a sweep's run failed
    DONE               written last: the run is finished

Every file is written under a temporary name and renamed, and ``DONE`` comes last, so a sweep
that is killed and restarted knows which runs finished. ``RunDir`` prepares a directory for a
run, reads what a run wrote and loads its model; the command line, the sweeps, evaluation and
export all go through it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from recsim_ft.agents import TwoTowerAgent
from recsim_ft.envs import make_env
from recsim_ft.experiments.specs import RunSpec
from recsim_ft.fileio import atomic_path
from recsim_ft.models import TwoTower
from recsim_ft.models.io import MODEL_FILE
from recsim_ft.models.presets import config_from_dict, make_config
from recsim_ft.schema import Batch
from recsim_ft.train import CHECKPOINT_NAME

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "curve.csv"
ITEMS_FILE = "items.csv"
DONE_MARKER = "DONE"
ERROR_FILE = "error.txt"
#: What a run cost, as ``metrics.json`` stores it (runs before the cost columns lack the last two,
#: and their ``fit_seconds`` includes collecting the log).
COSTS = ("fit_seconds", "score_ms_per_1000_users", "collect_seconds")


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` via a temporary file and a rename (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)


def to_json(obj: Any) -> str:
    """The JSON text of every file a run writes: indented, keys sorted, one final newline."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


@dataclass(frozen=True)
class SavedRun:
    """A finished two-tower run, loaded: its spec, the seed of its test users, its env and its
    agent with the trained model."""

    spec: RunSpec
    test_seed: int
    env: gym.Env
    agent: TwoTowerAgent

    @property
    def model(self) -> TwoTower:
        return self.agent.model_

    def users(self, n: int, seed: int | None = None) -> Batch:
        """``n`` users of the run's evaluation split, drawn with ``seed`` (default: the run's
        own test users' seed, so the first ``spec.train.eval_users`` are the run's)."""
        split = self.spec.train.eval_split
        return self.env.unwrapped.eval_users(split, n, self.test_seed if seed is None else seed)


@dataclass(frozen=True)
class RunDir:
    """The directory of one run (see the module's docstring for its files); a path-like
    object, so ``RunDir(RunDir(p)) == RunDir(p)``."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:  # a RunDir goes wherever a path does
        return str(self.path)

    @property
    def holds_run(self) -> bool:
        """Whether a run was started here (its ``config.json`` is written first)."""
        return (self / CONFIG_FILE).is_file()

    @property
    def done(self) -> bool:
        return (self / DONE_MARKER).exists()

    def prepare(self, overwrite: bool = False, resume: bool = False) -> bool:
        """Make the directory ready for a run; True when it starts empty. A non-empty directory
        is refused unless ``resume`` (continue it) or ``overwrite`` (delete it, which is done only
        to a run directory); the error says which to pass."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file; a run is written to a directory")
        if not path.exists() or not any(path.iterdir()):
            return True
        if resume:
            return False
        if not overwrite:
            raise ValueError(
                f"run directory {path} is not empty; pass --overwrite to replace it "
                "or --resume to continue it"
            )
        if not self.holds_run:
            raise ValueError(
                f"{path} is not a recsim-ft run directory (no {CONFIG_FILE}); refusing to delete it"
            )
        shutil.rmtree(path)
        return True

    def config(self) -> dict[str, Any]:
        """What ``config.json`` holds; an error naming the file when it is missing or damaged."""
        path = self / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not a recsim-ft run directory (no {CONFIG_FILE})"
            )
        try:
            config = json.loads(path.read_text())
            RunSpec.from_dict(config["spec"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is damaged or not a recsim-ft run's ({err!r})") from None
        return config

    def spec(self) -> RunSpec:
        return RunSpec.from_dict(self.config()["spec"])

    def write(self, name: str, content: str | bytes | dict[str, Any]) -> None:
        """Write file ``name`` atomically (a dict as JSON)."""
        write_atomic(self / name, to_json(content) if isinstance(content, dict) else content)

    def progress(self) -> tuple[int, int] | None:
        """(step, steps) of the checkpoint; None without a readable one (the trainer says what
        is wrong with an unreadable one)."""
        try:
            state = torch.load(self / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
            return int(state["step"]), int(state["config"]["steps"])
        except Exception:  # missing or damaged: no progress to report
            return None

    def differences(self, spec: RunSpec) -> list[str]:
        """What differs between ``spec`` and the run saved here: the spec's fields, and the
        fields of the model the spec builds today (a default may change between versions);
        empty when the directory holds no run, an error when its file is damaged."""
        if not self.holds_run:
            return []
        config = self.config()
        saved = RunSpec.from_dict(config["spec"]).to_dict()
        wanted = spec.to_dict()
        changed = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        if spec.trains_model and "model" in config:
            built = asdict(config_from_dict(config["model"]))
            model = asdict(make_config(spec.preset, spec.agent, **spec.model))
            changed += sorted(
                f"model.{k}" for k in model if k != "seed" and built.get(k) != model[k]
            )
        return changed

    def metrics(self) -> dict[str, float]:
        """The metrics a finished run wrote."""
        return json.loads((self / METRICS_FILE).read_text())["metrics"]

    def costs(self) -> dict[str, float]:
        """The costs (``COSTS``) a finished run wrote, those it has."""
        saved = json.loads((self / METRICS_FILE).read_text())
        return {name: float(saved[name]) for name in COSTS if name in saved}

    def load(self) -> SavedRun:
        """The finished two-tower run here, with its env rebuilt and its model loaded."""
        config = self.config()
        spec = RunSpec.from_dict(config["spec"])
        if not (self / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{self.path} has no model file ({MODEL_FILE}); is the run finished "
                f"and a two-tower run (agent {spec.agent!r})?"
            )
        test_seed = config.get("seeds", {}).get("test") if isinstance(config, dict) else None
        if not isinstance(test_seed, int):
            raise ValueError(
                f"{self / CONFIG_FILE} is damaged or not a recsim-ft run's (no seeds.test: the "
                "seed of its test users)"
            )
        env = make_env(spec.env_id, spec.env_kwargs)
        return SavedRun(spec, test_seed, env, TwoTowerAgent.load(self.path, env))


def finished(spec: RunSpec, run_dir: str | os.PathLike | RunDir) -> bool:
    """True when ``run_dir`` holds a finished run of ``spec``; an error when it holds another's."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    if not run.done:
        return False
    changed = run.differences(spec)
    if changed:
        raise ValueError(
            f"{run.path} holds a finished run with different settings ({', '.join(changed)}); "
            "write the sweep to another --out directory"
        )
    return True
