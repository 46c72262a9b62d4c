"""What a sweep shows while it runs: one bar of the training steps of every pending run, whose
time left is the steps left at the step rate since the first step, shown once it has settled
(runs differ too much in length for a count of finished runs to predict anything), and one bar
per run in training.

The runs report ``(key, steps_done, steps_total)`` from wherever they train: in this process, in
the worker processes of a pool (through a multiprocessing queue) or on Ray (through a Ray queue).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from recsim_ft.experiments.specs import RunSpec

#: Seconds between two reports of one run to another process (its bar needs no more).
REPORT_INTERVAL_S = 0.25
#: The time left is shown once this share of the steps is done and training has run this many
#: seconds: earlier, a first run's estimate said 55 minutes for a 3-minute job.
SETTLED_SHARE, SETTLED_S = 0.05, 10.0


class StepReporter:
    """``progress`` of one run's training (see ``recsim_ft.train.Progress``) that passes
    ``(key, steps_done, steps_total)`` to ``send``: at the start, at the end, and in between at
    most every ``REPORT_INTERVAL_S`` seconds. Picklable when ``send`` is (a queue's ``put``)."""

    def __init__(self, send: Callable[[tuple[int, int, int]], Any], key: int) -> None:
        self.send, self.key, self.last_sent = send, key, None

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        if self.last_sent is None or step == total or now - self.last_sent >= REPORT_INTERVAL_S:
            self.send((self.key, step, total))
            self.last_sent = now


class SweepProgress:
    """The bars of a sweep over ``specs`` (the pending runs, keyed by their index); a context
    manager that closes them. Disabled, it draws nothing and ``reporter`` returns ``False``."""

    def __init__(self, specs: Sequence[RunSpec], enabled: bool = True) -> None:
        self.specs, self.enabled = list(specs), enabled
        # steps each run will take in this sweep; corrected by its first report (a run continued
        # from a checkpoint has fewer left, a run on a data file has as many as the file allows)
        self.expected = [spec.train_steps() for spec in self.specs]
        self.counted = [0] * len(self.specs)
        self.first_step: dict[int, int] = {}
        self.run_bars: dict[int, Any] = {}
        self.finished: set[int] = set()
        self.steps = tqdm(
            total=sum(self.expected),
            desc=self._description(),
            unit="step",
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            postfix="estimating the time left",
            disable=not enabled,
        )
        self.first_step_time: float | None = None

    def _description(self) -> str:
        return f"runs {len(self.finished)}/{len(self.specs)} done, training steps"

    def reporter(self, key: int) -> Callable[[int, int], None] | bool:
        """The ``progress`` argument of run ``key`` when it trains in this process."""
        return (lambda step, total: self.update(key, step, total)) if self.enabled else False

    def update(self, key: int, step: int, total: int) -> None:
        """Run ``key`` has done ``step`` of its ``total`` training steps."""
        if key in self.finished:  # a report that arrived after the run's result
            return
        if key not in self.first_step:
            self.first_step[key] = step
            self.steps.total += (total - step) - self.expected[key]
            self.expected[key] = total - step
            self.run_bars[key] = tqdm(
                total=total,
                initial=step,
                desc=f"  {self.specs[key].relative_dir()}",
                unit="step",
                leave=False,
                disable=not self.enabled,
            )
        bar = self.run_bars[key]
        bar.update(step - bar.n)
        self._count(key, step - self.first_step[key])

    def finish(self, key: int, status: str) -> None:
        """Run ``key`` ended with ``status`` (``done`` or ``failed``): its bar goes, and the steps
        it will no longer take leave the total (failed) or count as done (finished)."""
        bar = self.run_bars.pop(key, None)
        if bar is not None:
            bar.close()
        if status == "failed":
            self.steps.total -= self.expected[key] - self.counted[key]
            self.expected[key] = self.counted[key]
        else:
            self._count(key, self.expected[key])
        self.finished.add(key)
        self.steps.set_description(self._description(), refresh=False)
        self.steps.refresh()

    def _count(self, key: int, steps: int) -> None:
        if self.first_step_time is None and steps > self.counted[key]:
            self.first_step_time = time.monotonic()
        self.steps.update(steps - self.counted[key])
        self.counted[key] = steps
        self.steps.set_postfix_str(self._time_left(), refresh=False)

    def _time_left(self) -> str:
        """The time left at the step rate since the first step (the start-up before it, imports,
        data and kernels, is no rate of training), once it has settled: a share
        ``SETTLED_SHARE`` of the steps done and ``SETTLED_S`` seconds of training."""
        done, total = self.steps.n, self.steps.total or 0
        trained = time.monotonic() - self.first_step_time if self.first_step_time else 0.0
        if done < SETTLED_SHARE * total or trained < SETTLED_S or done >= total:
            return "estimating the time left" if done < total else ""
        left = (total - done) * trained / done
        return f"about {tqdm.format_interval(left)} left"

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for bar in self.run_bars.values():
            bar.close()
        self.steps.close()
