"""Sweeps: run many specs in-process, in a process pool, or as Ray tasks, reusing finished runs.

A run that fails leaves ``error.txt`` (its traceback) in its directory and does not stop the
sweep; a directory without ``DONE`` (a run killed midway) is run again, continuing from its
checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from recsim_ft.checks import check_choice, check_int
from recsim_ft.experiments.runs import (
    DONE_MARKER,
    ERROR_FILE,
    finished,
    read_metrics,
    run,
    write_atomic,
)
from recsim_ft.experiments.specs import RunSpec
from recsim_ft.threads import default_threads

EXECUTORS = ("local", "ray")


@dataclass
class RunOutcome:
    """What happened to one run of a sweep: ``status`` is ``done``, ``reused`` or ``failed``."""

    spec: RunSpec
    run_dir: Path
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0


def run_safely(spec: RunSpec, run_dir: Path, threads: int | None = None) -> RunOutcome:
    """Run ``spec`` into ``run_dir``; an exception is saved to ``error.txt`` and returned, not
    raised.

    The sweep workers call this; ``threads``: torch's threads in this worker (None:
    ``recsim_ft.threads.default_threads``, one unless ``RECSIM_FT_THREADS`` says otherwise).
    """
    torch.set_num_threads(default_threads() if threads is None else threads)
    start = time.perf_counter()
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        # a directory without DONE but with a checkpoint is an interrupted run: continue it
        metrics = run(spec, run_dir, resume=True, keep_checkpoint=False)
    except Exception as err:  # one failing run must not stop the sweep
        write_atomic(run_dir / ERROR_FILE, traceback.format_exc())
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        return RunOutcome(
            spec, run_dir, "failed", error=message, seconds=time.perf_counter() - start
        )
    return RunOutcome(spec, run_dir, "done", metrics, seconds=time.perf_counter() - start)


def _ray_task(spec: RunSpec) -> tuple[RunOutcome, dict[str, bytes]]:
    """Run ``spec`` in a scratch directory on a Ray worker and return its files, so the driver
    writes the same result files whether or not the cluster shares a file system."""
    with tempfile.TemporaryDirectory() as scratch:
        outcome = run_safely(spec, Path(scratch), threads=1)
        files = {p.name: p.read_bytes() for p in Path(scratch).iterdir() if p.is_file()}
    return outcome, files


def _run_local(pending: list[tuple[RunSpec, Path]], jobs: int) -> Iterator[RunOutcome]:
    if jobs == 1:
        for spec, run_dir in pending:
            yield run_safely(spec, run_dir)
        return
    # spawn, not fork: forking a process whose torch thread pools are running can deadlock;
    # the workers inherit RECSIM_FT_THREADS with the environment
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_safely, spec, run_dir) for spec, run_dir in pending]
        for future in as_completed(futures):
            yield future.result()


def _run_ray(pending: list[tuple[RunSpec, Path]], address: str | None) -> Iterator[RunOutcome]:
    try:  # Ray is the optional `ray` extra, imported only when a sweep asks for it
        import ray
    except ImportError as err:
        raise RuntimeError("--executor ray needs Ray: pip install 'recsim-ft[ray]'") from err
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    task = ray.remote(num_cpus=1)(_ray_task)
    run_dirs = {}
    for spec, run_dir in pending:
        run_dirs[task.remote(spec)] = run_dir
    refs = list(run_dirs)
    while refs:
        (ref,), refs = ray.wait(refs, num_returns=1)
        outcome, files = ray.get(ref)
        run_dir = run_dirs[ref]
        for name in sorted(files, key=lambda n: n == DONE_MARKER):  # DONE last
            write_atomic(run_dir / name, files[name])
        yield replace(outcome, run_dir=run_dir)


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
    other runs are unaffected. Outcomes come back in the order of ``specs``.
    """
    check_choice("executor", executor, EXECUTORS)
    check_int("jobs", jobs, low=1)
    out = Path(out)
    outcomes, pending = [], []
    for spec in specs:
        run_dir = out / "runs" / spec.relative_dir()
        if finished(spec, run_dir):
            outcomes.append(RunOutcome(spec, run_dir, "reused", read_metrics(run_dir)))
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            pending.append((spec, run_dir))
    results = _run_ray(pending, address) if executor == "ray" else _run_local(pending, jobs)
    bar = tqdm(
        results, total=len(pending), desc="runs", unit="run", disable=not progress or not pending
    )
    for outcome in bar:
        outcomes.append(outcome)
        bar.set_postfix_str(
            f"{outcome.spec.setting}/{outcome.spec.agent}/seed{outcome.spec.seed} {outcome.status}"
        )
    order = {spec: i for i, spec in enumerate(specs)}
    return sorted(outcomes, key=lambda o: order[o.spec])
