"""Training precision: which precision ``auto`` picks on which CPU, bf16 training on every
kernel path against the float64 reference, determinism and resume at bf16."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from toy_env import ToyEnv  # noqa: F401  (registers ToyRec-v0)

from conftest import interrupted_at_step
from recsim_ft import cpu
from recsim_ft.agents import TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.experiments import RunSpec
from recsim_ft.models import FeatureTensors, TwoTower
from recsim_ft.precision import autocast, resolve_precision
from recsim_ft.train import CHECKPOINT_NAME, TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def fake_cpu(monkeypatch, *flags: str) -> None:
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: ("Test CPU 9000", frozenset({"avx512f", *flags})))


@pytest.mark.parametrize(
    "flags,expected",
    [((), "fp32"), (("avx512_bf16",), "bf16"), (("amx_bf16", "amx_tile"), "bf16")],
    ids=["no-units", "avx512-bf16", "amx"],
)
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, flags, expected):
    fake_cpu(monkeypatch, *flags)
    precision, why = resolve_precision("auto", CPU)
    assert precision == expected
    assert "Test CPU 9000" in why
    assert TrainConfig(precision="auto").resolve(100).precision == expected
    assert TrainConfig().resolve(100).precision == "fp32"  # the default keeps every number


def test_bf16_on_a_cpu_without_units_runs_with_a_warning_that_says_why(monkeypatch):
    fake_cpu(monkeypatch)
    with pytest.warns(UserWarning, match="slower than fp32 here.*neither amx_bf16 nor avx512_bf16"):
        assert resolve_precision("bf16", CPU)[0] == "bf16"
    fake_cpu(monkeypatch, "avx512_bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU)[0] == "bf16"


def test_an_unknown_precision_is_named():
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16', 'auto'\), "):
        TrainConfig(precision="fp16").resolve(100)


def _towers_and_batch(embedder: str, kernels: str):
    env = gym.make("Spotify-v0")
    options = {"kernels": kernels} if embedder == "mamba" else {}
    torch.manual_seed(0)
    model = TwoTower.from_env(env, embedder=embedder, preset="paper", **options)
    rng = np.random.default_rng(0)
    users = FeatureTensors.from_batch(env.unwrapped.sample_users(16, rng))
    items = FeatureTensors.from_batch(env.unwrapped.item_table())
    item_ids = torch.as_tensor(rng.integers(0, items.n_rows, 16))
    return model, users, items, item_ids


@pytest.mark.parametrize(
    "embedder,kernels",
    [("mamba", "auto"), ("mamba", "torch"), ("transformer", "auto"), ("mlp", "auto")],
    ids=["mamba-native", "mamba-torch", "transformer", "mlp"],
)
def test_bf16_scores_and_gradients_follow_the_float64_reference(embedder, kernels):
    """Under bf16 autocast every path runs (no mixed-dtype error), keeps float32 weights and
    gradients, and stays within bf16's rounding of the float64 model: scores within 3% of their
    largest, the whole gradient within 8% of its norm (measured 1.0-5.1% and 3.0-5.1% on these
    paths; float32 is within 1e-6)."""
    model, users, items, item_ids = _towers_and_batch(embedder, kernels)
    reference = copy.deepcopy(model).double()
    upstream = torch.linspace(-1, 1, 16, dtype=torch.float64)

    with autocast("bf16", CPU):
        scores = model.score_logged(users, item_ids, items)
    assert scores.dtype == torch.float32
    (scores * upstream.float()).sum().backward()
    reference_users = FeatureTensors(users.numeric.double(), users.categorical)
    reference_items = FeatureTensors(items.numeric.double(), items.categorical)
    expected = reference.score_logged(reference_users, item_ids, reference_items)
    (expected * upstream).sum().backward()

    assert (scores.double() - expected).abs().max() < 0.03 * expected.abs().max()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
    grads = torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None])
    expected_grads = torch.cat(
        [p.grad.flatten() for p in reference.parameters() if p.grad is not None]
    )
    assert (grads - expected_grads).norm() < 0.08 * expected_grads.norm()


@pytest.fixture(scope="module")
def toy():
    env = gym.make("ToyRec-v0")
    return env, collect(env, n=640, seed=0)


def test_bf16_training_is_bit_identical_from_a_seed_and_differs_from_fp32(toy):
    env, log = toy

    def fit(precision):
        config = TrainConfig(steps=20, eval_every=10, precision=precision)
        return TwoTowerAgent(env, "mamba", "quick", config).fit(log)

    a, b, full = fit("bf16"), fit("bf16"), fit("fp32")
    for name, value in a.model_.state_dict().items():
        assert value.dtype == full.model_.state_dict()[name].dtype, name  # float32 master weights
        assert torch.equal(value, b.model_.state_dict()[name]), name
    assert a.result_.curve.equals(b.result_.curve)
    assert a.result_.config.precision == "bf16"
    assert not torch.equal(
        a.model_.state_dict()["user_tower.head.0.weight"],
        full.model_.state_dict()["user_tower.head.0.weight"],
    )


def test_bf16_run_resumes_bit_identically_and_refuses_another_precision(toy, tmp_path):
    env, log = toy
    config = TrainConfig(steps=30, eval_every=15, checkpoint_every=10, precision="bf16")
    reference = TwoTowerAgent(env, "transformer", "quick", config).fit(log)
    with interrupted_at_step(25):
        TwoTowerAgent(env, "transformer", "quick", config).fit(log, out_dir=tmp_path)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 20
    with pytest.raises(ValueError, match=r"cannot resume .*\['precision'\]"):
        fp32 = dataclasses.replace(config, precision="fp32")
        TwoTowerAgent(env, "transformer", "quick", fp32).fit(log, out_dir=tmp_path, resume=True)
    resumed = TwoTowerAgent(env, "transformer", "quick", config).fit(
        log, out_dir=tmp_path, resume=True
    )
    for name, value in resumed.model_.state_dict().items():
        assert torch.equal(value, reference.model_.state_dict()[name]), name
    assert resumed.result_.curve.equals(reference.result_.curve)


def test_a_run_spec_names_the_precision_its_machine_runs(monkeypatch):
    """``auto`` is resolved when the spec is made, so a run directory says what ran; fp32 keeps
    the names and saved specs of runs made before the precisions."""
    fake_cpu(monkeypatch, "avx512_bf16")
    spec = RunSpec("ToyRec-v0", "mamba", 0, setting="toy", precision="auto")
    assert spec.train.precision == "bf16"
    assert spec.relative_dir().as_posix() == "toy/mamba-bf16/seed0"
    fake_cpu(monkeypatch)
    spec = RunSpec("ToyRec-v0", "mamba", 0, setting="toy", precision="auto")
    assert (spec.train.precision, spec.relative_dir().as_posix()) == ("fp32", "toy/mamba/seed0")
    saved_before = {k: v for k, v in spec.to_dict().items() if k != "precision"}
    assert RunSpec.from_dict(saved_before) == spec
    # a baseline trains no tower: one spec (and one shared run) whatever the precision
    assert RunSpec("ToyRec-v0", "gbdt", precision="bf16") == RunSpec("ToyRec-v0", "gbdt")
    with pytest.raises(ValueError, match="precision must be one of"):
        RunSpec("ToyRec-v0", "mamba", precision="half")
