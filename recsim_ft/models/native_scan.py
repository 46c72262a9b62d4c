"""An optional fused C kernel for the float32 CPU selective scan, compiled on first use.

Why: in eager PyTorch the scan is a dozen passes over (L, batch, d_inner, d_state) tensors; here
each state lives in L1 cache for one step and the d_state loop vectorises (d_state 16 = one
AVX-512 register). The library is built with the system C compiler (no Python package, no
torch headers, under a second) into the user's cache directory; without a compiler, or with
``RECSIM_FT_NATIVE_SCAN=0``, :mod:`recsim_ft.models.scan` uses its pure-PyTorch path. The
backward recomputes states from checkpoints every ``CHECKPOINT`` steps, so nothing of size
L x d_inner x d_state is kept between forward and backward.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

CHECKPOINT = 32

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define CK @CHECKPOINT@

/* expf written so `omp simd` loops vectorise it (the decays exp(dt * A)): libm's expf stays a
   scalar call unless the whole library is built with -ffast-math, which we refuse (see
   _CFLAGS). Cody-Waite range reduction x = k ln2 + r, |r| <= ln2 / 2, then Cephes' degree-6
   polynomial for exp(r): within 1 ulp of expf over [-87, 88]; 0 below -87 (under FLT_MIN), inf above 88 (expf: 88.72). */
static inline float vec_expf(float x) {
  float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float k = floorf(xc * 1.44269504088896341f + 0.5f);
  float r = xc - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union { int32_t i; float f; } scale;
  scale.i = ((int32_t)k + 127) << 23;
  return x < -87.0f ? 0.0f : (x > 88.0f ? INFINITY : p * scale.f);
}

static inline float sigmoidf_(float x) { return 1.0f / (1.0f + vec_expf(-x)); }

/* The whole selective scan of one layer, time-major: u, dt, z, out: (L, Bt, D); A: (D, N);
   B, C: (L, Bt, N); Dskip: (D) or NULL; z NULL = no gate.
   out = (sum_n h_t C_t + Dskip u_t) * silu(z_t), h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t. */
void scan_forward(const float* u, const float* dt, const float* A, const float* B, const float* C,
                  const float* Dskip, const float* z, float* out,
                  int64_t L, int64_t Bt, int64_t D, int64_t N, int64_t b0, int64_t b1) {
  float* h = calloc(D * N, sizeof(float));
  for (int64_t b = b0; b < b1; b++) {
    memset(h, 0, D * N * sizeof(float));
    for (int64_t t = 0; t < L; t++) {
      const float* Bv = B + (t * Bt + b) * N;
      const float* Cv = C + (t * Bt + b) * N;
      int64_t row = (t * Bt + b) * D;
      for (int64_t d = 0; d < D; d++) {
        float dtv = dt[row + d], dtu = dtv * u[row + d], acc = 0.f;
        float* hd = h + d * N;
        const float* Ad = A + d * N;
#pragma omp simd reduction(+:acc)
        for (int64_t n = 0; n < N; n++) {
          hd[n] = vec_expf(dtv * Ad[n]) * hd[n] + dtu * Bv[n];
          acc += hd[n] * Cv[n];
        }
        out[row + d] = acc;
      }
      /* skip and gate in their own loops over d, so they vectorise */
      if (Dskip) {
#pragma omp simd
        for (int64_t d = 0; d < D; d++) out[row + d] += Dskip[d] * u[row + d];
      }
      if (z) {
#pragma omp simd
        for (int64_t d = 0; d < D; d++) out[row + d] *= z[row + d] * sigmoidf_(z[row + d]);
      }
    }
  }
  free(h);
}

/* Gradients of sum(out * gout) for batch rows [b0, b1) only, so threads can split the batch.
   Outputs gu, gdt, gz (L, Bt, D); gB, gC (L, Bt, N); gA (D, N) and gD (D) accumulated (one
   buffer per thread). softplus != 0: dt = softplus(raw) and gdt is the gradient of raw,
   using softplus'(raw) = sigmoid(raw) = 1 - exp(-dt). */
void scan_backward(const float* u, const float* dt, const float* A, const float* B, const float* C,
                   const float* Dskip, const float* z, const float* gout, float* gu, float* gdt, float* gz,
                   float* gA, float* gD, float* gB, float* gC, int64_t softplus,
                   int64_t L, int64_t Bt, int64_t D, int64_t N, int64_t b0, int64_t b1) {
  int64_t n_chunks = (L + CK - 1) / CK, DN = D * N;
  float* ckpt = calloc(n_chunks * DN, sizeof(float)); /* state before each chunk */
  float* buf = malloc(CK * DN * sizeof(float));        /* states of one chunk */
  float* abuf = malloc(CK * DN * sizeof(float));       /* decays exp(dt * A) of one chunk */
  float* G = malloc(DN * sizeof(float));               /* dL/dh carried backwards */
  float* gBt = malloc(N * sizeof(float));
  float* gCt = malloc(N * sizeof(float));
  float* zero = calloc(DN, sizeof(float));
  float* gyrow = malloc(D * sizeof(float));           /* gradient of y for one (t, b) row */
  for (int64_t b = b0; b < b1; b++) {
    /* forward pass up to the last chunk, keeping only the chunk-start states */
    memset(ckpt, 0, DN * sizeof(float));
    memset(buf, 0, DN * sizeof(float));
    for (int64_t t = 0; t < (n_chunks - 1) * CK; t++) {
      if (t % CK == 0 && t) memcpy(ckpt + (t / CK) * DN, buf, DN * sizeof(float));
      const float* Bv = B + (t * Bt + b) * N;
      for (int64_t d = 0; d < D; d++) {
        int64_t i = (t * Bt + b) * D + d;
        float dtv = dt[i], dtu = dtv * u[i];
        float* hd = buf + d * N;
        const float* Ad = A + d * N;
#pragma omp simd
        for (int64_t n = 0; n < N; n++) hd[n] = vec_expf(dtv * Ad[n]) * hd[n] + dtu * Bv[n];
      }
    }
    if (n_chunks > 1) memcpy(ckpt + (n_chunks - 1) * DN, buf, DN * sizeof(float));
    memset(G, 0, DN * sizeof(float));
    for (int64_t c = n_chunks - 1; c >= 0; c--) {
      int64_t t0 = c * CK, t1 = t0 + CK < L ? t0 + CK : L;
      /* recompute the chunk's states */
      for (int64_t t = t0; t < t1; t++) {
        const float* prev = t == t0 ? ckpt + c * DN : buf + (t - t0 - 1) * DN;
        float* cur = buf + (t - t0) * DN;
        const float* Bv = B + (t * Bt + b) * N;
        for (int64_t d = 0; d < D; d++) {
          int64_t i = (t * Bt + b) * D + d;
          float dtv = dt[i], dtu = dtv * u[i];
          const float* Ad = A + d * N;
#pragma omp simd
          for (int64_t n = 0; n < N; n++) {
            float a = vec_expf(dtv * Ad[n]);
            abuf[(t - t0) * DN + d * N + n] = a;
            cur[d * N + n] = a * prev[d * N + n] + dtu * Bv[n];
          }
        }
      }
      for (int64_t t = t1 - 1; t >= t0; t--) {
        const float* hcur = buf + (t - t0) * DN;
        const float* hprev = t > t0 ? buf + (t - t0 - 1) * DN : (t ? ckpt + c * DN : zero);
        const float* Bv = B + (t * Bt + b) * N;
        const float* Cv = C + (t * Bt + b) * N;
        memset(gBt, 0, N * sizeof(float));
        memset(gCt, 0, N * sizeof(float));
        int64_t row = (t * Bt + b) * D;
        /* gradient of the scan output y: through out = y * silu(z) (y recomputed from the state) */
        if (z) {
          for (int64_t d = 0; d < D; d++) {
            const float* hc = hcur + d * N;
            float y = 0.f;
#pragma omp simd reduction(+:y)
            for (int64_t n = 0; n < N; n++) y += hc[n] * Cv[n];
            gyrow[d] = y;
          }
#pragma omp simd
          for (int64_t d = 0; d < D; d++) {
            float y = gyrow[d] + (Dskip ? Dskip[d] * u[row + d] : 0.f);
            float zv = z[row + d], sz = sigmoidf_(zv), g = gout[row + d];
            gz[row + d] = g * y * sz * (1.f + zv * (1.f - sz));
            gyrow[d] = g * zv * sz;
          }
        } else {
          memcpy(gyrow, gout + row, D * sizeof(float));
        }
        if (Dskip) {
#pragma omp simd
          for (int64_t d = 0; d < D; d++) gD[d] += gyrow[d] * u[row + d];
        }
        for (int64_t d = 0; d < D; d++) {
          int64_t i = row + d;
          float dtv = dt[i], uv = u[i], dtu = dtv * uv, g_y = gyrow[d], s_dt = 0.f, s_u = 0.f;
          const float* Ad = A + d * N;
          const float* hc = hcur + d * N;
          const float* hp = hprev + d * N;
          const float* ad = abuf + (t - t0) * DN + d * N;
          float* Gd = G + d * N;
          float* gAd = gA + d * N;
#pragma omp simd reduction(+:s_dt, s_u)
          for (int64_t n = 0; n < N; n++) {
            float a = ad[n];
            float g = Gd[n] + g_y * Cv[n];
            gCt[n] += g_y * hc[n];
            gBt[n] += g * dtu;
            float gah = g * a * hp[n];
            s_dt += gah * Ad[n] + g * uv * Bv[n];
            s_u += g * dtv * Bv[n];
            gAd[n] += gah * dtv;
            Gd[n] = a * g;
          }
          gdt[i] = s_dt;
          gu[i] = s_u;
        }
        if (softplus) {
#pragma omp simd
          for (int64_t d = 0; d < D; d++) gdt[row + d] *= 1.f - vec_expf(-dt[row + d]);
        }
        if (Dskip) {
#pragma omp simd
          for (int64_t d = 0; d < D; d++) gu[row + d] += gyrow[d] * Dskip[d];
        }
        memcpy(gB + (t * Bt + b) * N, gBt, N * sizeof(float));
        memcpy(gC + (t * Bt + b) * N, gCt, N * sizeof(float));
      }
    }
  }
  free(ckpt); free(buf); free(abuf); free(G); free(gBt); free(gCt); free(zero); free(gyrow);
}

/* depthwise causal conv, time-major: x, out (L, Bt, D); wT (K, D) = weight transposed; bias (D) */
void conv_forward(const float* x, const float* wT, const float* bias, float* out,
                  int64_t L, int64_t Bt, int64_t D, int64_t K) {
  for (int64_t t = 0; t < L; t++)
    for (int64_t b = 0; b < Bt; b++) {
      float* o = out + (t * Bt + b) * D;
      for (int64_t d = 0; d < D; d++) o[d] = bias[d];
      for (int64_t s = 0; s < K && s <= t; s++) {
        const float* xs = x + ((t - s) * Bt + b) * D;
        const float* w = wT + (K - 1 - s) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; d++) o[d] += w[d] * xs[d];
      }
    }
}

/* g: (L, Bt, D) gradient of out; g_x (L, Bt, D) zeroed by the caller; g_wT (K, D) zeroed */
void conv_backward(const float* x, const float* wT, const float* g, float* g_x, float* g_wT,
                   int64_t L, int64_t Bt, int64_t D, int64_t K) {
  for (int64_t t = 0; t < L; t++)
    for (int64_t b = 0; b < Bt; b++) {
      const float* gt = g + (t * Bt + b) * D;
      for (int64_t s = 0; s < K && s <= t; s++) {
        const float* xs = x + ((t - s) * Bt + b) * D;
        float* gxs = g_x + ((t - s) * Bt + b) * D;
        const float* w = wT + (K - 1 - s) * D;
        float* gw = g_wT + (K - 1 - s) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; d++) {
          gxs[d] += w[d] * gt[d];
          gw[d] += gt[d] * xs[d];
        }
      }
    }
}
""".replace("@CHECKPOINT@", str(CHECKPOINT))


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "recsim_ft"


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.platform() + platform.processor()
    return next((line for line in lines if line.startswith(("flags", "Features"))), platform.processor())


#: Reassociation lets the d_state reductions vectorise. Never -ffast-math: a shared library
#: built with it switches the whole process to flush-subnormals-to-zero when it is loaded.
_CFLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
           "-fassociative-math", "-fopenmp-simd", "-shared", "-fPIC")


@lru_cache(maxsize=1)
def native_library() -> ctypes.CDLL | None:
    """The compiled kernel, building it on first use; None when disabled or not buildable."""
    if os.environ.get("RECSIM_FT_NATIVE_SCAN", "1") == "0":
        return None
    # -march=native code must not run on another CPU sharing this cache: key it by the CPU too
    digest = hashlib.sha256((_SOURCE + " ".join(_CFLAGS) + _cpu_signature()).encode()).hexdigest()[:16]
    lib_path = _cache_dir() / f"scan_{digest}.so"
    try:
        if not lib_path.exists():
            lib_path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                src, out = Path(tmp) / "scan.c", Path(tmp) / "scan.so"
                src.write_text(_SOURCE)
                cc = os.environ.get("CC", "cc")
                subprocess.run([cc, *_CFLAGS, str(src), "-o", str(out), "-lm"], check=True,
                               capture_output=True, timeout=120)
                os.replace(out, lib_path)  # atomic: concurrent first uses never see half a file
        lib = ctypes.CDLL(str(lib_path))
    except (OSError, subprocess.SubprocessError):
        return None
    for fn in (lib.scan_forward, lib.scan_backward, lib.conv_forward, lib.conv_backward):
        fn.restype = None
    return lib


def native_applies(*tensors: Tensor) -> bool:
    """Whether the kernel can take these tensors: float32 on CPU, and the library is built."""
    return (all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
            and native_library() is not None)


def _args(*tensors: Tensor) -> list:
    """Raw pointers for ctypes; the caller must keep every tensor alive during the call."""
    return [ctypes.c_void_p(t.data_ptr()) for t in tensors]


def _split_batch(run, batch: int) -> None:
    """Call ``run(k, b0, b1)`` on the k-th slice of the batch, in parallel threads when torch may
    use several (ctypes releases the GIL during the C call)."""
    n = max(1, min(torch.get_num_threads(), batch))
    bounds = [batch * k // n for k in range(n + 1)]
    if n == 1:
        run(0, 0, batch)
        return
    global _pool
    if _pool is None or _pool._max_workers < n:
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="recsim_ft_scan")
    list(_pool.map(run, range(n), bounds[:-1], bounds[1:]))


_pool: ThreadPoolExecutor | None = None


def _pointer(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def scan_forward(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                 z: Tensor | None) -> Tensor:
    """``(sum_n h_t C_t + D u_t) * silu(z_t)`` with ``h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t``;
    contiguous time-major input, ``D`` / ``z`` None to leave that part out."""
    L, b, d = u.shape
    out = torch.empty_like(u)
    args = [*_args(u, dt, A, B, C), _pointer(D), _pointer(z), _pointer(out)]
    sizes = tuple(map(ctypes.c_int64, (L, b, d, A.shape[1])))
    _split_batch(lambda k, b0, b1: native_library().scan_forward(*args, *sizes, ctypes.c_int64(b0),
                                                              ctypes.c_int64(b1)), b)
    return out


def scan_backward(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                  g_out: Tensor, softplus: bool):
    """Gradients (u, dt, A, B, C, D, z) of ``sum(scan_forward(...) * g_out)``; with ``softplus`` the
    dt gradient is that of ``raw`` where ``dt = softplus(raw)``. None for an absent D or z."""
    L, b, d = u.shape
    g_u, g_dt, g_B, g_C = torch.empty_like(u), torch.empty_like(u), torch.empty_like(B), torch.empty_like(C)
    g_z = torch.empty_like(u) if z is not None else None
    n_threads = max(1, min(torch.get_num_threads(), b))
    # one accumulator per thread: no write races
    g_A_parts, g_D_parts = torch.zeros(n_threads, *A.shape, dtype=A.dtype), torch.zeros(n_threads, d, dtype=u.dtype)
    head = [*_args(u, dt, A, B, C), _pointer(D), _pointer(z), *_args(g_out, g_u, g_dt), _pointer(g_z)]
    tail = [*_args(g_B, g_C), ctypes.c_int64(int(softplus)), *map(ctypes.c_int64, (L, b, d, A.shape[1]))]

    def run(k: int, b0: int, b1: int) -> None:
        native_library().scan_backward(*head, _pointer(g_A_parts[k]), _pointer(g_D_parts[k]), *tail,
                                       ctypes.c_int64(b0), ctypes.c_int64(b1))

    _split_batch(run, b)
    return g_u, g_dt, g_A_parts.sum(0), g_B, g_C, (g_D_parts.sum(0) if D is not None else None), g_z


def conv_forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Depthwise causal conv of contiguous time-major ``x`` (L, b, d) with ``weight`` (d, K)."""
    L, b, d = x.shape
    out, w_t = torch.empty_like(x), weight.t().contiguous()  # named: must outlive the C call
    native_library().conv_forward(*_args(x, w_t, bias, out),
                                  *map(ctypes.c_int64, (L, b, d, weight.shape[1])))
    return out


def conv_backward(x: Tensor, weight: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients (x, weight) of ``sum(conv_forward(x, weight, bias) * g)``."""
    L, b, d = x.shape
    g_x, g_wT = torch.zeros_like(x), torch.zeros(weight.shape[1], d, dtype=x.dtype)
    w_t = weight.t().contiguous()  # named: must outlive the C call
    native_library().conv_backward(*_args(x, w_t, g, g_x, g_wT),
                                   *map(ctypes.c_int64, (L, b, d, weight.shape[1])))
    return g_x, g_wT.t()
