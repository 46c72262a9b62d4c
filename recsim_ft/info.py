"""What this machine will run: ``recsim-ft info``.

Which compute path a Mamba block takes depends on the device, the dtype and what is installed
(see :func:`recsim_ft.models.mamba.kernel_path`); this report says it, and why a faster path is
not taken, before a user spends an hour training on the slow one.
"""

from __future__ import annotations

import os
import platform

import torch

from recsim_ft import __version__, cpu
from recsim_ft.models import native_scan
from recsim_ft.models.mamba import kernel_path, triton_status
from recsim_ft.models.scan import cuda_kernels_available
from recsim_ft.precision import resolve_precision


def _path_line(device: str, dtype: torch.dtype) -> str:
    try:
        path = kernel_path(torch.empty(0, device=device, dtype=dtype))
    except RuntimeError as err:  # RECSIM_FT_KERNELS asks for a path that cannot run here
        path = f"refused: {err}"
    return f"  {str(dtype).removeprefix('torch.')} on {device:<5} -> {path}"


def system_report() -> str:
    """A printable report: versions, threads, devices, and the Mamba block's path per device."""
    cuda = torch.cuda.is_available()
    units = ", ".join(cpu.bf16_units()) or "none (" + " / ".join(cpu.BF16_UNITS) + ")"
    lines = [
        f"recsim-ft {__version__}, Python {platform.python_version()}, torch {torch.__version__}",
        f"CPU: {cpu.cpu_model()}, {os.cpu_count()} cores, bf16 units: {units}; "
        f"torch threads {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
    ]
    for i in range(torch.cuda.device_count() if cuda else 0):
        p = torch.cuda.get_device_properties(i)
        lines.append(
            f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, "
            f"CUDA {torch.version.cuda}"
        )
    if not cuda:
        lines.append(
            f"GPU: none ({'CPU build of torch' if torch.version.cuda is None else 'no device'})"
        )
    built, detail = native_scan.native_status()
    usable, triton_detail = triton_status()
    mamba_ssm = "importable" if cuda_kernels_available() else "not installed (the cuda extra)"
    lines += [
        "kernels:",
        f"  native (C, CPU)   {'built: ' if built else 'not built: '}{detail}",
        f"  triton (GPU)      {triton_detail if usable else 'unusable: ' + triton_detail}",
        f"  mamba_ssm (GPU)   {mamba_ssm}",
        f"  RECSIM_FT_KERNELS {os.environ.get('RECSIM_FT_KERNELS', 'unset (auto)')}",
        "Mamba block path (see recsim_ft.models.mamba.kernel_path):",
    ]
    lines += [_path_line("cpu", dtype) for dtype in (torch.float32, torch.float64)]
    if cuda:
        lines += [_path_line("cuda", dtype) for dtype in (torch.float32, torch.bfloat16)]
    lines.append(
        "training precision --precision auto (see recsim_ft.precision; the default is fp32):"
    )
    for device in ["cpu"] + (["cuda"] if cuda else []):
        precision, why = resolve_precision("auto", torch.device(device))
        lines.append(f"  on {device:<5} -> {precision}: {why.removeprefix('auto: ')}")
    lines.append(
        "  bf16 runs the towers' matrix products in bfloat16; weights, Adam, losses and the "
        "Mamba scan stay float32"
    )
    return "\n".join(lines)
