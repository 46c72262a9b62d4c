"""Data-parallel training on Ray Train (``recsim_ft.parallel``, ``TrainConfig.workers``): one
worker trains the single process's weights bit for bit, two train the same model up to float
rounding, a worker killed mid-training resumes from the last checkpoint, and bad input is refused
before Ray starts. On a local Ray runtime of 2 CPUs, started once for the module and shut down
after; skipped where Ray Train is not installed."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from recsim_ft.data import collect
from recsim_ft.models import TwoTower
from recsim_ft.parallel import SPARSE_ROWS
from recsim_ft.train import CHECKPOINT_NAME, TrainConfig, train

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train.torch")

#: the in-batch softmax with the popularity prior: what a worker changes (its share of the batch,
#: the gathered items, the averaged gradients)
SOFTMAX = dict(loss="softmax", negatives="batch", popularity_prior=True)


@pytest.fixture(scope="module")
def local_ray():
    from recsim_ft.parallel import start_ray

    start_ray(2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def spotify():
    env = gym.make("Spotify-v0")
    return env, collect(env, n=2_560, seed=0)


def fit(spotify, seed=0, out_dir=None, resume=False, **options):
    env, log = spotify
    config = TrainConfig(seed=seed, eval_every=40, eval_users=60, batch_size=64, **options)
    model = TwoTower.from_env(env, "mlp", "quick", seed=seed)
    return train(model, log, env, config, out_dir, resume, progress=False)


def weights(result):
    return [t.detach().clone() for t in result.model.state_dict().values()]


@pytest.fixture(scope="module")
def two_workers(local_ray, spotify):
    return fit(spotify, workers=2, **SOFTMAX)


def test_one_worker_trains_the_single_process_weights_bit_for_bit(local_ray, spotify):
    options = {**SOFTMAX, "uniform_negatives": 4}  # drawn by each worker from its own seed
    alone, on_ray = fit(spotify, **options), fit(spotify, workers=1, **options)
    for a, b in zip(weights(alone), weights(on_ray), strict=True):
        assert torch.equal(a, b)
    assert alone.curve.drop(columns="loss").equals(on_ray.curve.drop(columns="loss"))
    np.testing.assert_array_equal(alone.curve["loss"], on_ray.curve["loss"])
    assert on_ray.config.workers == 1 and on_ray.model.item_prior.shape == (
        alone.model.item_prior.shape
    )


def assert_same_steps(data, alone, on_workers):
    """The weights of ``on_workers`` differ from ``alone``'s by rounding, not by the steps."""
    start = TwoTower.from_env(data[0], "mlp", "quick", seed=0).state_dict().values()
    flat = [torch.cat([t.reshape(-1) for t in ts]) for ts in (weights(alone), weights(on_workers))]
    moved = flat[0] - torch.cat([t.reshape(-1) for t in start])
    assert (flat[1] - flat[0]).norm() < 0.01 * moved.norm()  # rounding, against 40 steps


def test_two_workers_train_the_same_model_within_the_seed_spread(spotify, two_workers):
    """Each worker takes half of every batch and the gradients are averaged, so two workers
    take the single process's steps up to float rounding; the metrics lie within the spread of
    single-process runs over seeds."""
    alone = fit(spotify, **SOFTMAX)
    assert_same_steps(spotify, alone, two_workers)
    spread = [fit(spotify, seed=seed, **SOFTMAX).metrics["NDCG@10"] for seed in (0, 1, 2)]
    assert min(spread) <= two_workers.metrics["NDCG@10"] <= max(spread)
    assert two_workers.steps_per_s > 0 and len(two_workers.curve) == len(alone.curve)


def test_two_workers_share_the_catalogue_of_the_full_softmax(local_ray, spotify):
    """The full softmax's catalogue is embedded in shares, one per worker, and gathered: the
    same steps as one process, which embeds all of it."""
    options = dict(loss="softmax", negatives="catalogue")
    assert_same_steps(spotify, fit(spotify, **options), fit(spotify, workers=2, **options))


@pytest.mark.parametrize("id_updates", ["dense", "sparse"])
def test_two_workers_average_only_the_touched_rows_of_an_id_table(local_ray, id_updates):
    """5,000 articles: the id table's gradient goes over the rows the batch touched
    (``SPARSE_ROWS``; a sparse gradient names them), the same steps as one process."""
    env = gym.make("HMFashion-v0", n_items=5_000, n_customers=2_000)
    hm = env, collect(env, n=2_560, seed=0)
    model = TwoTower.from_env(env, "mlp", "quick", seed=0)
    assert max(len(p) for p in model.parameters() if p.ndim == 2) >= SPARSE_ROWS
    options = dict(loss="softmax", negatives="batch", id_updates=id_updates)
    assert_same_steps(hm, fit(hm, **options), fit(hm, workers=2, **options))


def _train_workers() -> list[int]:
    """The pids of the running Ray Train workers (their process title names them)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"RayTrainWorker" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(sys.platform != "linux", reason="finds Ray's workers in /proc")
def test_a_worker_killed_mid_training_resumes_from_the_last_checkpoint(
    tmp_path, spotify, two_workers
):
    """The group restarts and resumes from the checkpoint the driver wrote: the same weights as
    the run nobody killed (every worker's RNG is in the checkpoint)."""
    out = tmp_path / "run"
    checkpoint = out / CHECKPOINT_NAME
    outcome = {}

    def run():
        outcome["result"] = fit(spotify, out_dir=out, workers=2, checkpoint_every=5, **SOFTMAX)

    runner = threading.Thread(target=run)
    runner.start()
    killed = None
    while runner.is_alive() and killed is None:
        if checkpoint.exists() and _train_workers():
            killed = _train_workers()[-1]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.01)
    runner.join()
    assert killed is not None, "the run ended before a worker could be killed"
    assert torch.load(checkpoint, weights_only=True)["step"] == two_workers.config.steps
    for a, b in zip(weights(two_workers), weights(outcome["result"]), strict=True):
        assert torch.equal(a, b)


def test_bad_input_is_refused_before_ray_starts(tmp_path, spotify, monkeypatch):
    with pytest.raises(ValueError, match="batch_size=64 does not divide among workers=3"):
        fit(spotify, workers=3)
    with pytest.raises(ValueError, match="workers must be a positive integer or None, got 0"):
        fit(spotify, workers=0)
    env, log = spotify
    model = TwoTower.from_env(env, "mlp", "quick")
    with pytest.raises(ValueError, match="address='localhost:1' names the Ray cluster"):
        train(model, log, env, TrainConfig(steps=2), address="localhost:1")
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"")
    with pytest.raises(FileExistsError, match="already exists"):
        fit(spotify, out_dir=tmp_path, workers=2)
    with pytest.raises(ValueError, match="corrupted or not a recsim-ft checkpoint"):
        fit(spotify, out_dir=tmp_path, resume=True, workers=2)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install \"recsim-ft\[ray\]\""):
        fit(spotify, workers=2)


def test_a_resumed_run_must_keep_its_workers(tmp_path, local_ray, spotify):
    fit(spotify, out_dir=tmp_path, steps=4, workers=2)
    with pytest.raises(ValueError, match=r"differ in \['workers'\]"):
        fit(spotify, out_dir=tmp_path, resume=True, steps=4)
    with pytest.raises(ValueError, match=r"differ in \['workers'\]"):
        fit(spotify, out_dir=tmp_path, resume=True, steps=4, workers=1)
    assert fit(spotify, out_dir=tmp_path, resume=True, steps=4, workers=2).config.workers == 2


def test_the_commands_train_on_workers_and_refuse_what_cannot_be(tmp_path, local_ray, capsys):
    from recsim_ft.cli import main

    base = ["train", "--env", "Spotify-v0", "--embedder", "mlp", "--preset", "quick", "--quiet"]
    run = ["--n", "640", "--steps", "10", "--out", str(tmp_path / "run")]
    assert main([*base, *run, "--workers", "2"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["spec"]["workers"] == 2 and (tmp_path / "run" / CHECKPOINT_NAME).exists()
    capsys.readouterr()
    assert main([*base, *run[:-1], str(tmp_path / "other"), "--address", "auto"]) == 2
    assert "--address auto names the Ray cluster of --workers" in capsys.readouterr().err
    sweep = ["reproduce", "--table", "1", "--out", str(tmp_path / "sweep"), "--workers", "2"]
    assert main([*sweep, "--executor", "ray"]) == 2
    assert "use --executor local" in capsys.readouterr().err
