"""Progress where nobody watches a bar (a log file, a captured stream): nothing for a short
wait, a plain line every few seconds for a long one (``recsim_ft.progress``)."""

from __future__ import annotations

import time

import pytest

from recsim_ft import progress
from recsim_ft.agents import TwoTowerAgent
from recsim_ft.train import TrainConfig


def test_a_short_wait_prints_nothing_and_a_long_one_prints_lines(capsys, monkeypatch):
    assert not progress.interactive()  # pytest captures stderr: no terminal
    with progress.progress_bar(None, total=3, desc="quick") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.05)
    with progress.progress_bar(None, total=3, desc="slow", unit="step") as bar:
        for _ in range(3):
            time.sleep(0.06)
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("slow:") for line in lines), lines
    assert "3/3" in lines[-1] and "\r" not in "".join(lines)
    with progress.progress_bar(False, total=3) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("shown, prints", [(None, True), (False, False)])
def test_training_reports_in_a_log_file(env, log, capsys, monkeypatch, shown, prints):
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    config = TrainConfig(steps=5, eval_every=None)
    TwoTowerAgent(env, "mlp", "quick", config).fit(log, progress=shown)
    said = capsys.readouterr().err
    assert ("train:" in said and "5/5" in said) == prints, said
