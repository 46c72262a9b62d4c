"""Every example runs, in a real subprocess, in its ``--smoke`` mode, prints its table and writes its
outputs; outputs already saved are not overwritten."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: script -> (arguments, a line of the printed table, the files written to --out)
CASES = {
    "compare_embedders.py": (["--env", "Spotify-v0"], "FT-transformer", ["compare_Spotify.csv", "compare_Spotify.png"]),
    "custom_agent.py": ([], "per-item ridge (ours)", ["custom_agent.csv"]),
    "vaccine_sweep.py": (["--embedder", "transformer"], "k=100, messages=100", ["vaccine_sweep.csv", "vaccine_sweep.png"]),
    "sb3_ppo.py": ([], "PPO + FT-mamba", ["sb3_Spotify.csv"]),
    "online_bandit.py": ([], "LinUCB", ["online_Spotify.csv", "online_Spotify.png"]),
}


def run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    # one torch / BLAS thread: tiny smoke models run faster than with threads fighting for 2 cores
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(EXAMPLES / script), "--smoke", *args], capture_output=True,
                          text=True, env=env, timeout=240, check=False)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_smoke_run(script, tmp_path):
    args, table_line, outputs = CASES[script]
    done = run_example(script, *args, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HR@1" in done.stdout and table_line in done.stdout, done.stdout
    for name in outputs:
        assert (tmp_path / name).stat().st_size > 0, name


def test_example_refuses_to_overwrite_saved_results(tmp_path):
    saved = tmp_path / "custom_agent.csv"
    saved.write_text("mine")
    done = run_example("custom_agent.py", "--out", str(tmp_path))
    assert done.returncode != 0 and "refusing to overwrite" in done.stderr and str(saved) in done.stderr
    assert saved.read_text() == "mine"
