"""Every example runs, in a real subprocess, in its ``--smoke`` mode, prints its table and writes
its outputs; outputs already saved are not overwritten."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: script -> (arguments, text the printed table must hold, the files written to --out)
CASES = {
    "compare_embedders.py": (
        ["--env", "Spotify-v0"],
        ["HR@1", "FT-transformer"],
        ["compare_Spotify.csv", "compare_Spotify.png"],
    ),
    "custom_agent.py": ([], ["HR@1", "per-item ridge (ours)"], ["custom_agent.csv"]),
    "vaccine_sweep.py": (
        ["--embedder", "transformer"],
        ["HR@1", "k=100, messages=100"],
        ["vaccine_sweep.csv", "vaccine_sweep.png"],
    ),
    "sb3_ppo.py": ([], ["HR@1", "PPO + FT-mamba"], ["sb3_Spotify.csv"]),
    "online_bandit.py": ([], ["HR@1", "LinUCB"], ["online_Spotify.csv", "online_Spotify.png"]),
    "session_rl.py": (
        [],
        ["greedy one-step oracle", "planner (reward + 5 x P(stays))", "PPO, gamma 0.9"],
        ["session_Spotify.csv"],
    ),
    "serve.py": (
        [],
        ["exact top 12", "service: load + answer", "FAISS hnsw"],
        ["serve.csv", "serve/user_tower.onnx", "serve/items.npy"],
    ),
    "slate_ope.py": (
        [],
        ["SNDR", "Switch-DR", "slates: oracle top 3", "PI", "bandit_feedback"],
        ["ope_Spotify.csv"],
    ),
}


def start_example(script: str, *args: str) -> subprocess.Popen:
    # one torch / BLAS thread: tiny smoke models run faster than with threads fighting for 2 cores
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--smoke", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """All examples at once (most of each run is importing torch, sklearn and SB3)."""
    out = {script: tmp_path_factory.mktemp(script.removesuffix(".py")) for script in CASES}
    started = {
        script: start_example(script, *CASES[script][0], "--out", str(out[script]))
        for script in CASES
    }
    return {script: (*finish(process), out[script]) for script, process in started.items()}


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_smoke_run(script, smoke_runs):
    _, table_lines, outputs = CASES[script]
    returncode, stdout, stderr, out = smoke_runs[script]
    assert returncode == 0, stderr[-3000:]
    assert all(line in stdout for line in table_lines), stdout
    for name in outputs:
        assert (out / name).stat().st_size > 0, name


def test_example_refuses_to_overwrite_saved_results(tmp_path):
    saved = tmp_path / "custom_agent.csv"
    saved.write_text("mine")
    returncode, _, stderr = finish(start_example("custom_agent.py", "--out", str(tmp_path)))
    assert returncode != 0 and "refusing to overwrite" in stderr and str(saved) in stderr
    assert saved.read_text() == "mine"
    returncode, _, stderr = finish(
        start_example("custom_agent.py", "--out", str(tmp_path), "--overwrite")
    )
    assert returncode == 0, stderr[-3000:]
    assert saved.read_text().startswith("agent,")  # --overwrite replaced it


#: Run an example with one module made unimportable (as if its extra were not installed).
WITHOUT_MODULE = """
import runpy, sys
blocked, script = sys.argv[1], sys.argv[2]
sys.modules[blocked] = None  # importing it now raises ModuleNotFoundError
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize(
    "script, blocked, extra",
    [
        ("sb3_ppo.py", "stable_baselines3", "rl"),
        ("compare_embedders.py", "matplotlib", "plot"),
        ("online_bandit.py", "matplotlib", "plot"),
        ("vaccine_sweep.py", "matplotlib", "plot"),
    ],
)
def test_example_without_its_extra_says_what_to_install(script, blocked, extra, tmp_path):
    process = subprocess.run(
        [sys.executable, "-c", WITHOUT_MODULE, blocked, str(EXAMPLES / script), "--smoke"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode != 0 and "Traceback" not in process.stderr, process.stderr
    assert f"{script} needs {blocked}" in process.stderr
    assert f'pip install "recsim-ft[{extra}]"' in process.stderr
    assert not any(tmp_path.iterdir())  # it stopped before doing anything


@pytest.fixture
def common(monkeypatch):
    """The examples' shared module, imported as the examples import it."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import common

    return common


def test_smoke_sets_defaults_and_never_a_flag_the_user_gave(common, monkeypatch):
    def parse(*argv):
        parser = common.example_parser("doc")
        parser.add_argument("--steps", type=common.at_least(1), default=2_000)
        parser.add_argument("--users", type=common.at_least(1), default=2_000)
        monkeypatch.setattr(sys, "argv", ["x.py", *argv])
        return common.parse_example_args(parser, smoke={"steps": 20, "users": 200})

    assert vars(parse("--smoke", "--steps", "50")).items() >= {"steps": 50, "users": 200}.items()
    assert vars(parse("--steps", "50")).items() >= {"steps": 50, "users": 2_000}.items()
    assert vars(parse("--smoke")).items() >= {"steps": 20, "users": 200}.items()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--items", "11"], "argument --items: must be at least 12, got 11"),
        (["--items", "0"], "argument --items: must be at least 12, got 0"),
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        # the pool is known once the env is: refused before any data is generated
        (["--users", "100000"], "--users 100000: asked for 100000 test users but the test pool"),
    ],
)
def test_serve_refuses_what_it_cannot_answer_before_any_work(flags, message, tmp_path):
    returncode, _, stderr = finish(start_example("serve.py", *flags, "--out", str(tmp_path)))
    assert returncode == 2 and message in stderr and "Traceback" not in stderr, stderr
    assert not any(tmp_path.iterdir())
