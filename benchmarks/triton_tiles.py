"""Forward + backward time of the Triton Mamba block middle (``triton_mamba.mamba_inner``) under
several tile settings, at FT-Mamba's shapes, on a CUDA GPU: the evidence for the defaults.

    python benchmarks/triton_tiles.py [--shapes 21x32 21x2048 6x2048 4096x8]

Shapes are LxBATCH at the paper's block (d_inner 256, d_state 16, rank 8, conv 16). Each setting
is timed with ``triton.testing.do_bench`` (median ms); the first row is the module's defaults.
Last line: one JSON object, setting -> shape -> ms.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton.testing

from recsim_ft.models import triton_mamba as tm

#: (name, module constants): the scan's channels per program (smallest, largest) and the
#: programs it aims for; the backward's chunk; the conv's tile (steps, channels).
SETTINGS = [
    ("default", {}),
    ("scan 32-128 channels", {"_SCAN_BLOCK_D": (32, 128)}),
    ("scan 8-32 channels", {"_SCAN_BLOCK_D": (8, 32)}),
    ("scan aims 4096 programs", {"_TARGET_PROGRAMS": 4096}),
    ("chunk 16", {"CHUNK": 16}),
    ("conv 32x32", {"_CONV_T": 32, "_CONV_C": 32}),
]


def inputs(L: int, batch: int, d_inner: int = 256, n: int = 16, rank: int = 8, k: int = 16):
    g = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device="cuda", generator=g)).requires_grad_()

    return [
        rand(L, batch, 2 * d_inner),
        rand(d_inner, k, scale=0.3),
        rand(d_inner, scale=0.1),
        rand(rank + 2 * n, d_inner, scale=d_inner**-0.5),
        rand(d_inner, rank, scale=rank**-0.5),
        rand(d_inner, scale=0.5),
        rand(d_inner, n, scale=0.5),
        rand(d_inner),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["21x32", "21x2048", "6x2048", "4096x8"])
    args = parser.parse_args()
    defaults = {name: getattr(tm, name) for _, setting in SETTINGS for name in setting}
    report: dict[str, dict[str, float]] = {}
    for label, setting in SETTINGS:
        for name, value in {**defaults, **setting}.items():
            setattr(tm, name, value)
        report[label] = {}
        for shape in args.shapes:
            L, batch = map(int, shape.split("x"))
            args_ = inputs(L, batch)
            upstream = torch.randn(L, batch, 256, device="cuda")

            def step(args_=args_, upstream=upstream):
                out = tm.mamba_inner(*args_)
                torch.autograd.grad(out, args_, upstream)

            report[label][shape] = round(triton.testing.do_bench(step, warmup=10, rep=50), 4)
        print(
            f"{label:24s} " + "  ".join(f"{s} {ms} ms" for s, ms in report[label].items()),
            flush=True,
        )
    for name, value in defaults.items():
        setattr(tm, name, value)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
