"""The run directory (``RunDir``): what the command line, the sweeps, evaluation and export
know of a run's files goes through it."""

from __future__ import annotations

import pytest

from recsim_ft import experiments
from recsim_ft.experiments import RunDir, RunSpec
from recsim_ft.experiments.rundir import CONFIG_FILE, DONE_MARKER, finished

TOY = "toy_env:ToyRec-v0"


def test_prepare_never_deletes_what_is_not_a_run(tmp_path):
    assert RunDir(tmp_path / "new").prepare()  # starts empty
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        RunDir(mine).prepare()
    with pytest.raises(ValueError, match="no config.json.*refusing to delete it"):
        RunDir(mine).prepare(overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert RunDir(mine).prepare(resume=True) is False  # continues what is there
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        RunDir(tmp_path / "file").prepare()


def test_a_finished_run_is_read_reloaded_and_recognised(tmp_path):
    spec = RunSpec(TOY, "mlp", 0, preset="quick", steps=20, n_samples=640, eval_users=30)
    run_dir = RunDir(tmp_path / "run")
    metrics = experiments.run(spec, run_dir)
    assert run_dir.done and run_dir.spec() == spec and run_dir.metrics() == metrics
    assert run_dir.progress() == (20, 20)
    assert set(run_dir.costs()) == set(experiments.rundir.COSTS)
    assert finished(spec, run_dir) and run_dir.differences(spec) == []
    other = RunSpec(TOY, "mlp", 0, preset="quick", steps=30, n_samples=640, eval_users=30)
    assert run_dir.differences(other) == ["steps"]
    with pytest.raises(ValueError, match="different settings \\(steps\\)"):
        finished(other, run_dir)
    saved = run_dir.load()
    assert saved.spec == spec and saved.users(30).ids.tolist() == (
        saved.env.unwrapped.eval_users("test", 30, saved.test_seed).ids.tolist()
    )
    assert experiments.evaluate_saved_model(saved) == metrics  # the same users, the same model
    config = run_dir.config()  # issue 45: a config.json without a field was a KeyError
    del config["seeds"]
    run_dir.write(CONFIG_FILE, config)
    with pytest.raises(ValueError, match="config.json is damaged.*no seeds.test"):
        run_dir.load()
    # RunDir is a path: anything that takes one takes it
    assert RunDir(run_dir) == run_dir and (run_dir / DONE_MARKER).is_file()


def test_what_is_not_a_finished_model_run_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a recsim-ft run directory"):
        RunDir(tmp_path).load()
    baseline = RunDir(tmp_path / "gbdt")
    experiments.run(RunSpec(TOY, "popularity", 0, n_samples=400), baseline)
    with pytest.raises(FileNotFoundError, match="no model file.*agent 'popularity'"):
        baseline.load()
    (baseline / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="config.json is damaged"):
        baseline.spec()
