"""Sweeps: run many specs in-process, in a process pool, or as Ray tasks, reusing finished runs.

A run that fails leaves ``error.txt`` (its traceback) in its directory and does not stop the
sweep; a directory without ``DONE`` (a run killed midway) is run again, continuing from its
checkpoint.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Empty
from typing import Any

import torch

from recsim_ft.checks import check_choice, check_int
from recsim_ft.experiments.progress import StepReporter, SweepProgress
from recsim_ft.experiments.rundir import DONE_MARKER, ERROR_FILE, RunDir, finished, write_atomic
from recsim_ft.experiments.runs import run
from recsim_ft.experiments.specs import RunSpec
from recsim_ft.threads import default_threads
from recsim_ft.train import Progress

EXECUTORS = ("local", "ray")
#: Seconds between two looks at the progress queue while runs are under way.
_POLL_S = 0.2


@dataclass
class RunOutcome:
    """What happened to one run of a sweep: ``status`` is ``done``, ``reused`` or ``failed``."""

    spec: RunSpec
    run_dir: Path
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0


def run_safely(
    spec: RunSpec, run_dir: Path, threads: int | None = None, progress: Progress = False
) -> RunOutcome:
    """Run ``spec`` into ``run_dir``; an exception is saved to ``error.txt`` and returned, not
    raised (Ctrl-C is raised: the run has checkpointed its last step and continues next time).

    The sweep workers call this; ``threads``: torch's threads in this worker (None:
    ``recsim_ft.threads.default_threads``, one unless ``RECSIM_FT_THREADS`` says otherwise);
    ``progress`` receives the training steps (see ``recsim_ft.train.Progress``).
    """
    torch.set_num_threads(default_threads() if threads is None else threads)
    start = time.perf_counter()
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        # a directory without DONE but with a checkpoint is an interrupted run: continue it
        metrics = run(spec, run_dir, resume=True, keep_checkpoint=False, progress=progress)
    except Exception as err:  # one failing run must not stop the sweep
        write_atomic(run_dir / ERROR_FILE, traceback.format_exc())
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        return RunOutcome(
            spec, run_dir, "failed", error=message, seconds=time.perf_counter() - start
        )
    return RunOutcome(spec, run_dir, "done", metrics, seconds=time.perf_counter() - start)


#: Where a pool worker sends its runs' training progress (set once per worker process).
_progress_queue: Any = None


def _set_progress_queue(queue: Any) -> None:
    global _progress_queue
    _progress_queue = queue


def _run_in_worker(key: int, spec: RunSpec, run_dir: Path) -> RunOutcome:
    progress = StepReporter(_progress_queue.put, key) if _progress_queue is not None else False
    return run_safely(spec, run_dir, progress=progress)


def _ray_task(spec: RunSpec, key: int, queue: Any) -> tuple[RunOutcome, dict[str, bytes]]:
    """Run ``spec`` in a scratch directory on a Ray worker and return its files, so the driver
    writes the same result files whether or not the cluster shares a file system; the training
    progress goes to ``queue`` (a ``ray.util.queue.Queue``, or None)."""
    progress = StepReporter(queue.put, key) if queue is not None else False
    with tempfile.TemporaryDirectory() as scratch:
        outcome = run_safely(spec, Path(scratch), threads=1, progress=progress)
        files = {p.name: p.read_bytes() for p in Path(scratch).iterdir() if p.is_file()}
    return outcome, files


def _queued(queue: Any) -> list[tuple[int, int, int]]:
    """What a multiprocessing queue holds now."""
    items = []
    while True:
        try:
            items.append(queue.get_nowait())
        except Empty:
            return items


def _run_local(
    pending: list[tuple[RunSpec, Path]], jobs: int, bars: SweepProgress
) -> Iterator[tuple[int, RunOutcome]]:
    if jobs == 1:
        for key, (spec, run_dir) in enumerate(pending):
            yield key, run_safely(spec, run_dir, progress=bars.reporter(key))
        return
    # spawn, not fork: forking a process whose torch thread pools are running can deadlock;
    # the workers inherit RECSIM_FT_THREADS with the environment
    context = multiprocessing.get_context("spawn")
    queue = context.Queue() if bars.enabled else None
    pool = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_set_progress_queue, initargs=(queue,)
    )
    # the pool gets a run only when a worker is free: Ctrl-C reaches every worker too, each saves
    # the run it trains and stops, and no run queued in the pool starts after it
    to_start, running = iter(enumerate(pending)), {}
    try:
        while True:
            for key, (spec, run_dir) in itertools.islice(to_start, jobs - len(running)):
                running[pool.submit(_run_in_worker, key, spec, run_dir)] = key
            if not running:
                return
            done, _ = wait(running, timeout=_POLL_S, return_when=FIRST_COMPLETED)
            for report in _queued(queue) if queue is not None else ():
                bars.update(*report)
            for future in done:
                yield running.pop(future), future.result()
    finally:
        pool.shutdown(wait=True)


def _run_ray(
    pending: list[tuple[RunSpec, Path]], address: str | None, bars: SweepProgress
) -> Iterator[tuple[int, RunOutcome]]:
    try:  # Ray is the optional `ray` extra, imported only when a sweep asks for it
        import ray
        from ray.util.queue import Queue
    except ImportError as err:
        raise RuntimeError("--executor ray needs Ray: pip install 'recsim-ft[ray]'") from err
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    queue = Queue(actor_options={"num_cpus": 0}) if bars.enabled else None
    task = ray.remote(num_cpus=1)(_ray_task)
    keys = {task.remote(spec, key, queue): key for key, (spec, _) in enumerate(pending)}
    refs = list(keys)
    try:
        while refs:
            ready, refs = ray.wait(refs, num_returns=1, timeout=_POLL_S)
            for report in queue.get_nowait_batch(queue.qsize()) if queue is not None else ():
                bars.update(*report)
            for ref in ready:
                outcome, files = ray.get(ref)
                run_dir = pending[keys[ref]][1]
                for name in sorted(files, key=lambda n: n == DONE_MARKER):  # DONE last
                    write_atomic(run_dir / name, files[name])
                yield keys[ref], replace(outcome, run_dir=run_dir)
    finally:  # Ctrl-C or an error: the tasks still queued or running on the cluster stop
        for ref in refs:
            ray.cancel(ref)


def sweep(
    specs: Sequence[RunSpec],
    out: str | os.PathLike,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> list[RunOutcome]:
    """Run every spec into ``out/runs/<setting>/<agent>/seed<k>``, reusing finished runs.

    Failed runs are returned with their error (the traceback is in their ``error.txt``); the
    other runs are unaffected. Outcomes come back in the order of ``specs``. ``progress`` shows
    the training steps of the runs to do (see ``recsim_ft.experiments.progress``).
    """
    check_choice("executor", executor, EXECUTORS)
    check_int("jobs", jobs, low=1)
    counts = Counter(spec.relative_dir() for spec in specs)
    repeated = sorted(str(d) for d, n in counts.items() if n > 1)
    if repeated:  # it would be run once and counted twice, narrowing every interval
        raise ValueError(
            f"the sweep names the run {repeated[0]} more than once"
            + (f" (and {len(repeated) - 1} more)" if len(repeated) > 1 else "")
            + ": give each setting, agent, seed and learning rate once"
        )
    out = Path(out)
    outcomes, pending = [], []
    for spec in specs:
        run_dir = out / "runs" / spec.relative_dir()
        if finished(spec, run_dir):
            outcomes.append(RunOutcome(spec, run_dir, "reused", RunDir(run_dir).metrics()))
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            pending.append((spec, run_dir))
    with SweepProgress([spec for spec, _ in pending], progress and bool(pending)) as bars:
        if executor == "ray":
            results = _run_ray(pending, address, bars)
        else:
            results = _run_local(pending, jobs, bars)
        for key, outcome in results:
            bars.finish(key, outcome.status)
            outcomes.append(outcome)
    order = {spec: i for i, spec in enumerate(specs)}
    return sorted(outcomes, key=lambda o: order[o.spec])
