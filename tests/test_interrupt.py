"""Interrupted work (issues 6 and 15): ``recsim-ft train`` and ``recsim-ft reproduce`` run as real
processes, killed (SIGKILL) or interrupted (SIGINT, i.e. Ctrl-C) part-way, then continued, end with
the same files as uninterrupted runs of the same seeds; Ctrl-C saves the last step, also before
the first periodic checkpoint; Ctrl-C in the middle of writing a checkpoint keeps the previous
one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from safetensors.torch import load_file
from toy_env import ToyEnv  # noqa: F401  (registers ToyRec-v0)

from recsim_ft.agents import TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.train import CHECKPOINT_NAME, TrainConfig

TESTS_DIR = Path(__file__).resolve().parent
# the trainer checkpoints every 1000 steps (its default); 1500 steps leave a window after the first
STEPS, FIRST_CHECKPOINT = 1500, 1000
TRAIN = (
    "train --env toy_env:ToyRec-v0 --env-kwargs n_items=12 n_groups=3 --embedder mlp --seed 3 "
    f"--preset quick --n 320 --steps {STEPS} --eval-every 250 --users 40 --quiet"
).split()
REPRODUCE = (
    "reproduce --table 1 --settings spotify --agents oracle mlp --seeds 2 "
    "--preset quick --n 320 --steps 10 --users 40 --quiet"
).split()


def _default_sigint() -> None:
    """A child started from a non-interactive shell may inherit SIGINT ignored; Ctrl-C must reach
    it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(
    argv: list[str], out: Path, program: tuple[str, ...] = ("-m", "recsim_ft")
) -> subprocess.Popen:
    """``python -m recsim_ft ARGV --out OUT`` (or ``python PROGRAM ARGV --out OUT``) on one torch
    thread (bit-identical results need the same thread count everywhere), with ``tests/``
    importable for the toy env, as the leader of its own process group (a terminal's Ctrl-C
    reaches every process of that group: ``os.killpg``)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(
        [sys.executable, *program, *argv, "--out", str(out)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
        start_new_session=True,
    )


def finish(child: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = child.communicate(timeout=timeout)
    return child.returncode, err


def run_to_end(argv: list[str], out: Path) -> None:
    code, err = finish(start(argv, out))
    assert code == 0, err


def interrupt_when(
    child: subprocess.Popen, ready, sig: signal.Signals, timeout: float = 180
) -> tuple[int, str]:
    """Send ``sig`` to ``child`` as soon as ``ready()`` holds; fails if the child ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if child.poll() is not None:
            pytest.fail(
                f"the process ended before it could be interrupted: {child.communicate()[1]}"
            )
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"not ready to interrupt after {timeout} s")
        time.sleep(0.02)
    child.send_signal(sig)
    return finish(child)


def assert_same_run(run: Path, reference: Path) -> None:
    """Same metrics, training curve, per-item counts and bit-identical weights."""
    metrics, expected = (json.loads((d / "metrics.json").read_text()) for d in (run, reference))
    assert metrics["metrics"] == expected["metrics"] and metrics["n_params"] == expected["n_params"]
    for name in ("curve.csv", "items.csv"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name
    weights, reference_weights = (
        load_file(run / "model.safetensors"),
        load_file(reference / "model.safetensors"),
    )
    assert weights.keys() == reference_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference_weights[name]), name


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    run_to_end(TRAIN, out)
    return out


def _checkpoint_step(run: Path) -> int:
    return torch.load(run / CHECKPOINT_NAME, weights_only=True)["step"]


def test_train_killed_then_resumed_matches_an_uninterrupted_run(tmp_path, uninterrupted_run):
    run = tmp_path / "run"
    code, _ = interrupt_when(start(TRAIN, run), (run / CHECKPOINT_NAME).exists, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (run / "DONE").exists() and _checkpoint_step(run) == FIRST_CHECKPOINT

    code, err = finish(start(TRAIN, run))  # without --resume the interrupted run is not touched
    assert code == 2 and "--resume" in err and _checkpoint_step(run) == FIRST_CHECKPOINT
    run_to_end([*TRAIN, "--resume"], run)
    assert (run / "DONE").exists() and _checkpoint_step(run) == STEPS
    assert_same_run(run, uninterrupted_run)


def _interrupted_at(err: str) -> int:
    """The step the one-line Ctrl-C message names; fails on any other message."""
    match = re.fullmatch(
        r"recsim-ft: interrupted at step ([\d,]+) of 1,500, saved in \S+; run the same command "
        r"with --resume to continue from there",
        err.strip(),
    )
    assert match, err
    return int(match.group(1).replace(",", ""))


def test_ctrl_c_says_how_to_resume_and_resuming_matches(tmp_path, uninterrupted_run):
    run = tmp_path / "run"
    code, err = interrupt_when(start(TRAIN, run), (run / CHECKPOINT_NAME).exists, signal.SIGINT)
    assert code == 130 and "Traceback" not in err
    step = _interrupted_at(err)
    assert not (run / "DONE").exists() and FIRST_CHECKPOINT <= _checkpoint_step(run) == step
    run_to_end([*TRAIN, "--resume"], run)
    assert_same_run(run, uninterrupted_run)


#: ``recsim-ft`` with Ctrl-C pressed (a real SIGINT) while training step ``argv[1]`` runs.
CTRL_C_AT_STEP = """
import os, signal, sys
from recsim_ft.cli import main
from recsim_ft.train import TrainStep
at, calls, step = int(sys.argv[1]), [], TrainStep.__call__
def ctrl_c_during_a_step(self, index):
    calls.append(1)
    if len(calls) == at:
        os.kill(os.getpid(), signal.SIGINT)
    return step(self, index)
TrainStep.__call__ = ctrl_c_during_a_step
sys.exit(main(sys.argv[2:]))
"""


def test_ctrl_c_before_the_first_checkpoint_saves_it_and_resume_continues(
    tmp_path, uninterrupted_run
):
    run = tmp_path / "run"
    code, err = finish(start(TRAIN, run, program=("-c", CTRL_C_AT_STEP, "300")))
    assert code == 130 and "Traceback" not in err
    assert _interrupted_at(err) == 300 == _checkpoint_step(run) < FIRST_CHECKPOINT
    code, err = finish(start([*TRAIN, "--resume"], run))
    assert code == 0 and f"resuming {run} at step 300 of 1,500" in err
    assert_same_run(run, uninterrupted_run)


def _done_stamps(out: Path) -> dict[Path, int]:
    return {p.parent.relative_to(out): p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/DONE")}


def test_reproduce_killed_then_rerun_reuses_finished_runs_and_matches(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "results"
    run_to_end(REPRODUCE, reference)
    all_runs = set(_done_stamps(reference))
    assert len(all_runs) == 4

    code, _ = interrupt_when(start(REPRODUCE, out), lambda: bool(_done_stamps(out)), signal.SIGKILL)
    assert code == -signal.SIGKILL
    finished = _done_stamps(out)
    assert 0 < len(finished) < len(all_runs) and not (out / "table1.csv").exists()
    # a run that died while writing: a half-written metrics file and a stray temporary checkpoint,
    # but no DONE marker, so the sweep must redo it rather than read it
    half = out / "runs/spotify/mlp-quick-s10/seed1"
    assert half.relative_to(out) not in finished
    half.mkdir(parents=True, exist_ok=True)
    (half / "metrics.json").write_text('{"metrics": {"HR@1": 0.')
    (half / f".{CHECKPOINT_NAME}.tmp-1").write_bytes(b"\x80\x02")

    run_to_end(REPRODUCE, out)
    stamps = _done_stamps(out)
    assert set(stamps) == all_runs
    assert {run: stamps[run] for run in finished} == finished  # finished runs were not redone
    for name in ("table1.csv", "table1_runs.csv", "table1_paired.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert (
        json.loads((half / "metrics.json").read_text())["metrics"]
        == json.loads((reference / "runs/spotify/mlp-quick-s10/seed1/metrics.json").read_text())[
            "metrics"
        ]
    )


PARALLEL = (
    "reproduce --table 1 --settings spotify --agents mlp --seeds 3 --preset quick --n 640 "
    f"--steps {STEPS} --eval-every 500 --users 40 --jobs 2 --quiet"
).split()


def test_ctrl_c_stops_a_parallel_sweep_and_rerunning_matches(tmp_path):
    """Ctrl-C on ``reproduce --jobs 2`` (to every process, as from a terminal): both workers save
    the run they train, the third run never starts, and the sweep run again ends with the files
    of an uninterrupted one."""
    reference, out = tmp_path / "reference", tmp_path / "results"
    run_to_end(PARALLEL, reference)
    child = start(PARALLEL, out)
    first = out / "runs/spotify/mlp-quick-s1500/seed0" / CHECKPOINT_NAME
    deadline = time.monotonic() + 180
    while not first.exists():
        assert child.poll() is None and time.monotonic() < deadline, finish(child)
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGINT)
    code, err = finish(child, timeout=60)
    assert code == 130 and "interrupted; run the same command again" in err
    started = sorted(p.parent.name for p in out.glob("runs/spotify/mlp-quick-s1500/*/config.json"))
    assert started == ["seed0", "seed1"] and not _done_stamps(out)
    assert _checkpoint_step(out / "runs/spotify/mlp-quick-s1500/seed0") >= FIRST_CHECKPOINT
    run_to_end(PARALLEL, out)
    for name in ("table1.csv", "table1_runs.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.usefixtures("one_torch_thread")
def test_ctrl_c_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    env = gym.make("ToyRec-v0")
    log = collect(env, n=320, seed=0)
    config = TrainConfig(steps=4, eval_every=None, checkpoint_every=2)
    real_save = torch.save

    def interrupted_save(state, path):
        if state["step"] == 4:  # the second checkpoint: half written when Ctrl-C arrives
            Path(path).write_bytes(b"\x80\x02half")
            raise KeyboardInterrupt
        real_save(state, path)

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temporary file left
    assert _checkpoint_step(tmp_path) == 2
    monkeypatch.setattr(torch, "save", real_save)
    TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path, resume=True)
    assert _checkpoint_step(tmp_path) == 4
