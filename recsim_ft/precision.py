"""Training precision: ``fp32``, ``bf16`` (matrix products in bfloat16 under autocast, master
weights, optimizer state and the Mamba scan in float32) or ``auto`` (bf16 only where it is faster).

bf16 pays only on hardware with bf16 matrix units: on a CPU with AMX or AVX512-BF16 a product
runs about 2x (AVX512-BF16) to 5x (AMX) faster than in fp32, on a CPU without them about 4x
slower (products converted element by element). ``auto`` therefore picks bf16 on such CPUs and on
CUDA devices that support it, fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from recsim_ft import cpu

PRECISIONS = ("fp32", "bf16", "auto")


def bf16_is_fast(device: torch.device) -> tuple[bool, str]:
    """Whether bf16 products are faster than fp32 ones on ``device``, and why (for messages)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name(device)} supports bf16"
        return False, f"{torch.cuda.get_device_name(device)} has no bf16 support"
    units = cpu.bf16_units()
    if units:
        return True, f"the CPU ({cpu.cpu_model()}) has {' and '.join(units)}"
    return False, (
        f"the CPU ({cpu.cpu_model()}) has neither {' nor '.join(cpu.BF16_UNITS)}, so bf16 "
        "products are converted and run slower than fp32 (about 4x on an Ice Lake core)"
    )


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """The precision a run on ``device`` uses for ``precision`` ("fp32" or "bf16") and why.
    ``"bf16"`` where it is slow is kept, with a warning that says so."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return precision, "asked for"
    fast, why = bf16_is_fast(device)
    if precision == "auto":
        return "bf16" if fast else "fp32", f"auto: {why}"
    if not fast:
        warnings.warn(f"precision='bf16' will train slower than fp32 here: {why}", stacklevel=3)
    return precision, "asked for"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in at a resolved ``precision``. On CUDA without autocast's
    cache of cast weights, which a captured CUDA graph would replay stale."""
    if precision == "bf16":
        return torch.autocast(
            device.type, dtype=torch.bfloat16, cache_enabled=device.type != "cuda"
        )
    return contextlib.nullcontext()
