"""One home for a training option: ``TrainConfig``'s field and its metadata. Every run option
reaches ``RunSpec``, its saved form, a run directory's name and the command line without a
line of its own anywhere else; a spec saved by an earlier version still loads as the same spec."""

from __future__ import annotations

import dataclasses

import pytest

from recsim_ft.cli import build_parser, training_options
from recsim_ft.experiments import RunSpec
from recsim_ft.models.presets import PRESETS
from recsim_ft.train import PRESET_FIELDS, TrainConfig, run_options

#: A value other than the default of every run option, as its command-line text.
OTHER_VALUES = {
    "lr": ("3e-3", 3e-3),
    "batch_size": ("64", 64),
    "loss": ("bce", "bce"),
    "temperature": ("0.5", 0.5),
    "uniform_negatives": ("8", 8),
    "schedule": ("cosine", "cosine"),
    "steps": ("40", 40),
    "negatives": ("batch", "batch"),
    "workers": ("2", 2),
    "id_updates": ("sparse", "sparse"),
    "popularity_prior": ("auto", "auto"),
    "select_metric": ("HR@5", "HR@5"),
    "precision": ("bf16", "bf16"),
    "eval_every": ("7", 7),
    "eval_users": ("30", 30),
    "eval_split": ("validation", "validation"),
    "ks": ("1 5", (1, 5)),
    "device": ("meta", "meta"),
}


def test_every_run_option_has_its_help_and_a_value_to_test_with():
    assert set(run_options()) == set(OTHER_VALUES)
    for name, option in run_options().items():
        assert option.help and option.help[0].islower(), name
    assert PRESET_FIELDS == tuple(n for n, o in run_options().items() if o.preset)


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_a_run_option_goes_from_the_command_line_to_the_trainer(name):
    text, value = OTHER_VALUES[name]
    flag = "--" + name.replace("_", "-")
    args = build_parser().parse_args(
        ["train", "--env", "Spotify-v0", "--out", "x", flag, *text.split()]
    )
    assert training_options(args) == {name: value}
    spec = RunSpec("Spotify-v0", "transformer", **training_options(args))
    assert getattr(spec.train, name) == value
    assert spec.to_dict()[name] == (list(value) if isinstance(value, tuple) else value)
    assert RunSpec.from_dict(spec.to_dict()) == spec  # saved and read back
    if run_options()[name].tag is not None:  # a directory per value
        assert spec.relative_dir() != RunSpec("Spotify-v0", "transformer").relative_dir()


def test_the_sweeps_take_the_run_options_their_tables_allow():
    parser = build_parser()
    reproduce = parser.parse_args(
        ["reproduce", "--table", "1", "--out", "x", "--negatives", "batch", "--lr", "1e-3"]
    )
    assert training_options(reproduce) == {"negatives": "batch", "lr": 1e-3}
    for command in ("reproduce", "tune"):  # a table's cut-offs and users are its own
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--table", "1", "--out", "x", "--eval-split", "test"])
    tune = parser.parse_args(["tune", "--table", "1", "--out", "x", "--lrs", "1e-3"])
    assert "lr" not in training_options(tune)  # tune searches learning rates: --lrs, --grid


def test_bad_option_text_names_the_value(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--env", "Spotify-v0", "--out", "x", "--steps", "0"])
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_a_preset_sets_only_training_fields_and_each_value_passes_the_checks():
    for name, preset in PRESETS.items():
        assert set(preset.training) <= set(PRESET_FIELDS), name
        TrainConfig.from_preset(name).checked()


def test_a_spec_takes_no_option_the_trainer_does_not_have():
    with pytest.raises(TypeError, match="no option 'learning_rate'"):
        RunSpec("Spotify-v0", "mamba", learning_rate=1e-3)
    with pytest.raises(TypeError, match="no option 'cuda_graph'"):  # set per run, not saved
        RunSpec("Spotify-v0", "mamba", cuda_graph=False)


def test_a_spec_saved_by_an_earlier_version_is_the_same_spec():
    """Saved before ``negatives`` was an option, with the split as ``split`` and the
    trainer's evaluation interval as null."""
    old = {
        "env_id": "Spotify-v0",
        "agent": "mamba",
        "seed": 3,
        "env_kwargs": {},
        "setting": "spotify",
        "preset": "ranking",
        "n_samples": None,
        "steps": 2000,
        "lr": 0.0003,
        "schedule": "cosine",
        "loss": "softmax",
        "temperature": 1.0,
        "uniform_negatives": 0,
        "popularity_prior": "auto",
        "select_metric": "NDCG@10",
        "batch_size": 128,
        "precision": "fp32",
        "eval_every": None,
        "eval_users": 100,
        "ks": [1, 5, 10],
        "device": "cpu",
        "data": None,
        "split": "test",
        "model": {},
        "params": {},
    }
    assert RunSpec.from_dict(old) == RunSpec(
        "Spotify-v0", "mamba", 3, setting="spotify", preset="ranking"
    )
    baseline = {**old, "agent": "gbdt", "preset": "paper"}
    baseline.update(dict.fromkeys(["lr", "schedule", "loss", "temperature", "batch_size"]))
    assert RunSpec.from_dict(baseline) == RunSpec("Spotify-v0", "gbdt", 3, setting="spotify")


def test_replace_changes_a_run_option_and_keeps_the_rest():
    spec = RunSpec("Spotify-v0", "mamba", preset="ranking", lr=1e-3)
    other = dataclasses.replace(spec, eval_split="validation", seed=4)
    assert (other.train.eval_split, other.seed, other.train.lr) == ("validation", 4, 1e-3)
    assert other.train.loss == "softmax"  # the preset's, kept


def test_a_count_of_users_is_users_in_every_command_and_the_old_names_still_work(capsys):
    parser = build_parser()
    for argv, dest in (
        (["train", "--env", "Spotify-v0", "--out", "x"], "eval_users"),
        (["reproduce", "--table", "1", "--out", "x"], "eval_users"),
        (["evaluate", "--run", "x"], "users"),
        (["export", "--run", "x", "--out", "y"], "users"),
        (["hm-competition", "--out", "x"], "users"),
    ):
        assert getattr(parser.parse_args([*argv, "--users", "7"]), dest) == 7, argv
    assert capsys.readouterr().err == ""
    for argv, old, dest in (
        (["train", "--env", "Spotify-v0", "--out", "x"], "--eval-users", "eval_users"),
        (["evaluate", "--run", "x"], "--n-users", "users"),
        (["hm-competition", "--out", "x"], "--customers", "users"),
    ):
        assert getattr(parser.parse_args([*argv, old, "9"]), dest) == 9
        assert f"{old} is deprecated; use --users" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the old name parses its value as the new one does
        parser.parse_args(["evaluate", "--run", "x", "--n-users", "0"])


def test_tune_refuses_one_value_under_two_spellings(tmp_path):
    """Issue 45: ``lr=none`` is the protocol's learning rate (ToyRec-v0: 1e-2), so the grid
    ``none,1e-2`` trained the same runs twice; refused before any training."""
    from recsim_ft.experiments import Setting, tune

    settings = [Setting("toy", "Toy", "toy_env:ToyRec-v0")]
    with pytest.raises(ValueError, match="same run \\(lr none is the protocol's 0.01 there\\)"):
        tune(settings, tmp_path, training={"lr": [None, 1e-2]}, agents=["mlp"], seeds=1)
    assert not any(tmp_path.iterdir())


def test_every_option_of_every_command_says_what_it_does():
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    silent = [
        f"{name} {action.option_strings[0]}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if action.option_strings and action.dest != "help" and not action.help
    ]
    assert not silent


def test_more_bad_input_is_refused_by_name(tmp_path):
    """Issue 45, class 9: each of these was a traceback or named the wrong cause."""
    import gymnasium as gym
    import numpy as np

    from recsim_ft.agents import GBDTAgent, PopularityAgent
    from recsim_ft.data import InteractionLog, collect
    from recsim_ft.retrieval import ApproximateIndex

    env = gym.make("Spotify-v0")
    with pytest.raises(IsADirectoryError, match="is a folder; give the path of an interaction"):
        InteractionLog.load(tmp_path)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        env.unwrapped.sample_users(-1, np.random.default_rng(0))
    log = collect(env, n=500, seed=0)
    with pytest.raises(TypeError, match="policy is an agent \\(PopularityAgent\\)"):
        collect(env, n=10, policy=PopularityAgent(env).fit(log))
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        GBDTAgent(env, seed=-1).fit(log)
    with pytest.raises(TypeError, match="items must be ItemEmbeddings.*got ndarray"):
        ApproximateIndex(np.zeros((5, 3)), kind="flat")
