"""The process's peak resident memory over a stretch of work, from the kernel's high-water mark
(Linux: ``VmHWM`` in ``/proc/self/status``, restarted through ``/proc/self/clear_refs``);
elsewhere NaN, so a report still prints."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak() -> None:
    """Restart the high-water mark at the current resident memory (where the kernel allows)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def peak_mib() -> float:
    """The peak resident memory since the last :func:`reset_peak` (or the start), MiB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


@contextmanager
def stage(name: str, record: dict[str, dict[str, float]] | None = None) -> Iterator[None]:
    """Time a stage of a long job and measure its peak memory: a line ``name: 12.3 s, peak
    2,345 MiB`` on stderr when it ends, and the figures in ``record[name]`` where given."""
    reset_peak()
    start = time.perf_counter()
    yield
    figures = {"s": round(time.perf_counter() - start, 1), "peak_mib": round(peak_mib())}
    if record is not None:
        record[name] = figures
    print(f"{name}: {figures['s']:,} s, peak {figures['peak_mib']:,} MiB", file=sys.stderr)


def machine_memory() -> float:
    """This machine's physical memory in bytes (NaN where the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.nan


def check_fits(what: str, needed: float, share: float = 0.5) -> None:
    """Refuse work whose arrays alone would take more than ``share`` of this machine's memory:
    it would be killed for memory (or stall the machine), not answered."""
    total = machine_memory()
    if needed > share * total:  # False where total is NaN
        raise ValueError(
            f"{what} needs about {needed / 2**30:,.1f} GiB, more than {share:.0%} of this "
            f"machine's {total / 2**30:,.0f} GiB; ask for fewer"
        )
