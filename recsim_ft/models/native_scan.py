"""The fused float32 CPU kernels of a Mamba block (selective scan and causal conv), compiled
from ``csrc/scan.c`` on first use, and their ctypes bindings.

Why a C kernel: in eager PyTorch the scan is a dozen passes over (L, batch, d_inner, d_state)
tensors; here the states of one batch row live in L1 cache, and every inner loop runs over a
block of 16 channels (one AVX-512 register, two AVX2 ones), so no lane reduces across the
others. The forward keeps the states entering every chunk of ``CHUNK_LEN`` steps and the
backward recomputes the states of one chunk at a time, so what is kept grows as L / CHUNK_LEN x
d_inner x d_state per sequence, not L x d_inner x d_state.

The build: the system C compiler (``$CC``, else ``cc``; no Python package, no torch headers)
compiles the library in a few seconds into ``$XDG_CACHE_HOME/recsim_ft`` (else
``~/.cache/recsim_ft``), named by a hash of the sources, the compiler, the flags and the CPU, and
written atomically, so concurrent first uses and several machines sharing one home directory
are safe. Where it cannot be built, :mod:`recsim_ft.models.scan` runs its pure-PyTorch path,
slower, and a :class:`NativeKernelWarning` says why, once per process; ``RECSIM_FT_NATIVE_SCAN=0``
chooses that path without a warning. :func:`native_status` tells which path runs.

Why at first use rather than at install: the library is built for the CPU that runs it
(``-march=native``), which an install-time build cannot know when the environment is built on
one machine (a wheel, a container image, a cluster's login node) and used on another. Building
at first use also keeps the package pure Python, so ``pip install`` and ``pip install -e .``
need no compiler and never fail for the lack of one. The price, a few seconds once per machine
and CPU, is paid by the first Mamba block that runs in float32 on the CPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import warnings
from functools import lru_cache
from itertools import zip_longest
from pathlib import Path

import torch
from torch import Tensor

from recsim_ft.fileio import cache_root

#: The scan's chunk length: the forward keeps the states entering each chunk of this many steps
#: for the backward, which recomputes the states in between (``chunk_len`` in
#: :mod:`recsim_ft.models.scan`, compiled into the kernel).
CHUNK_LEN = 32
#: The former name of :data:`CHUNK_LEN`, kept for code that imports it.
CHECKPOINT = CHUNK_LEN

#: The C sources: ``scan.c`` and the header of the structs mirrored below, ``scan.h``.
_SOURCES = Path(__file__).with_name("csrc")


class NativeKernelWarning(RuntimeWarning):
    """The fused C kernel could not be built; the slower pure-PyTorch path runs instead."""


class _BuildError(Exception):
    """A compiler command that failed, with the end of what it reported."""


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.platform() + platform.processor()
    return next(
        (line for line in lines if line.startswith(("flags", "Features"))), platform.processor()
    )


#: No -ffast-math (a shared library built with it switches the whole process to
#: flush-subnormals-to-zero when it is loaded), and no -fassociative-math either: it would fold
#: the exact f = y - round(y) of vec_exp2f. The loops run over channels, so they vectorise as
#: written. -Wfatal-errors stops at the first error, so the end of the compiler's output that a
#: failed build reports is its cause.
_CFLAGS = (
    "-O3",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp-simd",
    "-shared",
    "-fPIC",
    "-Wall",
    "-Wextra",
    "-Wfatal-errors",
    f"-DCHUNK_LEN={CHUNK_LEN}",
)
#: Tried in this order: this CPU's vector units (gcc and x86 clang spell it -march, Apple's
#: arm64 clang -mcpu), then the compiler's default target.
_TARGET_FLAGS = (("-march=native",), ("-mcpu=native",), ())
#: Each target with OpenMP (the batch slices run on torch's threads: see over_slices in
#: csrc/scan.c), then without (they run one after another).
_OPENMP_FLAGS = (("-fopenmp",), ())
#: Lines of the compiler's error output that a failed build reports
_STDERR_LINES = 8


def _compiler() -> list[str]:
    """The C compiler command: ``$CC`` (which may carry arguments, as ``ccache gcc``), else cc."""
    return shlex.split(os.environ.get("CC", "cc"))


def _flag_candidates() -> list[tuple[str, ...]]:
    """The compiler flags to try, best first."""
    return [(*_CFLAGS, *target, *openmp) for target in _TARGET_FLAGS for openmp in _OPENMP_FLAGS]


def _compile(flags: tuple[str, ...], out: Path) -> None:
    """Compile the kernel with these flags into the library ``out``; raise :class:`_BuildError`
    naming the command and the end of its error output when that fails."""
    command = [*_compiler(), *flags, str(_SOURCES / "scan.c"), "-o", str(out), "-lm"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise _BuildError(f"`{shlex.join(command)}`: no program {command[0]!r}") from None
    except subprocess.TimeoutExpired:
        raise _BuildError(f"`{shlex.join(command)}` ran over 120 s") from None
    except subprocess.CalledProcessError as error:
        tail = "\n".join(error.stderr.strip().splitlines()[-_STDERR_LINES:])
        raise _BuildError(
            f"`{shlex.join(command)}` exited with {error.returncode}:\n{tail}"
        ) from None


def _build_library() -> Path:
    """The path of the kernel library, compiling it into the cache unless it is there.

    The first of :func:`_flag_candidates` that compiles is kept. The file is named by a hash of
    the sources, the compiler, the candidates and the CPU (``-march=native`` code must not run
    on another CPU sharing this cache), and written under a temporary name and renamed, so a
    concurrent first use never loads half a file. Raises :class:`_BuildError` for the last
    candidate when none compiles.
    """
    candidates = _flag_candidates()
    digest = hashlib.sha256()
    for source in sorted(_SOURCES.glob("*.[ch]")):
        digest.update(source.name.encode() + source.read_bytes())
    digest.update(repr((_compiler(), candidates, _cpu_signature())).encode())
    lib_path = cache_root() / f"scan_{digest.hexdigest()[:16]}.so"
    if lib_path.exists():
        return lib_path
    try:
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=lib_path.parent, prefix=".scan_", suffix=".so")
        os.close(fd)
    except OSError as error:
        raise _BuildError(f"no cache directory to build in: {error}") from None
    tmp = Path(tmp_name)
    try:
        for flags in candidates:
            try:
                _compile(flags, tmp)
            except _BuildError as error:
                failure = error
            else:
                os.replace(tmp, lib_path)
                return lib_path
        raise failure
    finally:
        tmp.unlink(missing_ok=True)


class _FieldLayout(ctypes.Structure):
    """The C struct ``FieldLayout``: one field of a struct as the compiler laid it out."""

    _fields_ = [("name", ctypes.c_char_p), ("offset", ctypes.c_int64), ("size", ctypes.c_int64)]


def _fields(pointers: str, integers: str) -> list[tuple[str, type]]:
    """ctypes ``_fields_``: the pointers, then the int64s, named in space-separated strings."""
    return [(name, ctypes.c_void_p) for name in pointers.split()] + [
        (name, ctypes.c_int64) for name in integers.split()
    ]


class _Scan(ctypes.Structure):
    """The C struct ``Scan`` (csrc/scan.h): tensors by pointer (None = absent), then sizes and
    flags."""

    _fields_ = _fields(
        "u delta bias A B C Dskip z gout out gu gdt gz gA_parts gD_parts gbias_parts gB gC "
        "chunk_starts",
        "softplus L Bt D N sBC sz threads",
    )


class _Conv(ctypes.Structure):
    """The C struct ``Conv`` (csrc/scan.h)."""

    _fields_ = _fields("x wT bias g pre out gx gwT_parts gbias_parts", "sx L Bt D K threads")


#: The ctypes mirrors by the name of the C struct they copy
_MIRRORS: dict[str, type[ctypes.Structure]] = {"Scan": _Scan, "Conv": _Conv}


def _check_layout(lib: ctypes.CDLL) -> None:
    """Raise RuntimeError unless every ctypes mirror has the fields of its C struct as the
    library was compiled: the same names in the same order at the same offsets and sizes."""
    lib.struct_layout.restype = ctypes.c_int64
    for c_name, mirror in _MIRRORS.items():
        size, table = ctypes.c_int64(), ctypes.POINTER(_FieldLayout)()
        count = lib.struct_layout(c_name.encode(), ctypes.byref(size), ctypes.byref(table))
        if count < 0:
            raise RuntimeError(f"the C kernel has no struct {c_name}")
        in_c = [(f.name.decode(), f.offset, f.size) for f in table[:count]]
        in_python = [
            (name, getattr(mirror, name).offset, getattr(mirror, name).size)
            for name, _ in mirror._fields_
        ]
        for c_field, py_field in zip_longest(in_c, in_python):
            if c_field != py_field:
                raise RuntimeError(
                    f"struct {c_name} in csrc/scan.h has {_describe(c_field)} where its ctypes "
                    f"mirror {mirror.__name__} in native_scan.py has {_describe(py_field)}"
                )
        if size.value != ctypes.sizeof(mirror):
            raise RuntimeError(
                f"struct {c_name} in csrc/scan.h has {size.value} bytes, its ctypes mirror "
                f"{mirror.__name__} in native_scan.py {ctypes.sizeof(mirror)}"
            )


def _describe(field: tuple[str, int, int] | None) -> str:
    if field is None:
        return "no field"
    name, offset, size = field
    return f"field {name!r} at offset {offset} ({size} bytes)"


#: The library's entry points that return nothing (ctypes would read an int)
_VOID_FUNCTIONS = "scan_forward scan_backward conv_forward conv_backward exp2_array softplus_array"


@lru_cache(maxsize=1)
def _load() -> tuple[ctypes.CDLL | None, str]:
    """The library and the path it was loaded from, or None and why not (warned once)."""
    if os.environ.get("RECSIM_FT_NATIVE_SCAN", "1") == "0":
        return None, "disabled by RECSIM_FT_NATIVE_SCAN=0"
    try:
        path = _build_library()
        lib = ctypes.CDLL(str(path))
    except (_BuildError, OSError) as error:
        warnings.warn(
            f"recsim-ft could not build or load its C kernel for the CPU Mamba block, so the "
            f"pure-PyTorch path runs instead, slower ({error}). Set RECSIM_FT_NATIVE_SCAN=0 to "
            f"choose that path without this warning.",
            NativeKernelWarning,
            stacklevel=2,
        )
        return None, str(error)
    _check_layout(lib)
    for name in _VOID_FUNCTIONS.split():
        getattr(lib, name).restype = None
    return lib, str(path)


def native_library() -> ctypes.CDLL | None:
    """The compiled kernel, building it on first use; None when disabled or not buildable."""
    return _load()[0]


def native_status() -> tuple[bool, str]:
    """Whether the kernel is built, with the path of its library, or else why not (the
    compiler command that failed and the end of its error output, or that it is disabled)."""
    lib, detail = _load()
    return lib is not None, detail


def native_applies(*tensors: Tensor) -> bool:
    """Whether the kernel can take these tensors: float32 on CPU, and the library is built."""
    return (
        all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
        and native_library() is not None
    )


def _struct(kind, **fields):
    """A ``_Scan`` / ``_Conv`` from tensors (their data pointers; the caller keeps them alive
    during the call), None and ints."""
    return kind(**{k: v.data_ptr() if isinstance(v, Tensor) else v for k, v in fields.items()})


def _threads(batch: int) -> int:
    """Slices of the batch for the kernel: torch's thread count, at most one row each."""
    return max(1, min(torch.get_num_threads(), batch))


def row_stride(t: Tensor) -> int | None:
    """For (L, b, n): the distance between consecutive rows ``l * b + i`` when every row is
    contiguous and they are evenly spaced (a column slice of a wider tensor is), else None."""
    L, b, n = t.shape
    s = t.stride(1) if b > 1 else (t.stride(0) if L > 1 else n)
    if (n > 1 and t.stride(2) != 1) or (L > 1 and b > 1 and t.stride(0) != b * s) or s < n:
        return None
    return s


def _rows(*tensors: Tensor) -> tuple[list[Tensor], int]:
    """The tensors with one common row stride (copied contiguous when they have none)."""
    strides = {row_stride(t) for t in tensors}
    if len(strides) == 1 and None not in strides:
        return list(tensors), strides.pop()
    return [t.contiguous() for t in tensors], tensors[0].shape[-1]


def scan_forward(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    bias: Tensor | None,
    softplus: bool,
    for_backward: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """``out = (sum_n h_t C_t + D u_t) * silu(z_t)``, ``h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t``,
    ``dt = softplus(delta + bias)`` (each part optional). ``u``, ``delta`` contiguous time-major;
    ``B``, ``C`` and ``z`` may be column slices of wider tensors. Returns (out, checkpoints):
    with ``for_backward`` and L > CHUNK_LEN, the states entering chunks 1, 2, ... of
    :data:`CHUNK_LEN` steps, which spare :func:`scan_backward` a second forward pass; else None."""
    L, b, d = u.shape
    n = A.shape[1]
    starts = torch.empty((L - 1) // CHUNK_LEN, b, n, d) if for_backward and L > CHUNK_LEN else None
    (B, C), sBC = _rows(B, C)
    sz = 0
    if z is not None:
        (z,), sz = _rows(z)
    out = torch.empty_like(u)
    args = _struct(
        _Scan,
        u=u,
        delta=delta,
        bias=bias,
        A=A,
        B=B,
        C=C,
        Dskip=D,
        z=z,
        out=out,
        chunk_starts=starts,
        softplus=int(softplus),
        L=L,
        Bt=b,
        D=d,
        N=n,
        sBC=sBC,
        sz=sz,
        threads=_threads(b),
    )
    native_library().scan_forward(ctypes.byref(args))
    return out, starts


def scan_backward(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    g_out: Tensor,
    bias: Tensor | None,
    softplus: bool,
    checkpoints: Tensor | None = None,
    g_B: Tensor | None = None,
    g_C: Tensor | None = None,
    g_z: Tensor | None = None,
):
    """Gradients (u, delta, A, B, C, D, z, bias) of ``sum(out * g_out)`` for :func:`scan_forward`
    given its inputs and ``checkpoints``; None for an absent D, z or bias. ``g_B``, ``g_C``,
    ``g_z``: where to write those gradients (views laid out like ``B``, ``C``, ``z``, e.g. column
    slices of one buffer)."""
    L, b, d = u.shape
    if L > CHUNK_LEN and checkpoints is None:
        raise ValueError(f"a scan of {L} > {CHUNK_LEN} steps needs the forward's checkpoints")
    (B, C), sBC = _rows(B, C)
    if g_B is None:
        g_B, g_C = (torch.empty_strided(t.shape, t.stride()) for t in (B, C))
    sz = 0
    if z is not None:
        (z,), sz = _rows(z)
        g_z = torch.empty_strided(z.shape, z.stride()) if g_z is None else g_z
    assert row_stride(g_B) == row_stride(g_C) == sBC and (z is None or row_stride(g_z) == sz)
    g_u, g_delta = torch.empty_like(u), torch.empty_like(u)
    n_threads = _threads(b)
    # one accumulator per slice of the batch: no write races
    g_A, g_D, g_bias = (
        torch.zeros(n_threads, *A.shape),
        torch.zeros(n_threads, d),
        torch.zeros(n_threads, d),
    )
    args = _struct(
        _Scan,
        u=u,
        delta=delta,
        bias=bias,
        A=A,
        B=B,
        C=C,
        Dskip=D,
        z=z,
        gout=g_out,
        chunk_starts=checkpoints,
        gu=g_u,
        gdt=g_delta,
        gz=g_z,
        gA_parts=g_A,
        gD_parts=g_D if D is not None else None,
        gbias_parts=g_bias if bias is not None else None,
        gB=g_B,
        gC=g_C,
        softplus=int(softplus),
        L=L,
        Bt=b,
        D=d,
        N=A.shape[1],
        sBC=sBC,
        sz=sz,
        threads=n_threads,
    )
    native_library().scan_backward(ctypes.byref(args))
    return (
        g_u,
        g_delta,
        g_A.sum(0),
        g_B,
        g_C,
        g_D.sum(0) if D is not None else None,
        g_z,
        g_bias.sum(0) if bias is not None else None,
    )


def _elementwise(name: str, x: Tensor) -> Tensor:
    out = torch.empty_like(x)
    getattr(native_library(), name)(
        ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(out.data_ptr()), ctypes.c_int64(x.numel())
    )
    return out


def exp2(x: Tensor) -> Tensor:
    """The kernel's own vectorised ``2 ** x`` on a contiguous float32 tensor (for the tests)."""
    return _elementwise("exp2_array", x)


def softplus(x: Tensor) -> Tensor:
    """The kernel's own vectorised softplus on a contiguous float32 tensor (for the tests)."""
    return _elementwise("softplus_array", x)


def conv_forward(
    x: Tensor, weight: Tensor, bias: Tensor, silu: bool
) -> tuple[Tensor, Tensor | None]:
    """Depthwise causal conv of time-major ``x`` (L, b, d; rows may be a column slice) with
    ``weight`` (d, K): ``(silu(conv), conv)`` with ``silu``, else ``(conv, None)``."""
    L, b, d = x.shape
    (x,), sx = _rows(x)
    out = torch.empty(L, b, d)
    pre = torch.empty(L, b, d) if silu else None
    w_t = weight.t().contiguous()  # named: must outlive the C call
    args = _struct(
        _Conv,
        x=x,
        wT=w_t,
        bias=bias,
        pre=pre,
        out=out,
        sx=sx,
        L=L,
        Bt=b,
        D=d,
        K=weight.shape[1],
        threads=_threads(b),
    )
    native_library().conv_forward(ctypes.byref(args))
    return out, pre


def conv_backward(
    x: Tensor, weight: Tensor, g: Tensor, pre: Tensor | None, g_x: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (x, weight, bias) of ``sum(conv_forward(x, weight, bias, silu)[0] * g)``, ``pre``
    the forward's pre-activation (None without SiLU); ``g_x``: where to write the x gradient
    (laid out like ``x``)."""
    L, b, d = x.shape
    (x,), sx = _rows(x)
    g_x = torch.empty_strided(x.shape, x.stride()) if g_x is None else g_x
    assert row_stride(g_x) == sx
    n_threads, K = _threads(b), weight.shape[1]
    g_w, g_bias = torch.zeros(n_threads, K, d), torch.zeros(n_threads, d)
    w_t = weight.t().contiguous()  # named: must outlive the C call
    args = _struct(
        _Conv,
        x=x,
        wT=w_t,
        g=g,
        pre=pre,
        gx=g_x,
        gwT_parts=g_w,
        gbias_parts=g_bias,
        sx=sx,
        L=L,
        Bt=b,
        D=d,
        K=K,
        threads=n_threads,
    )
    native_library().conv_backward(ctypes.byref(args))
    return g_x, g_w.sum(0).t(), g_bias.sum(0)
