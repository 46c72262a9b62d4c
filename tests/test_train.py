"""The trainer and the two-tower agent: protocol defaults, curves, determinism, resume after an
interruption (in process and with a killed subprocess), checkpoint guards, saving and loading."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from toy_env import ToyEnv  # noqa: F401  (registers ToyRec-v0)

from conftest import interrupted_at_step
from recsim_ft.agents import TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.evaluate import evaluate
from recsim_ft.models import TwoTower
from recsim_ft.protocol import PROTOCOLS, Protocol, protocol_for
from recsim_ft.train import CHECKPOINT_NAME, TrainConfig, TrainStep, train

TESTS_DIR = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_paper_protocol_defaults():
    spotify = gym.make("Spotify-v0")
    config = TrainConfig().resolve(160_000, protocol_for(spotify))
    assert (config.lr, config.batch_size, config.steps) == (1e-4, 32, 5_000)
    assert TrainConfig().resolve(160_000, PROTOCOLS["VaccineMessaging-v0"]).lr == 1e-5
    assert (
        TrainConfig(lr=3e-4, steps=7, batch_size=8).resolve(100, protocol_for(spotify)).lr == 3e-4
    )
    assert (
        "MAP@12" in TrainConfig().resolve(160_000, PROTOCOLS["HMFashion-v0"]).metrics
    )  # the Kaggle metric
    assert "MAP@12" not in config.metrics


def test_the_env_protocol_gives_the_default_lr_and_an_explicit_lr_wins(env, log, monkeypatch):
    monkeypatch.setitem(PROTOCOLS, "ToyRec-v0", Protocol(lr=3e-3))
    assert TrainConfig().resolve(2_000, protocol_for(env)).lr == 3e-3
    assert TrainConfig(lr=5e-4).resolve(2_000, protocol_for(env)).lr == 5e-4
    result = (
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=2, eval_every=None)).fit(log).result_
    )
    assert result.config.lr == 3e-3  # train() takes the protocol of its env
    with pytest.raises(ValueError, match="eval_split must be one of"):
        TrainConfig(eval_split="train").resolve(2_000)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"eval_every": 0}, "eval_every"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 5_000}, "fewer than batch_size=5000"),
    ],
)
def test_bad_settings_are_named(env, log, overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides).resolve(len(log))


def test_curve_metrics_and_untouched_global_rng(env, log):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    agent = TwoTowerAgent(env, "mlp", "quick", TrainConfig(eval_every=20, lr=1e-3)).fit(log)
    assert torch.equal(torch.rand(3), expected_next)  # training drew from its own RNG stream

    result = agent.result_
    curve = result.curve
    assert list(curve["step"]) == [0, 20, 40, 60, 62]  # one pass over 2,000 rows = 62 steps of 32
    assert {"loss", "HR@1", "P@5", "R@10", "MRR@5", "NDCG@10", "MAP@10"} <= set(curve.columns)
    assert np.isnan(curve["loss"][0]) and np.isfinite(curve["loss"][1:]).all()
    assert result.metrics == {k: v for k, v in curve.iloc[-1].items() if k not in ("step", "loss")}
    assert result.metrics["n_users"] + result.metrics["n_excluded"] == 100
    assert result.steps_per_s > 0 and not result.model.training


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "stderr, progress, shown",
    [
        (_Terminal, None, True),  # the default, in a terminal (tqdm.auto: also in a notebook)
        (_Terminal, False, False),  # silenced
        (io.StringIO, None, False),  # a log file or a test run: no bar lines in it
        (io.StringIO, True, True),  # asked for
    ],
)
def test_fit_shows_its_progress_where_a_user_looks(env, log, monkeypatch, stderr, progress, shown):
    monkeypatch.setattr(sys, "stderr", stderr())
    TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=12, eval_every=None)).fit(
        log, progress=progress
    )
    assert ("train: 100%" in sys.stderr.getvalue() and "12/12" in sys.stderr.getvalue()) == shown


def test_same_seed_same_weights_and_metrics(env, log):
    def fit(seed):
        return TwoTowerAgent(
            env, "mamba", "quick", TrainConfig(steps=30, eval_every=10, seed=seed)
        ).fit(log)

    a, b = fit(0), fit(0)
    _assert_same_weights(a.model_, b.model_)
    assert a.result_.curve.equals(b.result_.curve)
    c = fit(1)
    assert not torch.equal(
        a.model_.state_dict()["user_tower.head.0.weight"],
        c.model_.state_dict()["user_tower.head.0.weight"],
    )


@pytest.mark.parametrize(
    "schedule", ["constant", "cosine"], ids=["constant-lr", "scheduled-lr-from-the-step"]
)
def test_resume_after_interrupt_is_bit_identical(env, tmp_path, schedule):
    log = collect(
        env, n=640, seed=0
    )  # 20 steps per pass: the run reshuffles at step 20, resumes at 30
    config = TrainConfig(steps=40, eval_every=15, checkpoint_every=10, schedule=schedule)
    reference = TwoTowerAgent(env, "mamba", "quick", config).fit(log)

    with interrupted_at_step(35):
        TwoTowerAgent(env, "mamba", "quick", config).fit(log, out_dir=tmp_path)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 30

    resumed = TwoTowerAgent(env, "mamba", "quick", config).fit(log, out_dir=tmp_path, resume=True)
    _assert_same_weights(resumed.model_, reference.model_)
    assert resumed.result_.curve.equals(reference.result_.curve)
    assert resumed.result_.metrics == reference.result_.metrics

    # resuming a finished run trains nothing and returns the same result
    again = TwoTowerAgent(env, "mamba", "quick", config).fit(log, out_dir=tmp_path, resume=True)
    _assert_same_weights(again.model_, reference.model_)
    assert again.result_.curve.equals(reference.result_.curve)


def _fit_with_ctrl_c(env, log, config, out_dir, monkeypatch, at_call: int, presses: int = 1):
    """Fit, pressing Ctrl-C (a real SIGINT) ``presses`` times while step ``at_call`` runs;
    returns the number of steps that began."""
    calls = []
    step = TrainStep.__call__

    def ctrl_c_during_a_step(self, index):
        calls.append(1)
        if len(calls) == at_call:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        return step(self, index)

    # Python's own handler, as in a terminal: a job started in the background (nohup, some CI
    # runners) inherits SIGINT ignored, and the trainer rightly leaves an ignored SIGINT alone
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(TrainStep, "__call__", ctrl_c_during_a_step)
            with pytest.raises(KeyboardInterrupt):
                TwoTowerAgent(env, "mamba", "quick", config).fit(log, out_dir=out_dir)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C as before
    finally:
        signal.signal(signal.SIGINT, previous)
    return len(calls)


def test_early_stopping_keeps_the_best_validation_evaluations_weights(env, log, tmp_path):
    """``select_metric``: the run ends with the weights of its best evaluation on validation
    users (the earliest on a tie), which are those of a run stopped at that step, and with that
    evaluation's metrics; an interrupted run resumes to the same choice."""
    config = TrainConfig(
        steps=60,
        lr=3e-2,
        eval_every=10,
        checkpoint_every=10,
        select_metric="NDCG@10",
        select_users=50,
    )
    result = TwoTowerAgent(env, "mlp", "quick", config).fit(log).result_
    curve = result.curve
    values = curve["validation NDCG@10"].to_numpy()
    best = int(curve.step[np.flatnonzero(values == values.max())[0]])
    assert result.best_step == best and 0 < best < 60  # the toy's lr overshoots after a while
    row = curve[curve.step == best].iloc[0]
    assert result.metrics == {k: row[k] for k in result.metrics}
    stopped = TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=best, lr=3e-2, eval_every=None))
    _assert_same_weights(result.model, stopped.fit(log).model_)
    assert curve["validation NDCG@10"].ne(curve["NDCG@10"]).any()  # users of their own
    assert {f"validation {k}" for k in result.metrics} <= set(curve.columns)  # every metric
    with interrupted_at_step(36):
        TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path)
    resumed = TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path, resume=True)
    assert resumed.result_.best_step == best
    _assert_same_weights(result.model, resumed.model_)
    with pytest.raises(ValueError, match="select_metric must be one of .*'NDCG@10'.*got 'AUC'"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=5, select_metric="AUC")).fit(log)
    off = TrainConfig(steps=5, select_metric="none").resolve(len(log))  # "none": no selection
    assert off.select_metric is None


def test_ctrl_c_before_the_first_checkpoint_saves_the_last_step_and_resumes_bit_identically(
    env, tmp_path, monkeypatch
):
    log = collect(env, n=640, seed=0)  # 20 steps per pass
    config = TrainConfig(steps=40, eval_every=15, checkpoint_every=None)  # saves only at the end
    reference = TwoTowerAgent(env, "mamba", "quick", config).fit(log)

    started = _fit_with_ctrl_c(env, log, config, tmp_path, monkeypatch, at_call=23)
    assert started == 23  # the step under way finished, no other began
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 23

    resumed = TwoTowerAgent(env, "mamba", "quick", config).fit(log, out_dir=tmp_path, resume=True)
    _assert_same_weights(resumed.model_, reference.model_)
    assert resumed.result_.curve.equals(reference.result_.curve)
    assert resumed.result_.metrics == reference.result_.metrics


def test_a_second_ctrl_c_stops_at_once_and_leaves_no_partial_checkpoint(env, tmp_path, monkeypatch):
    log = collect(env, n=640, seed=0)
    config = TrainConfig(steps=40, eval_every=None, checkpoint_every=None)
    _fit_with_ctrl_c(env, log, config, tmp_path, monkeypatch, at_call=5, presses=2)
    assert not any(tmp_path.iterdir())  # stopped inside step 5: no step of it was saved


_CHILD = textwrap.dedent("""
    import sys, time
    import torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    import gymnasium as gym
    from toy_env import ToyEnv
    from recsim_ft.agents import TwoTowerAgent
    from recsim_ft.data import collect
    from recsim_ft.train import TrainConfig

    def slow_down(module, inputs):  # leaves time to kill the run between checkpoints
        if module.training and type(module).__name__ == "Tower":
            time.sleep(0.02)

    torch.nn.modules.module.register_module_forward_pre_hook(slow_down)
    env = gym.make("ToyRec-v0")
    config = TrainConfig(steps=150, eval_every=50, checkpoint_every=7)
    log = collect(env, n=2_000, seed=0)
    TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=sys.argv[1], resume=True)
""")


def test_resume_after_sigkill_of_a_training_process(env, log, tmp_path):
    config = TrainConfig(steps=150, eval_every=50, checkpoint_every=7)
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests=str(TESTS_DIR)))
    out_dir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(script), str(out_dir)])
    try:
        deadline = time.monotonic() + 120
        while not (out_dir / CHECKPOINT_NAME).exists():
            assert child.poll() is None, "the training process ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        time.sleep(0.3)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_at = torch.load(out_dir / CHECKPOINT_NAME, weights_only=True)["step"]
    assert 0 < killed_at < 150

    resumed = TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=out_dir, resume=True)
    reference = TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    _assert_same_weights(resumed.model_, reference.model_)
    assert resumed.result_.curve.equals(reference.result_.curve)


def test_checkpoint_guards(env, log, tmp_path):
    TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=10, eval_every=None)).fit(
        log, out_dir=tmp_path
    )
    with pytest.raises(FileExistsError, match="pass resume=True"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=10, eval_every=None)).fit(
            log, out_dir=tmp_path
        )
    with pytest.raises(ValueError, match=r"cannot resume .*\['lr', 'steps'\]"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=20, lr=0.5, eval_every=None)).fit(
            log, out_dir=tmp_path, resume=True
        )
    with pytest.raises(ValueError, match="differ in \\['the training log'\\]"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=10, eval_every=None)).fit(
            collect(env, n=len(log), seed=1), out_dir=tmp_path, resume=True
        )
    with pytest.raises(ValueError, match="holds weights of another model"):
        TwoTowerAgent(env, "transformer", "quick", TrainConfig(steps=10, eval_every=None)).fit(
            log, out_dir=tmp_path, resume=True
        )

    checkpoint = tmp_path / CHECKPOINT_NAME
    checkpoint.write_bytes(checkpoint.read_bytes()[:1_000])
    with pytest.raises(ValueError, match=f"checkpoint {checkpoint} is corrupted"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=10, eval_every=None)).fit(
            log, out_dir=tmp_path, resume=True
        )


def test_a_log_of_another_env_is_refused_unless_allowed(env, log):
    """p_none changes the rewards, not the features: training would silently fit one problem and
    report metrics of another."""
    other = gym.make("ToyRec-v0", p_none=0.5)
    config = TrainConfig(steps=2, eval_every=None, checkpoint_every=None)
    expected = (
        "the log was collected in ToyRec-v0 {}, not in the env given, ToyRec-v0 {'p_none': 0.5} "
        "(p_none='(not set)' in the log, 0.5 in the env); pass allow_env_mismatch=True"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        train(TwoTower.from_env(env, "mlp", "quick"), log, other, config, progress=False)
    with pytest.raises(ValueError, match=re.escape(expected)):
        TwoTowerAgent(other, "mlp", "quick", config).fit(log)
    model = TwoTower.from_env(env, "mlp", "quick")
    assert train(model, log, other, config, progress=False, allow_env_mismatch=True).model is model
    agent = TwoTowerAgent(other, "mlp", "quick", config).fit(log, allow_env_mismatch=True)
    assert agent.result_.config.steps == 2


def test_other_features_are_refused_naming_the_envs_and_item_counts(env, log):
    spotify = gym.make("Spotify-v0")
    config = TrainConfig(steps=2, eval_every=None, checkpoint_every=None)
    for allow in (False, True):  # the override cannot make a Spotify model score toy items
        with pytest.raises(
            ValueError,
            match=r"the log of ToyRec-v0 \(10 items\) does not fit the env Spotify-v0 \(50 "
            r"items\): user features differ \(the log's: 2 features \(activity, group\); "
            r"the other: 20 features \(acoustic, alternative, ambient, blues, ...\)\)",
        ):
            TwoTowerAgent(spotify, "mlp", "quick", config).fit(log, allow_env_mismatch=allow)
    with pytest.raises(
        ValueError, match=r"the log of ToyRec-v0 \(10 items\) does not fit the model"
    ):
        train(TwoTower.from_env(spotify, "mlp", "quick"), log, env, config, progress=False)
    fitted = TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    with pytest.raises(
        ValueError,
        match=r"TwoTowerAgent was built for ToyRec-v0 \(10 items\) but is evaluated in "
        r"Spotify-v0 \(50 items\)",
    ):
        evaluate(fitted, spotify)


def test_cuda_request_without_cuda_is_a_clear_error(env, log):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        train(TwoTower.from_env(env, "mlp", "quick"), log, env, TrainConfig(device="cuda"))


def test_agent_scores_saves_and_loads(env, log, tmp_path):
    agent = TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=20, eval_every=None))
    users = env.unwrapped.test_users(7, seed=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        agent.score_items(users)
    agent.fit(log)
    scores = agent.score_items(users)
    assert scores.shape == (7, 10) and scores.dtype == np.float32
    with torch.no_grad():
        direct = agent.model_.score_all(users, env.unwrapped.item_table()).numpy()
    np.testing.assert_allclose(scores, direct, rtol=1e-6)
    assert agent.recommend(users, 3).shape == (7, 3)

    path = agent.save(tmp_path / "model.safetensors")
    with pytest.raises(FileExistsError):
        agent.save(path)
    loaded = TwoTowerAgent.load(path, env)
    np.testing.assert_array_equal(loaded.score_items(users), scores)
    with pytest.raises(ValueError, match="model.safetensors was saved for another environment"):
        TwoTowerAgent.load(path, gym.make("ToyRec-v0", n_items=12))


def test_load_takes_a_run_directory_as_the_cli_does(env, log, tmp_path):
    """``recsim-ft train --out RUN`` writes RUN/model.safetensors; ``load(RUN, env)`` reads it."""
    agent = TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=20, eval_every=None)).fit(log)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    agent.save(run_dir / "model.safetensors")
    users = env.unwrapped.test_users(5, seed=2)
    loaded = TwoTowerAgent.load(run_dir, env)
    np.testing.assert_array_equal(loaded.score_items(users), agent.score_items(users))
    with pytest.raises(FileNotFoundError, match=f"no model file in {tmp_path}.*model.safetensors"):
        TwoTowerAgent.load(tmp_path, env)


# -- CUDA: captured steps ------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("embedder", ["mamba", "transformer"])
def test_cuda_graph_training_is_reproducible_and_resumes_bit_identically(env, embedder, tmp_path):
    """On CUDA every step after the first few replays one captured graph: two runs with the
    same seed give the same weights, a run resumed from its checkpoint too, and the metrics
    match an eager run's."""
    log = collect(env, n=1280, seed=0)
    config = TrainConfig(steps=40, eval_every=20, checkpoint_every=10, device="cuda")
    runs = [TwoTowerAgent(env, embedder, "quick", config).fit(log) for _ in range(2)]
    _assert_same_weights(runs[0].model_, runs[1].model_)
    assert runs[0].result_.curve.equals(runs[1].result_.curve)
    with interrupted_at_step(25):
        TwoTowerAgent(env, embedder, "quick", config).fit(log, out_dir=tmp_path)
    resumed = TwoTowerAgent(env, embedder, "quick", config).fit(log, out_dir=tmp_path, resume=True)
    _assert_same_weights(resumed.model_, runs[0].model_)
    eager = TwoTowerAgent(
        env,
        embedder,
        "quick",
        TrainConfig(steps=40, eval_every=20, device="cuda", cuda_graph=False),
    ).fit(log)
    for name, value in runs[0].result_.metrics.items():
        assert eager.result_.metrics[name] == pytest.approx(value, abs=1e-6), name
