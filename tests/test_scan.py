"""The fast selective scan and causal conv agree with plain references, in values and gradients."""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import require
from recsim_ft.models import native_scan
from recsim_ft.models.scan import (
    causal_conv1d_time_major,
    selective_scan,
    selective_scan_reference,
)


def scan_inputs(batch, d, n, L, seed, with_optional=True):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()

    inputs = {
        "u": rand(batch, d, L),
        "delta": rand(batch, d, L, scale=0.5),
        "A": (-torch.rand(d, n, generator=g, dtype=torch.float64) * 2).requires_grad_(),
        "B": rand(batch, n, L),
        "C": rand(batch, n, L),
    }
    if with_optional:
        inputs.update(D=rand(d), z=rand(batch, d, L), delta_bias=rand(d, scale=0.5))
    return inputs


@pytest.mark.parametrize(
    "batch,d,n,L,chunk_len",
    [
        (1, 1, 1, 1, 128),  # a single step
        (2, 3, 4, 1, 128),
        (3, 5, 2, 7, 128),
        (2, 4, 16, 21, 128),  # the Spotify user tower
        (2, 3, 4, 37, 8),  # several chunks, the last one partial
        (2, 3, 4, 300, 64),  # long sequence, recomputed chunks
    ],
)
@pytest.mark.parametrize("softplus", [True, False])
def test_fast_scan_matches_reference_values_and_gradients(batch, d, n, L, chunk_len, softplus):
    inputs = scan_inputs(batch, d, n, L, seed=L * 7 + d)
    fast = selective_scan(**inputs, delta_softplus=softplus, chunk_len=chunk_len)
    ref = selective_scan_reference(**inputs, delta_softplus=softplus)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(ref)
    names = list(inputs)
    fast_grads = torch.autograd.grad(fast, list(inputs.values()), upstream)
    ref_grads = torch.autograd.grad(ref, list(inputs.values()), upstream)
    for name, gf, gr in zip(names, fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(
            gf, gr, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"d/d{name}: {m}"
        )


def test_scan_without_optional_inputs():
    inputs = scan_inputs(2, 3, 4, 9, seed=1, with_optional=False)
    fast = selective_scan(**inputs, chunk_len=4)
    torch.testing.assert_close(fast, selective_scan_reference(**inputs), rtol=1e-10, atol=1e-10)
    assert all(g is not None for g in torch.autograd.grad(fast.sum(), list(inputs.values())))


@pytest.mark.parametrize("chunk_len", [2, 64])
def test_scan_gradcheck(chunk_len):
    inputs = scan_inputs(2, 2, 3, 5, seed=3)
    names = list(inputs)

    def fn(*args):
        return selective_scan(
            **dict(zip(names, args, strict=True)), delta_softplus=True, chunk_len=chunk_len
        )

    assert torch.autograd.gradcheck(fn, tuple(inputs.values()))


@pytest.mark.parametrize("L,K", [(1, 4), (3, 4), (21, 16), (2, 16), (40, 4)])
def test_causal_conv_matches_conv1d(L, K):
    g = torch.Generator().manual_seed(L + K)
    x = torch.randn(L, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, K, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    ours = causal_conv1d_time_major(x, w, b)
    ref = F.conv1d(x.permute(1, 2, 0), w.unsqueeze(1), b, padding=K - 1, groups=5)[..., :L].permute(
        2, 0, 1
    )
    torch.testing.assert_close(ours, ref)
    upstream = torch.randn_like(ref)
    for go, gr in zip(
        torch.autograd.grad(ours, (x, w, b), upstream),
        torch.autograd.grad(ref, (x, w, b), upstream),
        strict=True,
    ):
        torch.testing.assert_close(go, gr)
    assert torch.autograd.gradcheck(causal_conv1d_time_major, (x, w, b))


def test_scan_rejects_bad_shapes():
    inputs = scan_inputs(2, 3, 4, 5, seed=0)
    inputs["A"] = inputs["A"].detach()[0]
    with pytest.raises(ValueError, match="A"):
        selective_scan(**inputs)


@pytest.fixture
def fresh_load():
    """A first use of the kernel within the test (after its own monkeypatching), and another
    after it, with the real settings."""
    native_scan._load.cache_clear()
    yield
    native_scan._load.cache_clear()


def test_kernel_tests_fail_under_ci_and_skip_elsewhere_when_the_kernel_did_not_build(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not available under CI: `cc ...` exited"):
        require(False, "the C kernel", "`cc ...` exited with 1")
    with pytest.raises(pytest.skip.Exception):  # switched off on purpose
        require(False, "the C kernel", "disabled", chosen_off=True)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="`cc ...` exited with 1"):
        require(False, "the C kernel", "`cc ...` exited with 1")
    require(True, "the C kernel", "built")  # no exception


def _float32_scan_matches_reference():
    inputs = scan_inputs(2, 3, 4, 9, seed=2)
    single = {k: v.detach().float() for k, v in inputs.items()}
    out = selective_scan(**single, delta_softplus=True)
    ref = selective_scan_reference(**inputs, delta_softplus=True)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_without_a_compiler_the_pytorch_path_runs_after_one_warning(
    monkeypatch, tmp_path, fresh_load
):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RECSIM_FT_NATIVE_SCAN", raising=False)
    with pytest.warns(native_scan.NativeKernelWarning) as record:
        assert native_scan.native_library() is None
        _float32_scan_matches_reference()
        _float32_scan_matches_reference()
    ours = [w for w in record if issubclass(w.category, native_scan.NativeKernelWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "no-such-cc" in message and "pure-PyTorch path" in message
    assert "RECSIM_FT_NATIVE_SCAN=0" in message
    built, detail = native_scan.native_status()
    assert not built and "no-such-cc" in detail


@pytest.mark.usefixtures("native_kernel")
def test_a_compile_error_is_warned_with_the_command_and_the_compilers_message(
    monkeypatch, tmp_path, fresh_load
):
    """Here the sources are compiled without the -DCHUNK_LEN they require."""
    flags = tuple(f for f in native_scan._CFLAGS if not f.startswith("-DCHUNK_LEN"))
    monkeypatch.setattr(native_scan, "_CFLAGS", flags)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.warns(native_scan.NativeKernelWarning, match="compile with -DCHUNK_LEN") as record:
        assert native_scan.native_library() is None
    message = str(record[0].message)
    assert "scan.c" in message and "-O3" in message  # the command
    assert not list((tmp_path / "cache" / "recsim_ft").iterdir())  # no temporary file left


def test_disabled_kernel_takes_the_pytorch_path_without_a_warning(monkeypatch, fresh_load):
    monkeypatch.setenv("RECSIM_FT_NATIVE_SCAN", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native_scan.native_library() is None
        _float32_scan_matches_reference()
    assert native_scan.native_status() == (False, "disabled by RECSIM_FT_NATIVE_SCAN=0")


@pytest.mark.usefixtures("native_kernel")
def test_the_kernel_is_built_once_into_the_cache(monkeypatch, tmp_path, fresh_load):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built, path = native_scan.native_status()
    assert built and path.startswith(str(tmp_path))
    assert [p.name for p in (tmp_path / "recsim_ft").iterdir()] == [os.path.basename(path)]
    native_scan._load.cache_clear()

    def compile_again(flags, out):
        raise AssertionError("compiled a second time")

    monkeypatch.setattr(native_scan, "_compile", compile_again)
    assert native_scan.native_status() == (True, path)


_SCAN_FIELDS = native_scan._Scan._fields_
_CONV_FIELDS = native_scan._Conv._fields_


@pytest.mark.usefixtures("native_kernel")
@pytest.mark.parametrize(
    "c_name,fields,message",
    [
        (
            "Scan",
            [*_SCAN_FIELDS[:8], _SCAN_FIELDS[9], _SCAN_FIELDS[8], *_SCAN_FIELDS[10:]],
            "Scan in csrc/scan.h has field 'gout' at offset 64 .* has field 'out' at offset 64",
        ),
        ("Conv", _CONV_FIELDS[:-1], "field 'threads' at offset 112 .* has no field"),
        (
            "Conv",
            [(n, ctypes.c_int32 if n == "K" else t) for n, t in _CONV_FIELDS],
            r"field 'K' at offset 104 \(8 bytes\) .* field 'K' at offset 104 \(4 bytes\)",
        ),
        ("Nope", _CONV_FIELDS, "no struct Nope"),
    ],
)
def test_a_ctypes_mirror_unlike_its_c_struct_is_an_error_at_load(
    monkeypatch, fresh_load, c_name, fields, message
):
    wrong = type("_Wrong", (ctypes.Structure,), {"_fields_": fields})
    monkeypatch.setitem(native_scan._MIRRORS, c_name, wrong)
    with pytest.raises(RuntimeError, match=message):
        native_scan.native_library()


@pytest.mark.usefixtures("native_kernel")
def test_a_field_added_to_a_c_struct_alone_is_an_error_at_load(monkeypatch, tmp_path, fresh_load):
    """Added to ``Conv`` in scan.h, but neither to its layout table nor to its ctypes mirror."""
    sources = tmp_path / "csrc"
    shutil.copytree(native_scan._SOURCES, sources)
    header = (sources / "scan.h").read_text()
    last_field = "  int64_t sx, L, Bt, D, K, threads;\n"
    assert last_field in header
    (sources / "scan.h").write_text(header.replace(last_field, last_field + "  int64_t added;\n"))
    monkeypatch.setattr(native_scan, "_SOURCES", sources)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="struct Conv in csrc/scan.h has 128 bytes, .* 120"):
        native_scan.native_library()


@pytest.mark.usefixtures("native_kernel")
def test_the_kernel_compiles_without_warnings(tmp_path):
    """With -Werror added to each set of flags that the build tries and this compiler takes, so
    that CI catches a new warning (users' builds show none of them)."""
    strict = 0
    for flags in native_scan._flag_candidates():
        try:
            native_scan._compile((*flags, "-Werror"), tmp_path / "scan.so")
            strict += 1
        except native_scan._BuildError as error:
            try:
                native_scan._compile(flags, tmp_path / "scan.so")
            except native_scan._BuildError:
                continue  # an option this compiler lacks: the build skips these flags too
            pytest.fail(f"the C kernel compiles with warnings: {error}")
    assert strict


@pytest.mark.usefixtures("native_kernel")
@pytest.mark.parametrize(
    "batch,d,n,L", [(1, 1, 1, 1), (2, 3, 16, 21), (3, 4, 5, 2), (2, 3, 4, 100), (2, 37, 16, 70)]
)
def test_native_float32_kernel_matches_float64_reference(batch, d, n, L):
    """float32 CPU inputs take the fused C kernel (checkpoints every 32 steps, so L = 100 crosses
    three chunk borders; d = 37 is two full 16-channel blocks and a tail); values and all
    gradients agree with the float64 reference."""
    _assert_float32_kernel_matches_reference(scan_inputs(batch, d, n, L, seed=L + n), softplus=True)


def _assert_float32_kernel_matches_reference(inputs, softplus):
    """The float32 inputs take the C kernel; values and all gradients agree with float64."""
    single = {k: v.detach().float().requires_grad_() for k, v in inputs.items()}
    assert native_scan.native_applies(*single.values())
    fast = selective_scan(**single, delta_softplus=softplus)
    ref = selective_scan_reference(**inputs, delta_softplus=softplus)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-4, atol=1e-4)
    upstream = torch.randn_like(ref)
    fast_grads = torch.autograd.grad(fast, list(single.values()), upstream.float())
    ref_grads = torch.autograd.grad(ref, list(inputs.values()), upstream)
    for name, gf, gr in zip(inputs, fast_grads, ref_grads, strict=True):
        scale = gr.abs().max().item() + 1
        torch.testing.assert_close(
            gf.double(),
            gr,
            rtol=1e-4,
            atol=1e-4 * scale,
            msg=lambda m, name=name: f"d/d{name}: {m}",
        )


@pytest.mark.usefixtures("native_kernel")
@pytest.mark.parametrize("optional,softplus", [(False, True), (True, False), (False, False)])
def test_native_kernel_without_gate_skip_or_softplus(optional, softplus):
    """The C kernel fuses the D skip, the SiLU gate and the softplus derivative: each one off."""
    _assert_float32_kernel_matches_reference(
        scan_inputs(2, 3, 16, 21, seed=3, with_optional=optional), softplus
    )


@pytest.mark.usefixtures("native_kernel")
@pytest.mark.parametrize("L,K", [(1, 4), (2, 16), (21, 16), (40, 4)])
def test_native_float32_conv_matches_conv1d(L, K):
    g = torch.Generator().manual_seed(L * K)
    x, w, b = (
        torch.randn(L, 3, 5, generator=g),
        torch.randn(5, K, generator=g),
        torch.randn(5, generator=g),
    )
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    ours = causal_conv1d_time_major(x, w, b)
    ref = F.conv1d(x.permute(1, 2, 0), w.unsqueeze(1), b, padding=K - 1, groups=5)[..., :L].permute(
        2, 0, 1
    )
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(ref)
    for go, gr in zip(
        torch.autograd.grad(ours, (x, w, b), upstream),
        torch.autograd.grad(ref, (x, w, b), upstream),
        strict=True,
    ):
        torch.testing.assert_close(go, gr, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("native_kernel")
def test_native_kernel_gives_the_same_result_on_any_number_of_threads():
    """The batch is split across threads (3 rows over 2 threads: uneven slices)."""
    inputs = {k: v.detach().float() for k, v in scan_inputs(3, 4, 16, 40, seed=5).items()}
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            x = {k: v.clone().requires_grad_() for k, v in inputs.items()}
            out = selective_scan(**x, delta_softplus=True)
            results.append([out, *torch.autograd.grad(out.square().sum(), list(x.values()))])
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("native_kernel")
def test_native_exp2_is_within_one_ulp_and_saturates():
    """The kernel's own vectorised 2^x (every decay of the scan goes through it)."""
    x = torch.linspace(-126, 127, 2_000_001)
    ref = torch.exp2(x.double())
    ulp = torch.from_numpy(np.spacing(ref.float().numpy())).double()
    assert ((native_scan.exp2(x).double() - ref).abs() / ulp).max() <= 1.0
    edges = torch.tensor([-1e30, -200.0, 200.0, 1e30, float("-inf"), float("inf"), float("nan")])
    out = native_scan.exp2(edges)
    assert out[:6].tolist() == [0.0, 0.0, float("inf"), float("inf"), 0.0, float("inf")]
    assert out[6].isnan()


@pytest.mark.usefixtures("native_kernel")
def test_native_softplus_matches_torch():
    """The kernel computes the step sizes softplus(delta + bias) itself."""
    x = torch.linspace(-87, 100, 2_000_001)
    ref = F.softplus(x.double())
    assert ((native_scan.softplus(x).double() - ref).abs() / ref).max() < 5e-7
    edges = native_scan.softplus(torch.tensor([-1e30, float("-inf"), float("inf"), float("nan")]))
    assert edges[:3].tolist() == [0.0, 0.0, float("inf")] and edges[3].isnan()


@pytest.mark.usefixtures("native_kernel")
def test_portable_build_for_the_compilers_default_target_is_right(monkeypatch, fresh_load):
    """Where -march=native and -mcpu=native both fail, the kernel is built for the compiler's
    default target (here plain x86-64: SSE2, no AVX): same results."""
    monkeypatch.setattr(native_scan, "_TARGET_FLAGS", ((),))
    assert native_scan.native_library() is not None
    _assert_float32_kernel_matches_reference(scan_inputs(2, 20, 16, 40, seed=9), softplus=True)


@pytest.mark.usefixtures("native_kernel")
def test_native_backward_scales_with_tiny_upstream_gradients():
    """The kernel flushes subnormals inside its own threads (a backward full of them ran 25x
    slower): gradients of 1e-30 x the loss are still 1e-30 x the gradients of the loss."""
    inputs = {
        k: v.detach().float().requires_grad_()
        for k, v in scan_inputs(2, 20, 16, 40, seed=7).items()
    }
    out = selective_scan(**inputs, delta_softplus=True)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    normal = torch.autograd.grad(out, list(inputs.values()), upstream, retain_graph=True)
    tiny = torch.autograd.grad(out, list(inputs.values()), upstream * 1e-30)
    for name, g, t in zip(inputs, normal, tiny, strict=True):
        # what is flushed is below 1e-38, i.e. below 1e-8 of these gradients, term by term
        torch.testing.assert_close(
            t / 1e-30,
            g,
            rtol=1e-3,
            atol=1e-5 * (g.abs().max().item() + 1),
            msg=lambda m, name=name: f"d/d{name}: {m}",
        )


@pytest.mark.usefixtures("native_kernel")
def test_the_native_kernel_keeps_subnormal_floats_in_the_process():
    """A library built with -ffast-math would flush subnormals to zero in the whole process, and
    the kernel's own flushing must end with its call (it runs one scan first, here)."""
    inputs = {k: v.detach().float() for k, v in scan_inputs(1, 2, 4, 3, seed=0).items()}
    selective_scan(**inputs, delta_softplus=True)
    assert torch.tensor(1e-40, dtype=torch.float32) > 0  # a float32 subnormal survives
    assert float(torch.tensor(1e-40) * torch.tensor(0.5)) > 0.0
    smallest_normal = sys.float_info.min
    assert smallest_normal / 2 > 0.0
    assert float(torch.tensor(smallest_normal, dtype=torch.float64) / 2) > 0.0
