"""The ``ranking`` preset: the learning-rate schedule, a preset's training (trainer, agent, run
spec, CLI) and ``tune``'s search over the training with its one choice for every setting."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from toy_env import ToyEnv  # noqa: F401  (registers ToyRec-v0)

from recsim_ft import experiments
from recsim_ft.agents import TwoTowerAgent
from recsim_ft.cli import main, parse_training_grid
from recsim_ft.experiments import RunSpec, Setting
from recsim_ft.models import make_config
from recsim_ft.models.presets import PRESETS
from recsim_ft.train import TrainConfig, TrainStep, scheduled_lr

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOY = "toy_env:ToyRec-v0"


def test_the_cosine_schedule_warms_up_then_decays_towards_zero():
    steps = 200  # warm-up: the first 5%, 10 steps
    lrs = [scheduled_lr("cosine", 0.01, step, steps) for step in range(1, steps + 1)]
    assert lrs[:10] == pytest.approx([0.001 * s for s in range(1, 11)])
    assert lrs[10] == pytest.approx(0.01)  # the first step after the warm-up: the full lr
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert 0 < lrs[-1] < 0.01 * 1e-3  # the last step still moves, barely
    assert lrs[10 + 95] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 95 / 190)))
    assert {scheduled_lr("constant", 0.01, s, steps) for s in (1, 100, 200)} == {0.01}
    assert scheduled_lr("cosine", 1.0, 1, 1) == 1.0  # one step: warm-up of one step


def test_the_trainer_steps_with_the_scheduled_lr(env, log, monkeypatch):
    seen = []
    step = TrainStep.__call__

    def record_lr(self, index):
        seen.append(float(self.optimizer.param_groups[0]["lr"]))
        return step(self, index)

    monkeypatch.setattr(TrainStep, "__call__", record_lr)
    config = TrainConfig(steps=30, lr=0.01, schedule="cosine", eval_every=None)
    TwoTowerAgent(env, "mlp", "quick", config).fit(log, progress=False)
    assert seen == pytest.approx([scheduled_lr("cosine", 0.01, s, 30) for s in range(1, 31)])
    with pytest.raises(ValueError, match="schedule must be one of"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=3, schedule="step")).fit(log)


def test_the_ranking_preset_is_the_papers_model_trained_for_ranking():
    assert make_config("ranking") == make_config("paper")
    ranking = TrainConfig.from_preset("ranking")
    assert {k: getattr(ranking, k) for k in PRESETS["ranking"].training} == (
        PRESETS["ranking"].training
    )
    assert ranking.loss == "softmax" and ranking.schedule == "cosine"
    assert TrainConfig.from_preset("paper") == TrainConfig() == TrainConfig.from_preset("quick")
    assert TrainConfig.from_preset("ranking", lr=0.5).lr == 0.5  # an override wins


def test_an_agent_without_a_train_config_trains_as_its_preset(env, log, monkeypatch):
    import recsim_ft.agents.two_tower as two_tower

    used = {}

    def capture(model, log, env, config, **kwargs):
        used[model.config.d_token] = config
        raise RuntimeError("captured")

    monkeypatch.setattr(two_tower, "train", capture)
    for preset in ("ranking", "quick"):
        with pytest.raises(RuntimeError, match="captured"):
            TwoTowerAgent(env, "mlp", preset).fit(log)
    assert used[128] == TrainConfig.from_preset("ranking")  # the paper's d_token
    assert used[32] == TrainConfig()  # quick: the paper's protocol on a small model


def test_a_run_spec_takes_its_presets_training_and_names_what_differs():
    paper = RunSpec("Spotify-v0", "mamba")
    training = paper.train
    assert (training.lr, training.steps, training.loss, training.batch_size, training.schedule) == (
        None,  # the env's protocol
        None,  # one pass over the log
        "mse",
        32,
        "constant",
    )
    ranking = RunSpec("Spotify-v0", "mamba", preset="ranking")
    for name, value in PRESETS["ranking"].training.items():
        assert getattr(ranking.train, name) == value, name
    assert ranking.train_steps() == PRESETS["ranking"].training["steps"]
    assert str(ranking.relative_dir()) == "Spotify-v0/mamba-ranking/seed0"
    other = RunSpec("Spotify-v0", "mamba", preset="ranking", lr=3e-3, schedule="constant")
    assert str(other.relative_dir()) == "Spotify-v0/mamba-ranking-lr0.003-constant/seed0"
    short = RunSpec("Spotify-v0", "transformer", preset="quick", steps=1000)
    assert str(short.relative_dir()) == "Spotify-v0/transformer-quick-s1000/seed0"
    # the baselines ignore the preset: one directory, whichever the sweep's preset
    assert RunSpec("Spotify-v0", "gbdt", preset="ranking").relative_dir() == (
        RunSpec("Spotify-v0", "gbdt").relative_dir()
    )
    # a spec saved before schedules existed is the paper's constant lr, equal to today's
    saved = paper.to_dict()
    del saved["schedule"]
    assert RunSpec.from_dict(saved) == paper
    with pytest.raises(ValueError, match="schedule must be one of"):
        RunSpec("Spotify-v0", "mamba", schedule="step")


def _settings() -> list[Setting]:
    return [
        Setting("toy", "Toy", TOY, {"n_items": 12, "n_groups": 3}),
        Setting("toy16", "Toy 16", TOY, {"n_items": 16, "n_groups": 4}),
    ]


def test_tune_searches_the_training_and_chooses_one_for_every_setting(tmp_path):
    training = {"lr": [1e-4, 1e-2], "schedule": ["constant", "cosine"]}
    options = dict(preset="quick", steps=20, n_samples=640, eval_users=40)
    report = experiments.tune(
        _settings(), tmp_path, agents=["mlp"], seeds=1, progress=False, training=training, **options
    )
    assert [o.status for o in report.outcomes] == ["done"] * 8
    assert {o.run_dir.parent.name for o in report.outcomes} >= {
        "mlp-quick-lr0.0001-s20",
        "mlp-quick-lr0.01-cosine-s20",
    }
    table = report.table
    assert len(table) == 8 and set(table["params"]) == {
        "lr=0.0001 schedule=constant",
        "lr=0.0001 schedule=cosine",
        "lr=0.01 schedule=constant",
        "lr=0.01 schedule=cosine",
    }
    for (setting, agent), chosen in report.best_training.items():
        rows = table[(table["setting"] == setting) & (table["agent"] == agent)]
        best = rows.loc[rows["mean"].idxmax(), "params"]
        assert experiments.tuning.params_text(chosen) == best
    # the shared choice: the best mean share of each setting's best, computed here by hand
    share = table["mean"] / table.groupby("setting")["mean"].transform("max")
    by_candidate = share.groupby(table["params"]).mean()
    assert experiments.tuning.params_text(report.shared) == by_candidate.idxmax()
    assert (
        isinstance(report.shared["lr"], float) and report.shared["schedule"] in training["schedule"]
    )
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["shared_training"] == report.shared
    assert "One training for every setting and embedder" in report.markdown
    assert "Training search" in report.markdown
    assert pd.read_csv(tmp_path / "tune.csv")["params"].notna().all()


@pytest.mark.parametrize(
    "training, message",
    [
        ({"optimizer": ["adam"]}, "training has no field"),
        ({"lr": []}, "lists no value"),
        ({"lr": [1e-3, 1e-3]}, "more than once"),
    ],
)
def test_tune_refuses_a_bad_training_grid(tmp_path, training, message):
    with pytest.raises(ValueError, match=message):
        experiments.tune(_settings(), tmp_path, agents=["mlp"], training=training)
    assert not any(tmp_path.iterdir())  # refused before any run
    with pytest.raises(ValueError, match="not both"):
        experiments.tune(_settings(), tmp_path, lrs=[1e-3], agents=["mlp"], training={"lr": [1]})


def test_the_cli_parses_a_training_grid_and_names_bad_ones(tmp_path, capsys):
    assert parse_training_grid(["steps=1000,2000", "lr=1e-3", "loss=softmax,bce"]) == {
        "steps": [1000, 2000],
        "lr": [0.001],
        "loss": ["softmax", "bce"],
    }
    base = ["tune", "--table", "1", "--out", str(tmp_path / "t"), "--quiet"]
    for extra, message in (
        (["--grid", "momentum=0.9"], "'momentum' is not a training field"),
        (["--grid", "lr"], "expects FIELD=V1,V2"),
        (["--grid", "lr=1e-3", "lr=3e-3"], "names 'lr' twice"),
        (["--grid", "steps=10,10"], "--grid steps names '10' more than once"),
        (["--grid", "lr=1e-3", "--lrs", "1e-3"], "not both"),
        (["--table", "1", "1"], "--table names '1' more than once"),
    ):
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err


def test_reproduce_trains_the_models_under_each_preset_and_the_baselines_once(tmp_path):
    small = dict(d_token=16, mamba_layers=1, transformer_layers=1, d_ffn=32, head_dims=(16,))
    options = dict(steps=10, n_samples=2_000, eval_users=40, model=small)
    agents = ["mamba", "transformer", "gbdt", "random"]
    both = experiments.reproduce(
        1,
        tmp_path,
        seeds=2,
        settings=_settings()[:1],
        agents=agents,
        presets=["paper", "ranking"],
        progress=False,
        figures=False,
        **options,
    )
    assert [o.status for o in both.outcomes] == ["done"] * 12  # 2 seeds x (2 x 2 models + 2)
    rows = ["mamba", "mamba-ranking", "transformer", "transformer-ranking", "gbdt", "random"]
    assert list(dict.fromkeys(both.summary["agent"])) == rows
    ranking = [o.spec.train for o in both.outcomes if o.spec.row == "mamba-ranking"]
    assert {(s.loss, s.schedule, s.lr, s.steps) for s in ranking} == {
        ("softmax", "cosine", PRESETS["ranking"].training["lr"], 10)
    }
    for row in ("mamba-s10", "mamba-ranking-s10", "transformer-ranking-s10", "gbdt"):
        assert (tmp_path / "runs" / "toy" / row / "seed1" / "DONE").is_file(), row
    pairs = set(zip(both.tests["a"], both.tests["b"], strict=True))
    assert {("mamba-ranking", "gbdt"), ("mamba-ranking", "transformer-ranking")} <= pairs
    assert "| FT-Mamba (ranking) |" in both.markdown
    assert "Paired tests, FT-Transformer (ranking) − GBDT" in both.markdown
    # one preset again: its runs and the baselines reused, the other preset's rows left out
    one = experiments.reproduce(
        1,
        tmp_path,
        seeds=2,
        settings=_settings()[:1],
        agents=agents,
        presets=["ranking"],
        progress=False,
        figures=False,
        **options,
    )
    assert {o.status for o in one.outcomes} == {"reused"}
    assert list(dict.fromkeys(one.summary["agent"])) == [
        "mamba-ranking",
        "transformer-ranking",
        "gbdt",
        "random",
    ]
    same = both.summary.set_index(["agent", "metric"]).loc["gbdt", "mean"]
    assert one.summary.set_index(["agent", "metric"]).loc["gbdt", "mean"].equals(same)
    with pytest.raises(ValueError, match="each preset once"):
        experiments.reproduce(1, tmp_path, settings=_settings()[:1], presets=["paper", "paper"])
    base = ["reproduce", "--table", "1", "--out", str(tmp_path / "cli"), "--quiet"]
    assert main([*base, "--preset", "quick", "quick"]) == 2
