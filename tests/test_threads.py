"""Torch threads while training: one by default (a busy machine costs a fair share, see
recsim_ft/threads.py), another count on request, the caller's count restored afterwards."""

from __future__ import annotations

import os

import gymnasium as gym
import pytest
import torch
from toy_env import ToyEnv  # noqa: F401  (registers ToyRec-v0)

from recsim_ft.cli import main
from recsim_ft.data import collect
from recsim_ft.models import TwoTower
from recsim_ft.threads import ENV_VAR, default_threads, torch_threads
from recsim_ft.train import TrainConfig, TrainStep, train


@pytest.fixture
def threads_seen(monkeypatch):
    """torch's thread count at every training step."""
    seen, step = [], TrainStep.__call__

    def recording(self, index):
        seen.append(torch.get_num_threads())
        return step(self, index)

    monkeypatch.setattr(TrainStep, "__call__", recording)
    return seen


@pytest.fixture
def two_caller_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("two_caller_threads")
def test_training_uses_one_thread_unless_asked_and_restores_the_callers(threads_seen, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    env = gym.make("ToyRec-v0")
    log = collect(env, n=320, seed=0)

    def fit(config: TrainConfig) -> list[int]:
        threads_seen.clear()
        train(TwoTower.from_env(env, "mlp", "quick"), log, env, config, progress=False)
        assert torch.get_num_threads() == 2  # the caller's count again
        return sorted(set(threads_seen))

    assert fit(TrainConfig(steps=3)) == [1]
    assert fit(TrainConfig(steps=3, threads=2)) == [2]
    monkeypatch.setenv(ENV_VAR, "2")
    assert fit(TrainConfig(steps=3)) == [2]
    with pytest.raises(ValueError, match="threads must be a positive integer or None, got 0"):
        fit(TrainConfig(steps=3, threads=0))


def test_bad_thread_settings_name_the_setting(monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "two")
    with pytest.raises(ValueError, match="RECSIM_FT_THREADS must be a positive integer, got 'two'"):
        default_threads()
    assert main(["params"]) == 2
    assert "RECSIM_FT_THREADS must be a positive integer, got 'two'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="threads must be a positive integer"), torch_threads(-1):
        pass


@pytest.mark.usefixtures("two_caller_threads")
def test_cli_threads_option_reaches_training_and_is_undone(threads_seen, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    argv = [
        "train",
        "--env",
        "toy_env:ToyRec-v0",
        "--embedder",
        "mlp",
        "--preset",
        "quick",
        "--n",
        "320",
        "--steps",
        "3",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*argv, "--threads", "2"]) == 0
    assert set(threads_seen) == {2}
    threads_seen.clear()
    assert main([*argv[:-1], str(tmp_path / "run1")]) == 0
    assert set(threads_seen) == {1}
    assert ENV_VAR not in os.environ and torch.get_num_threads() == 2
