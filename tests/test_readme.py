"""Every ```python block of the README runs on its own, top to bottom, in a fresh interpreter
(a reader copies one block, not the page): the blocks that train run with quick settings (the
substitutions below, each of which must still be found in its block), and the printed values the
README shows in a block's comments are checked where they are deterministic."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)
TRAIN_CONFIG = "from recsim_ft.train import TrainConfig\n"

#: block number -> (text in the block, what the test runs instead): quick settings only
QUICK = {
    0: [
        ("import gymnasium as gym\n", f"import gymnasium as gym\n{TRAIN_CONFIG}"),
        ("n=160_000", "n=2_000"),
        (
            'TwoTowerAgent(env, embedder="mamba", preset="paper").fit(log)',
            'TwoTowerAgent(env, embedder="mamba", preset="quick", '
            "train_config=TrainConfig(steps=10, eval_every=None)).fit(log, progress=False)",
        ),
    ],
    3: [
        ("import gymnasium as gym\n", f"import gymnasium as gym\n{TRAIN_CONFIG}"),
        ("n_items=20_000", "n_items=500"),
        ("n=160_000", "n=5_000"),
        (
            'TwoTowerAgent(env, "mamba", "ranking")',
            'TwoTowerAgent(env, "mlp", "quick", TrainConfig.from_preset("ranking", steps=10, '
            "batch_size=64, eval_every=None, select_metric='none'))",
        ),
        ("test_users(1_000, seed=0)", "test_users(100, seed=0)"),
    ],
}
#: blocks whose printed values are checked against the README's comments
CHECKED = {1, 2}


def said_in_comments(block: str) -> list[str]:
    """The values a block says it prints: the decimals of the comment of each ``print`` line,
    or of a comment line right below one (a loop's prints)."""
    said, lines = [], block.splitlines()
    for before, line in zip(["", *lines], lines, strict=False):
        comment = re.match(r"\s*print\(.*\)\s+#\s+(.*)$", line)
        below = line.lstrip().startswith("#") and "print(" in before
        if comment or below:
            said += re.findall(r"-?\d+\.\d+", comment.group(1) if comment else line)
    return said


def test_the_readme_has_the_blocks_this_test_knows():
    assert len(BLOCKS) == 4, "a block was added or removed: give it its settings here"


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_a_readme_block_runs_on_its_own(number, tmp_path):
    block = BLOCKS[number]
    for old, new in QUICK.get(number, []):
        assert old in block, f"block {number} no longer holds {old!r}: update QUICK"
        block = block.replace(old, new)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    process = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # files a block writes stay in the test's folder
        env=env,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    if number in CHECKED:
        said = said_in_comments(BLOCKS[number])
        printed = re.findall(r"-?\d+\.\d+", process.stdout)[-len(said) :]
        for got, want in zip(printed, said, strict=True):  # to the README's decimals
            assert abs(float(got) - float(want)) <= 0.5 * 10 ** -len(want.split(".")[1]), (
                f"the README says {said}, the block printed {process.stdout}"
            )
