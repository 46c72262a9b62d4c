"""The process's peak resident memory over a stretch of work, from the kernel's high-water mark
(Linux: ``VmHWM`` in ``/proc/self/status``, restarted through ``/proc/self/clear_refs``);
elsewhere NaN, so a report still prints."""

from __future__ import annotations

import math
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
