"""What this CPU is and which matrix units it has: benchmarks print it beside every figure, and
the trainer's precision ``auto`` chooses bf16 only where the units make it faster."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

#: The /proc/cpuinfo flags of units that run bf16 products faster than fp32 ones: Intel's AMX
#: tiles and AVX-512 BF16 (Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later). Without
#: them bf16 products are converted and run slower than fp32 (4x on an Ice Lake core).
BF16_UNITS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The model name and the flags of the first CPU in /proc/cpuinfo (empty off Linux)."""
    path = Path("/proc/cpuinfo")
    try:
        first_cpu = path.read_text().split("\n\n", 1)[0]
    except OSError:
        return platform.processor() or "unknown CPU", frozenset()
    pairs = (line.split(":", 1) for line in first_cpu.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in pairs}
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    return name, frozenset(fields.get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    return _cpuinfo()[0]


def bf16_units() -> tuple[str, ...]:
    """Which of :data:`BF16_UNITS` this CPU has (none: bf16 would be slower than fp32 here)."""
    return tuple(flag for flag in BF16_UNITS if flag in _cpuinfo()[1])


def describe() -> str:
    """One line for benchmark output: model, cores and the bf16 units."""
    units = ", ".join(bf16_units()) or "no bf16 units"
    return f"{cpu_model()}, {os.cpu_count()} cores, {units}"
