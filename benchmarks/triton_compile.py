"""Compile the Triton kernels of the Mamba block for a GPU architecture without a GPU, and print
each kernel's registers, spills and shared memory at FT-Mamba's shapes.

    python benchmarks/triton_compile.py [--arch 90] [--shapes 21x256 6x256 4096x256 5x37]

Triton's interpreter (what the tests run on CPU) proves the kernels compute the right thing but
never compiles them; this compiles them exactly as a GPU run would (same tile choices, same
constexprs) down to a cubin, so errors only the compiler sees, and register spills, show up on
a machine with no GPU. Needs triton installed and ``TRITON_INTERPRET`` unset. Exit status 1 when
a kernel does not compile. Last line: one JSON object, kernel -> resource usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import triton
from triton.backends.compiler import GPUTarget

from recsim_ft.models import triton_mamba as tm


def launches(
    L: int, d_inner: int, d_state: int = 16, rank: int = 8, d_conv: int = 16, batch: int = 32
):
    """(name, kernel, constexprs, num_warps) of every launch of one block call at these shapes,
    with the tiles ``triton_mamba`` chooses for them."""
    shape = lambda *dims: SimpleNamespace(shape=dims)  # noqa: E731  (only shapes are read)
    s = tm._Shapes(
        shape(L, batch, 2 * d_inner),
        shape(d_inner, d_conv),
        shape(d_inner, rank),
        shape(d_inner, d_state),
    )
    scan = dict(R=s.R, N=s.N, RP=s.RP, NP=s.NP, CHUNK=tm.CHUNK, BLOCK_D=s.block_d)
    conv = dict(K=s.K, T=tm._CONV_T, BLOCK_C=s.block_c)
    return [
        ("conv_fwd", tm._conv_fwd_kernel, conv, 4),
        ("scan_fwd", tm._scan_fwd_kernel, dict(**scan, KEEP_STATES=s.n_chunks > 1), s.scan_warps),
        ("scan_bwd", tm._scan_bwd_kernel, scan, s.scan_warps),
        ("conv_bwd", tm._conv_bwd_kernel, conv, 4),
        ("conv_input_grad", tm._conv_input_grad_kernel, conv, 4),
    ]


def compile_kernel(kernel, constexprs: dict, num_warps: int, arch: int):
    signature = {
        name: "constexpr" if name in constexprs else ("*fp32" if name.endswith("_ptr") else "i32")
        for name in kernel.arg_names
    }
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(
        source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps}
    )


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, stack (spill) bytes and shared memory of a cubin, read by the cuobjdump that
    ships with triton (empty where it is missing)."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(
            [str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True
        ).stdout
    return {key.lower(): int(value) for key, value in re.findall(r"(REG|STACK|SHARED):(\d+)", out)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", type=int, default=90, help="compute capability, e.g. 90 for H100/H200"
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["21x256", "6x256", "4096x256", "5x37"],
        help="LxD_INNER pairs (d_state 16, rank 8, conv 16 unless D_INNER is not 256)",
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="batch size (it sets the scan's channel block)"
    )
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter compiles nothing")
    report, failed = {}, False
    print(f"triton {triton.__version__}, sm_{args.arch}")
    for pair in args.shapes:
        L, d_inner = map(int, pair.split("x"))
        small = {} if d_inner == 256 else dict(d_state=5, rank=3, d_conv=4)
        for name, kernel, constexprs, warps in launches(L, d_inner, batch=args.batch, **small):
            key = f"{name} L={L} d_inner={d_inner}"
            try:
                compiled = compile_kernel(kernel, constexprs, warps, args.arch)
            except Exception as err:  # the compiler's own errors, reported as they are
                failed = True
                report[key] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                print(f"{key:40s} FAILED: {report[key]['error']}")
                continue
            report[key] = {"warps": warps, **resource_usage(compiled.asm["cubin"])}
            print(f"{key:40s} " + "  ".join(f"{k} {v}" for k, v in report[key].items()), flush=True)
    print(json.dumps(report))
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
