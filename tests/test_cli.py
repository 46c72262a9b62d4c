"""The ``recsim-ft`` command line, run in-process through ``main([...])`` and once as a real
process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recsim_ft.cli import main, parse_env_kwargs
from recsim_ft.data import InteractionLog
from recsim_ft.envs.hm.synthetic import write_kaggle_files

# "toy_env:" makes Gymnasium import tests/toy_env.py (pytest puts tests/ on sys.path)
TOY = "toy_env:ToyRec-v0"
TOY_KWARGS = "--env-kwargs n_items=12 n_groups=3".split()
QUICK = "--preset quick --n 320 --steps 10 --eval-every 5 --users 40 --quiet".split()


def fails_cleanly(capsys, argv: list[str], *fragments: str) -> None:
    """``main(argv)`` exits 2 with one ``recsim-ft: error:`` line naming ``fragments``, no
    traceback, and nothing before it that says otherwise (a refused resume said "resuming")."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "resuming" not in err
    lines = [line for line in err.splitlines() if line.startswith("recsim-ft: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0]


def test_env_kwargs_parsing():
    assert parse_env_kwargs(["clusters=25", "messages=50", "item_features=index"]) == {
        "clusters": 25,
        "messages": 50,
        "item_features": "index",
    }
    assert parse_env_kwargs(['{"p_match": 0.9, "messages": 25}']) == {
        "p_match": 0.9,
        "messages": 25,
    }


def test_collect_writes_a_log_and_never_overwrites_silently(tmp_path, capsys):
    out = tmp_path / "toy.parquet"
    collect = ["collect", "--env", TOY, *TOY_KWARGS, "--n", "300", "--seed", "3", "--out", str(out)]
    assert main(collect) == 0
    log = InteractionLog.load(out)
    assert len(log) == 300 and log.env_kwargs == {"n_items": 12, "n_groups": 3} and log.seed == 3
    first = out.read_bytes()
    fails_cleanly(
        capsys, ["collect", "--env", TOY, "--n", "10", "--out", str(out)], str(out), "--overwrite"
    )
    assert out.read_bytes() == first
    assert main([*collect, "--overwrite"]) == 0
    assert out.read_bytes() == first  # same seed, same file
    assert "dated" not in capsys.readouterr().out  # the toy env's events have no dates


def test_collect_says_the_dates_of_an_hm_log(tmp_path, capsys):
    out = tmp_path / "hm.parquet"
    kwargs = ["--env-kwargs", "n_customers=2000", "cache=False"]
    assert main(["collect", "--env", "HMFashion-v0", *kwargs, "--n", "500", "--out", str(out)]) == 0
    log = InteractionLog.load(out)
    printed = capsys.readouterr().out
    assert f"dated {log.times.min()} .. {log.times.max()}" in printed
    assert np.datetime64("2018-09-20") <= log.times.min() <= log.times.max()


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    out = str(tmp_path / "x.parquet")

    def collect_with(env_id: str, env_kwargs: str) -> list[str]:
        return ["collect", "--env", env_id, "--env-kwargs", env_kwargs, "--out", out]

    fails_cleanly(
        capsys,
        ["collect", "--env", "NoSuchEnv-v0", "--out", out],
        "NoSuchEnv-v0",
        "Spotify-v0",
    )
    fails_cleanly(capsys, collect_with(TOY, '{"n_items": 12,'), "not valid JSON")
    fails_cleanly(capsys, collect_with(TOY, "n_groups=0"), "n_groups=0")
    vaccine = "VaccineMessaging-v0"
    fails_cleanly(
        capsys,
        collect_with(vaccine, "clusters=abc"),
        "clusters must be a positive integer, got 'abc' (str)",
    )
    fails_cleanly(
        capsys,
        collect_with(vaccine, "clusters=2.5"),
        "clusters must be a positive integer, got 2.5 (float)",
    )
    fails_cleanly(
        capsys, ["evaluate", "--run", str(tmp_path / "missing")], "missing", "not a recsim-ft run"
    )
    fails_cleanly(
        capsys,
        ["train", "--data", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "r")],
        "nope.parquet",
    )
    fails_cleanly(
        capsys,
        ["reproduce", "--table", "2", "--settings", "k7_m7", "--out", str(tmp_path / "r")],
        "k7_m7",
        "k25_m25",
    )
    fails_cleanly(
        capsys,
        ["tune", "--table", "1", "--agents", "oracle", "--out", str(tmp_path / "r")],
        "'oracle'",
        "mamba",
        "gbdt",
    )
    for params, fragments in (
        (["ridge=10"], ("AGENT.NAME=VALUE", "'ridge'")),
        (["oracle.k=1"], ("'oracle' has no hyperparameters", "gbdt")),
        (["linear.alpha=1"], ("'linear' has no hyperparameter 'alpha'", "ridge")),
        (["linear.ridge=1", "--agents", "gbdt"], ("['linear']", "does not run")),
    ):
        argv = ["reproduce", "--table", "1", "--out", str(tmp_path / "r"), "--params", *params]
        fails_cleanly(capsys, argv, *fragments)
    # a value named twice would count its runs twice
    for argv, fragments in (
        (["reproduce", "--table", "1", "--agents", "random", "random"], ("--agents", "'random'")),
        (["reproduce", "--table", "1", "--envs", "spotify", "spotify"], ("--settings", "spotify")),
        (["tune", "--table", "1", "--lrs", "1e-4", "1e-4"], ("--lrs", "'0.0001'")),
        (
            ["reproduce", "--table", "1", "--params", "linear.ridge=1", "linear.ridge=10"],
            ("--params sets linear.ridge twice", "'10'"),
        ),
    ):
        fails_cleanly(capsys, [*argv, "--out", str(tmp_path / "r")], *fragments)
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "r").exists()
    assert (
        main(["train", "--embedder", "gru", "--out", str(tmp_path / "r")]) == 2
    )  # argparse's own check


def test_train_then_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    train = [
        "train",
        "--env",
        TOY,
        *TOY_KWARGS,
        "--embedder",
        "transformer",
        "--seed",
        "1",
        "--out",
        str(run),
    ]
    assert main([*train, *QUICK]) == 0
    for name in ("config.json", "metrics.json", "curve.csv", "model.safetensors", "DONE"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["spec"]["agent"] == "transformer" and config["train"]["steps"] == 10
    assert list(pd.read_csv(run / "curve.csv")["step"]) == [0, 5, 10]
    saved = json.loads((run / "metrics.json").read_text())["metrics"]
    capsys.readouterr()

    assert main(["evaluate", "--run", str(run)]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert float(printed["HR@1"]) == pytest.approx(saved["HR@1"], abs=5e-5)
    assert main(["evaluate", "--run", str(run), "--users", "60", "--seed", "7"]) == 0
    assert (
        float(
            dict(line.split() for line in capsys.readouterr().out.strip().splitlines())["n_users"]
        )
        > 40
    )

    stamp = (run / "model.safetensors").stat().st_mtime_ns
    fails_cleanly(
        capsys,
        ["train", "--env", TOY, *TOY_KWARGS, "--out", str(run), *QUICK],
        "not empty",
        "--overwrite",
    )
    assert (run / "model.safetensors").stat().st_mtime_ns == stamp
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    fails_cleanly(
        capsys,
        [*train, "--resume", *QUICK[:5], "12", *QUICK[6:]],
        "cannot resume",
        "steps",
    )
    fails_cleanly(  # another architecture with the same weights' shapes
        capsys,
        [*train, "--resume", *QUICK, "--model", "head_activation=relu"],
        "cannot resume",
        "model",
    )
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # a refusal changes nothing
    (run / "model.safetensors").write_bytes(b"not a model")
    fails_cleanly(capsys, ["evaluate", "--run", str(run)], "model.safetensors")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    fails_cleanly(
        capsys,
        ["train", "--env", TOY, "--out", str(other), "--overwrite", *QUICK],
        "refusing to delete",
    )
    assert (other / "mine.txt").read_text() == "keep me"


def test_resume_says_where_it_starts(tmp_path, capsys):
    """``--resume`` never starts over silently: it names the step it continues from, or says
    that there was nothing to continue."""
    run = tmp_path / "run"
    train = ["train", "--env", TOY, *TOY_KWARGS, "--embedder", "mlp", "--out", str(run), *QUICK]
    assert main([*train, "--resume"]) == 0
    assert f"recsim-ft: no checkpoint in {run}: training from step 0" in capsys.readouterr().err
    assert main([*train, "--resume"]) == 0  # the finished run's checkpoint holds its last step
    assert f"recsim-ft: resuming {run} at step 10 of 10" in capsys.readouterr().err


def test_train_on_a_collected_file_matches_collecting(tmp_path, capsys):
    data = tmp_path / "toy.parquet"
    assert main(["collect", "--env", TOY, *TOY_KWARGS, "--n", "320", "--out", str(data)]) == 0
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "a"), *QUICK]) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["spec"]["env_kwargs"] == {
        "n_items": 12,
        "n_groups": 3,
    }
    fails_cleanly(
        capsys,
        ["train", "--data", str(data), "--env", "Spotify-v0", "--out", str(tmp_path / "b")],
        "does not match",
    )


def test_reproduce_baselines_on_spotify(tmp_path, capsys):
    out = tmp_path / "results"
    argv = "reproduce --table 1 --envs spotify --agents oracle random --seeds 2 --users 50"
    argv = [*argv.split(), "--quiet", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| oracle | " in printed and "| random | " in printed and "P@5 | P@10" in printed
    summary = pd.read_csv(out / "table1.csv")
    assert set(summary["agent"]) == {"oracle", "random"} and (summary["n"] == 2).all()
    hr1 = summary[summary.metric == "HR@1"].set_index("agent")["mean"]
    assert hr1["oracle"] == 1.0 and hr1["random"] < 0.6
    stamp = (out / "runs" / "spotify" / "random" / "seed1" / "DONE").stat().st_mtime_ns
    assert main(argv) == 0  # continues the sweep: nothing left to run
    assert (out / "runs" / "spotify" / "random" / "seed1" / "DONE").stat().st_mtime_ns == stamp


def test_params_and_help_in_a_real_process():
    done = subprocess.run(
        [sys.executable, "-m", "recsim_ft", "params", "--preset", "paper"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "479,232" in done.stdout and "1,186,048" in done.stdout
    exe = shutil.which("recsim-ft")
    if exe is None:
        pytest.skip("the recsim-ft console script is not installed")
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "reproduce" in done.stdout


def test_info_says_which_kernels_run_here(capsys, monkeypatch):
    from recsim_ft.models import native_scan

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    built, detail = native_scan.native_status()
    assert f"native (C, CPU)   {'built' if built else 'not built'}: {detail}" in out
    assert f"float32 on cpu   -> {'native' if built else 'torch'}" in out
    assert "float64 on cpu   -> torch" in out
    monkeypatch.setenv("RECSIM_FT_KERNELS", "mamba_ssm")  # forced: refused here, and said why
    assert main(["info"]) == 0
    assert (
        "float32 on cpu   -> refused: kernels='mamba_ssm' needs CUDA tensors"
        in capsys.readouterr().out
    )


def test_hm_unknown_ids_option_reaches_the_kaggle_files(tmp_path, capsys):
    data = tmp_path / "hm"
    paths = write_kaggle_files(data, n_customers=1500, fmt="csv", seed=2)
    with paths["transactions"].open("a") as transactions:
        transactions.write("2020-01-01,nobody,0622718001,0.1,1\n")
    argv = "reproduce --table 1 --envs hm --agents oracle --seeds 1 --users 20 --quiet"
    argv = [*argv.split(), "--hm-data", str(data), "--out", str(tmp_path / "out")]
    assert main([*argv, "--hm-unknown-ids", "error"]) == 1  # the run fails, the sweep reports it
    assert "1 row name 1 customer missing from" in capsys.readouterr().out
    fails_cleanly(
        capsys, ["reproduce", "--table", "1", "--hm-unknown-ids", "drop", "--out", "x"], "--hm-data"
    )


def test_a_run_in_an_env_of_a_drawn_seed_evaluates_in_that_env(tmp_path, capsys):
    """``seed=None`` draws the vaccine env's seed: the run records the drawn one, so evaluate
    rebuilds the env it trained in, every time."""
    run = tmp_path / "run"
    env_kwargs = ["--env-kwargs", "clusters=3", "messages=12", "n_users=300", "seed=null"]
    argv = ["train", "--env", "VaccineMessaging-v0", *env_kwargs, "--embedder", "mlp"]
    assert main([*argv, "--out", str(run), *QUICK]) == 0
    seed = json.loads((run / "config.json").read_text())["spec"]["env_kwargs"]["seed"]
    assert isinstance(seed, int)
    capsys.readouterr()
    printed = set()
    for _ in range(2):
        assert main(["evaluate", "--run", str(run)]) == 0
        printed.add(capsys.readouterr().out)
    assert len(printed) == 1


def test_errors_below_the_commands_are_one_line_too(tmp_path, capsys):
    """Bad values found by the library (not argparse) end the same way: one line, exit 2."""
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    cases = [
        (
            ["collect", "--env", "VaccineMessaging-v0", "--env-kwargs", "clusters=abc", "--n", "9"],
            "clusters must be",
        ),
        (["collect", "--env", "CartPole-v1", "--n", "10"], "not a recsim-ft one"),
        (["train", "--env", TOY, *TOY_KWARGS, "--device", "tpu", *QUICK], "'tpu'"),
    ]
    for argv, fragment in cases:
        fails_cleanly(capsys, [*argv, "--out", str(tmp_path / "out")], fragment)
    fails_cleanly(capsys, ["train", "--env", TOY, "--out", str(a_file), *QUICK], "is a file")
    collect = ["collect", "--env", TOY, "--n", "10", "--out", str(tmp_path), "--overwrite"]
    fails_cleanly(capsys, collect, "is a directory")
    assert a_file.read_text() == "mine" and not (tmp_path / "out").exists()


def test_a_failed_train_leaves_nothing_behind(tmp_path, capsys):
    """The corrected command then runs without --overwrite."""
    run = tmp_path / "run"
    env = ["--env", "VaccineMessaging-v0", "--env-kwargs", "clusters=3", "messages=6"]
    argv = ["train", *env, "n_users=300", "--out", str(run), *QUICK]
    fails_cleanly(capsys, argv, "k=10", "--ks")
    assert not run.exists()
    assert main([*argv, "--ks", "1", "5"]) == 0
    assert json.loads((run / "config.json").read_text())["spec"]["ks"] == [1, 5]


def test_a_diverging_training_says_so(tmp_path, capsys):
    argv = ["train", "--env", TOY, *TOY_KWARGS, "--embedder", "mlp", "--lr", "1e6"]
    fails_cleanly(capsys, [*argv, "--out", str(tmp_path / "run"), *QUICK], "diverged", "--lr")
    assert not (tmp_path / "run").exists()


def test_a_negative_seed_is_refused_naming_the_option(capsys):
    for argv in (
        ["collect", "--env", "Spotify-v0", "--out", "x.parquet"],
        ["export", "--run", "r", "--out", "s"],
        ["hm-competition", "--out", "c"],
        ["evaluate", "--run", "r"],
    ):
        assert main([*argv, "--seed", "-1"]) == 2
        assert "argument --seed: expected an integer >= 0, got '-1'" in capsys.readouterr().err
