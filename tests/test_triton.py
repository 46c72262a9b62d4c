"""The Triton kernels of the Mamba block agree with the float64 reference block, in values and
every gradient; on a GPU when there is one, else through Triton's interpreter on CPU (see
conftest.py), so CI proves them correct without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recsim_ft.models import MambaBlock
from recsim_ft.models.mamba import kernel_path

# (d_model, expand, d_state, dt_rank, d_conv, L, batch): the paper's block at Spotify's 21 tokens;
# L = 1; odd widths (d_inner 37, d_state 5, rank 3); batch 1; several chunks (L 70 > 2 x 32)
SHAPES = [
    (32, 2, 16, 8, 16, 21, 3),
    (16, 2, 16, None, 4, 1, 2),
    (37, 1, 5, 3, 3, 6, 1),
    (8, 2, 4, 2, 4, 70, 2),
]


def _perturbed_pair(d_model, expand, d_state, dt_rank, d_conv, device):
    """A float64 reference block on CPU and a float32 Triton block with the same weights, moved
    away from the initialisation's constants so that every parameter matters."""
    kwargs = dict(d_model=d_model, expand=expand, d_state=d_state, dt_rank=dt_rank, d_conv=d_conv)
    ref = MambaBlock(**kwargs, kernels="torch").double()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fast = MambaBlock(**kwargs, kernels="triton")
    fast.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    return ref, fast.to(device)


@pytest.mark.parametrize("d_model,expand,d_state,dt_rank,d_conv,L,batch", SHAPES)
def test_triton_block_matches_the_float64_reference(
    triton_device, d_model, expand, d_state, dt_rank, d_conv, L, batch
):
    torch.manual_seed(L)
    ref, fast = _perturbed_pair(d_model, expand, d_state, dt_rank, d_conv, triton_device)
    x = torch.randn(batch, L, d_model, dtype=torch.float64, requires_grad=True)
    x_fast = x.detach().float().to(triton_device).requires_grad_()
    out_ref, out_fast = ref(x), fast(x_fast)
    torch.testing.assert_close(out_fast.double().cpu(), out_ref, rtol=1e-4, atol=1e-5)
    upstream = torch.randn_like(out_ref)
    (out_ref * upstream).sum().backward()
    (out_fast * upstream.float().to(triton_device)).sum().backward()
    grads = [("input", x.grad, x_fast.grad)]
    grads += [
        (name, a.grad, b.grad)
        for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True)
    ]
    for name, expected, got in grads:
        scale = expected.abs().max().item() + 1
        torch.testing.assert_close(
            got.double().cpu(),
            expected,
            rtol=1e-4,
            atol=1e-4 * scale,
            msg=lambda m, name=name: f"{name}: {m}",
        )


def test_triton_block_is_deterministic(triton_device):
    """Batch sums go through partial buffers reduced in a fixed order (no atomics): the same
    inputs give bit-identical outputs and gradients."""
    torch.manual_seed(0)
    _, fast = _perturbed_pair(16, 2, 8, 2, 4, triton_device)
    x = torch.randn(4, 9, 16, device=triton_device)
    runs = []
    for _ in range(2):
        fast.zero_grad()
        out = fast(x)
        out.square().sum().backward()
        runs.append([out.detach().clone()] + [p.grad.clone() for p in fast.parameters()])
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


def test_kernel_path_is_chosen_in_one_place_and_refuses_what_cannot_run(monkeypatch):
    x = torch.zeros(2, 3, 8)
    assert kernel_path(x.double()) == "torch"
    assert kernel_path(x, "torch") == "torch"
    monkeypatch.setenv("RECSIM_FT_KERNELS", "torch")
    assert kernel_path(x) == "torch"
    monkeypatch.delenv("RECSIM_FT_KERNELS")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="kernels='triton' needs float32 CUDA tensors"):
        kernel_path(x, "triton")
    with pytest.raises(RuntimeError, match="kernels='native' needs float32 CPU tensors"):
        kernel_path(x.double(), "native")
    with pytest.raises(ValueError, match="kernels must be one of"):
        MambaBlock(d_model=8, kernels="fast")


def test_kernels_compile_for_hopper(triton_device):
    """The interpreter never compiles: compile every launch for sm_90 as a GPU run would
    (paper shapes; odd widths over two chunks), so compiler-only errors fail CI too."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).parents[1] / "benchmarks" / "triton_compile.py"
    out = subprocess.run(
        [sys.executable, str(script), "--shapes", "21x256", "40x37"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == 10 and all("error" not in r for r in report.values())
