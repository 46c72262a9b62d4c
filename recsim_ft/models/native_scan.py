"""An optional fused C kernel for the float32 CPU selective scan, compiled on first use.

Why: in eager PyTorch the scan is a dozen passes over (L, batch, d_inner, d_state) tensors; here
the states of one batch row live in L1 cache, and every inner loop runs over a block of 16
channels (one AVX-512 register, two AVX2 ones), so no lane reduces across the others. The library is built with the system C compiler (no Python package, no
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

/* 2^y written so `omp simd` loops vectorise it (the decays exp(dt * A) = 2^(dt * A log2 e)):
   libm's exp2f stays a scalar call unless the whole library is built with -ffast-math, which
   we refuse (see _CFLAGS). k = round(y), f = y - k in [-1/2, 1/2] (exact), 2^f = 1 + f P(f)
   with Cephes' exp2f polynomial, times 2^k built in the exponent bits. Within 1 ulp of exp2
   over [-126, 127]; 0 below -127 (flushing what would be subnormal), inf from 127.5, NaN stays
   NaN. The clamps are plain compares, so they vectorise (fminf / fmaxf do not). */
static inline float vec_exp2f(float y) {
  y = y > 130.0f ? 130.0f : y;
  y = y < -130.0f ? -130.0f : y;
  float k = floorf(y + 0.5f);
  float f = y - k;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  int32_t ki = (int32_t)k;
  ki = ki < -127 ? -127 : ki;
  ki = ki > 128 ? 128 : ki;
  union { int32_t i; float f; } scale;
  scale.i = (ki + 127) << 23;
  return p * scale.f;
}

#define LOG2E 1.44269504088896341f
static inline float vec_expf(float x) { return vec_exp2f(x * LOG2E); }

/* for the tests: y = 2^x elementwise */
void exp2_array(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = vec_exp2f(x[i]);
}

static inline float sigmoidf_(float x) { return 1.0f / (1.0f + vec_expf(-x)); }

#define LN2 0.69314718055994531f
/* Channel-vectorised scan: every inner loop runs over a block of W channels (one or two
   vector registers), the state index n outside it, so nothing reduces across lanes per
   element. h is kept as (N, D): row n holds state n of every channel. */
#define W 16

static inline __attribute__((always_inline)) void fwd_block(
    const float* dtr, const float* ur, const float* AT, const float* Bv, const float* Cv,
    const float* Dskip, const float* zr, float* h, float* o, int64_t D, int64_t N, int64_t w) {
  float dtu[W], acc[W];
#pragma omp simd
  for (int64_t j = 0; j < w; j++) { dtu[j] = dtr[j] * ur[j]; acc[j] = Dskip ? Dskip[j] * ur[j] : 0.f; }
  for (int64_t n = 0; n < N; n++) {
    float bn = Bv[n], cn = Cv[n];
    float* hn = h + n * D;
    const float* an = AT + n * D;
#pragma omp simd
    for (int64_t j = 0; j < w; j++) {
      float hv = vec_exp2f(dtr[j] * an[j]) * hn[j] + dtu[j] * bn;
      hn[j] = hv;
      acc[j] += hv * cn;
    }
  }
  if (zr) {
#pragma omp simd
    for (int64_t j = 0; j < w; j++) o[j] = acc[j] * zr[j] * sigmoidf_(zr[j]);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < w; j++) o[j] = acc[j];
  }
}

/* Scratch memory of the calling thread, kept between calls: a fresh malloc of this size is a
   fresh mmap each call, and its page faults serialise the threads on the kernel's mm lock. */
static __thread float* scratch = NULL;
static __thread int64_t scratch_floats = 0;

static float* thread_scratch(int64_t floats) {
  if (floats > scratch_floats) {
    free(scratch);
    /* cache-line aligned: the slots below keep 64-byte alignment, so no vector load splits a line */
    scratch = aligned_alloc(64, ((floats * sizeof(float) + 63) / 64) * 64);
    scratch_floats = scratch ? floats : 0;
  }
  return scratch;
}

/* A (D, N) as (N, D) and times log2 e into AT, so the decays are exp2(dt * AT) */
static void transposed_log2(const float* A, float* AT, int64_t D, int64_t N) {
  for (int64_t d = 0; d < D; d++)
    for (int64_t n = 0; n < N; n++) AT[n * D + d] = (float)((double)A[d * N + n] * 1.4426950408889634);
}

static void scan_forward_rows(const float* u, const float* dt, const float* A, const float* B, const float* C,
                  const float* Dskip, const float* z, float* out,
                  int64_t L, int64_t Bt, int64_t D, int64_t N, int64_t b0, int64_t b1) {
  float* AT = thread_scratch(2 * D * N + 48);
  float* h = AT + D * N + 48;  /* padded: see S in scan_backward_rows */
  transposed_log2(A, AT, D, N);
  for (int64_t b = b0; b < b1; b++) {
    memset(h, 0, D * N * sizeof(float));
    for (int64_t t = 0; t < L; t++) {
      int64_t row = (t * Bt + b) * D;
      const float* Bv = B + (t * Bt + b) * N;
      const float* Cv = C + (t * Bt + b) * N;
      int64_t d0 = 0;
      for (; d0 + W <= D; d0 += W)
        fwd_block(dt + row + d0, u + row + d0, AT + d0, Bv, Cv, Dskip ? Dskip + d0 : NULL,
                  z ? z + row + d0 : NULL, h + d0, out + row + d0, D, N, W);
      if (d0 < D)
        fwd_block(dt + row + d0, u + row + d0, AT + d0, Bv, Cv, Dskip ? Dskip + d0 : NULL,
                  z ? z + row + d0 : NULL, h + d0, out + row + d0, D, N, D - d0);
    }
  }
}

/* One (t, b) row of the states recomputation: cur = a * prev + dt u B, a = exp(dt A) kept,
   y = sum_n cur C (the scan output before the skip, for the gate's gradient). */
static inline __attribute__((always_inline)) void recompute_block(
    const float* dtr, const float* ur, const float* AT, const float* Bv, const float* Cv,
    const float* prev, float* cur, float* a, float* y, int64_t D, int64_t N, int64_t w) {
  float dtu[W], acc[W];
#pragma omp simd
  for (int64_t j = 0; j < w; j++) { dtu[j] = dtr[j] * ur[j]; acc[j] = 0.f; }
  for (int64_t n = 0; n < N; n++) {
    float bn = Bv[n], cn = Cv[n];
#pragma omp simd
    for (int64_t j = 0; j < w; j++) {
      float av = vec_exp2f(dtr[j] * AT[n * D + j]);
      float hv = av * (prev ? prev[n * D + j] : 0.f) + dtu[j] * bn;
      a[n * D + j] = av;
      cur[n * D + j] = hv;
      acc[j] += hv * cn;
    }
  }
#pragma omp simd
  for (int64_t j = 0; j < w; j++) y[j] = acc[j];
}

/* One (t, b) row of the adjoint: gy = dL/dy (after the gate), G = dL/dh_t from t + 1
   (updated to dL/dh_{t-1} a_t... i.e. a_t * g), gBacc / gCacc (N, W) lane-wise partial sums. */
static inline __attribute__((always_inline)) void adjoint_block(
    const float* dtr, const float* ur, const float* gyr, const float* AT, const float* Bv, const float* Cv,
    const float* restrict hcur, const float* restrict hprev, const float* restrict a, float* restrict G, float* restrict gA,
    float* restrict gBacc, float* restrict gCacc, float* restrict gdt, float* restrict gu, int64_t D, int64_t N, int64_t w) {
  float s_dt[W], s_g[W];
#pragma omp simd
  for (int64_t j = 0; j < w; j++) { s_dt[j] = 0.f; s_g[j] = 0.f; }
  for (int64_t n = 0; n < N; n++) {
    float bn = Bv[n], cn = Cv[n];
    float* gBn = gBacc + n * W;
    float* gCn = gCacc + n * W;
#pragma omp simd
    for (int64_t j = 0; j < w; j++) {
      int64_t k = n * D + j;
      float g = G[k] + gyr[j] * cn;
      float gah = g * a[k] * hprev[k];
      gCn[j] += gyr[j] * hcur[k];
      gBn[j] += g * dtr[j] * ur[j];
      s_dt[j] += gah * AT[k]; /* A log2 e: times ln 2 below */
      s_g[j] += g * bn;
      gA[k] += gah * dtr[j];
      G[k] = a[k] * g;
    }
  }
#pragma omp simd
  for (int64_t j = 0; j < w; j++) { gdt[j] = s_dt[j] * LN2 + ur[j] * s_g[j]; gu[j] = dtr[j] * s_g[j]; }
}

static void scan_backward_rows(const float* u, const float* dt, const float* A, const float* B, const float* C,
                   const float* Dskip, const float* z, const float* gout, float* gu, float* gdt, float* gz,
                   float* gA, float* gD, float* gB, float* gC, int64_t softplus,
                   int64_t L, int64_t Bt, int64_t D, int64_t N, int64_t b0, int64_t b1) {
  /* S: the stride of every (N, D) slot. DN alone is a multiple of 4 KiB (16 KiB at D 256, N
     16), so the slots the inner loop reads and writes together would share their L1 sets and
     stall on 4K aliasing; 3 cache lines of padding shift each one. */
  int64_t n_chunks = (L + CK - 1) / CK, DN = D * N, S = DN + 48;
  float* AT = thread_scratch((4 + n_chunks + 2 * CK) * S + CK * D + 2 * N * W + D);
  float* gAT = AT + S;
  float* G = gAT + S;                    /* dL/dh carried backwards */
  float* zero = G + S;
  float* ckpt = zero + S;                /* state before each chunk */
  float* buf = ckpt + n_chunks * S;      /* states of one chunk */
  float* abuf = buf + CK * S;            /* decays exp(dt * A) of one chunk */
  float* ybuf = abuf + CK * S;           /* scan outputs y of one chunk */
  float* gBacc = ybuf + CK * D;
  float* gCacc = gBacc + N * W;
  float* gyrow = gCacc + N * W;
  transposed_log2(A, AT, D, N);
  memset(gAT, 0, DN * sizeof(float));
  memset(zero, 0, DN * sizeof(float));
#define ROWS(t, w_)                                                                            \
  int64_t row = ((t) * Bt + b) * D;                                                            \
  const float* Bv = B + ((t) * Bt + b) * N;                                                    \
  const float* Cv = C + ((t) * Bt + b) * N;
  for (int64_t b = b0; b < b1; b++) {
    /* forward up to the last chunk, keeping the chunk-start states (the last chunk's slot 0 of
       buf doubles as scratch) */
    for (int64_t c = 1; c < n_chunks; c++) {
      for (int64_t t = (c - 1) * CK; t < c * CK; t++) {
        ROWS(t, W)
        const float* prev = t == 0 ? NULL : (t == (c - 1) * CK ? ckpt + (c - 1) * S : buf);
        float* cur = t == c * CK - 1 ? ckpt + c * S : buf;
        /* in place: prev == cur == buf is safe, each element read before written */
        int64_t d0 = 0;
        for (; d0 + W <= D; d0 += W)
          recompute_block(dt + row + d0, u + row + d0, AT + d0, Bv, Cv, prev ? prev + d0 : NULL,
                          cur + d0, abuf + d0, ybuf + d0, D, N, W);
        if (d0 < D)
          recompute_block(dt + row + d0, u + row + d0, AT + d0, Bv, Cv, prev ? prev + d0 : NULL,
                          cur + d0, abuf + d0, ybuf + d0, D, N, D - d0);
      }
    }
    memset(G, 0, DN * sizeof(float));
    for (int64_t c = n_chunks - 1; c >= 0; c--) {
      int64_t t0 = c * CK, t1 = t0 + CK < L ? t0 + CK : L;
      for (int64_t t = t0; t < t1; t++) {
        ROWS(t, W)
        const float* prev = t == t0 ? (t ? ckpt + c * S : NULL) : buf + (t - t0 - 1) * S;
        float* cur = buf + (t - t0) * S;
        float* at = abuf + (t - t0) * S;
        float* yt = ybuf + (t - t0) * D;
        int64_t d0 = 0;
        for (; d0 + W <= D; d0 += W)
          recompute_block(dt + row + d0, u + row + d0, AT + d0, Bv, Cv, prev ? prev + d0 : NULL,
                          cur + d0, at + d0, yt + d0, D, N, W);
        if (d0 < D)
          recompute_block(dt + row + d0, u + row + d0, AT + d0, Bv, Cv, prev ? prev + d0 : NULL,
                          cur + d0, at + d0, yt + d0, D, N, D - d0);
      }
      for (int64_t t = t1 - 1; t >= t0; t--) {
        ROWS(t, W)
        const float* hcur = buf + (t - t0) * S;
        const float* hprev = t > t0 ? buf + (t - t0 - 1) * S : (t ? ckpt + c * S : zero);
        const float* at = abuf + (t - t0) * S;
        const float* yt = ybuf + (t - t0) * D;
        /* gradient of y through out = (y + Dskip u) * silu(z) */
        if (z) {
#pragma omp simd
          for (int64_t d = 0; d < D; d++) {
            float y = yt[d] + (Dskip ? Dskip[d] * u[row + d] : 0.f);
            float zv = z[row + d], sz = sigmoidf_(zv), g = gout[row + d];
            gz[row + d] = g * y * sz * (1.f + zv * (1.f - sz));
            gyrow[d] = g * zv * sz;
          }
        } else {
          memcpy(gyrow, gout + row, D * sizeof(float));
        }
        memset(gBacc, 0, N * W * sizeof(float));
        memset(gCacc, 0, N * W * sizeof(float));
        int64_t d0 = 0;
        for (; d0 + W <= D; d0 += W)
          adjoint_block(dt + row + d0, u + row + d0, gyrow + d0, AT + d0, Bv, Cv, hcur + d0,
                        hprev + d0, at + d0, G + d0, gAT + d0, gBacc, gCacc,
                        gdt + row + d0, gu + row + d0, D, N, W);
        if (d0 < D)
          adjoint_block(dt + row + d0, u + row + d0, gyrow + d0, AT + d0, Bv, Cv, hcur + d0,
                        hprev + d0, at + d0, G + d0, gAT + d0, gBacc, gCacc,
                        gdt + row + d0, gu + row + d0, D, N, D - d0);
        for (int64_t n = 0; n < N; n++) {
          float sb = 0.f, sc = 0.f;
          for (int64_t j = 0; j < W; j++) { sb += gBacc[n * W + j]; sc += gCacc[n * W + j]; }
          gB[(t * Bt + b) * N + n] = sb;
          gC[(t * Bt + b) * N + n] = sc;
        }
        if (softplus) {
#pragma omp simd
          for (int64_t d = 0; d < D; d++) gdt[row + d] *= 1.f - vec_expf(-dt[row + d]);
        }
        if (Dskip) {
#pragma omp simd
          for (int64_t d = 0; d < D; d++) {
            gu[row + d] += gyrow[d] * Dskip[d];
            gD[d] += gyrow[d] * u[row + d];
          }
        }
      }
    }
  }
#undef ROWS
  for (int64_t d = 0; d < D; d++)
    for (int64_t n = 0; n < N; n++) gA[d * N + n] += gAT[n * D + d];
}

/* The entry points split the batch rows into `threads` slices. Built with -fopenmp, the
   library shares torch's OpenMP runtime (the same libgomp.so.1, already loaded), so the slices
   run on torch's own worker threads: a second pool would fight them for the cores while they
   spin between torch's ops. Without OpenMP the slices run one after another. */
void scan_forward(const float* u, const float* dt, const float* A, const float* B, const float* C,
                  const float* Dskip, const float* z, float* out,
                  int64_t L, int64_t Bt, int64_t D, int64_t N, int64_t threads) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int64_t k = 0; k < threads; k++)
    scan_forward_rows(u, dt, A, B, C, Dskip, z, out, L, Bt, D, N, Bt * k / threads, Bt * (k + 1) / threads);
}

/* gA_parts (threads, D, N) and gD_parts (threads, D), zeroed: one accumulator per slice */
void scan_backward(const float* u, const float* dt, const float* A, const float* B, const float* C,
                   const float* Dskip, const float* z, const float* gout, float* gu, float* gdt, float* gz,
                   float* gA_parts, float* gD_parts, float* gB, float* gC, int64_t softplus,
                   int64_t L, int64_t Bt, int64_t D, int64_t N, int64_t threads) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int64_t k = 0; k < threads; k++)
    scan_backward_rows(u, dt, A, B, C, Dskip, z, gout, gu, gdt, gz, gA_parts + k * D * N, gD_parts + k * D,
                       gB, gC, softplus, L, Bt, D, N, Bt * k / threads, Bt * (k + 1) / threads);
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


#: No -ffast-math (a shared library built with it switches the whole process to
#: flush-subnormals-to-zero when it is loaded), and no -fassociative-math either: it would fold
#: the exact f = y - round(y) of vec_exp2f. The loops run over channels, so they vectorise as written.
_CFLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared", "-fPIC")


def _build(flags: tuple[str, ...]) -> ctypes.CDLL:
    """Compile the kernel with these flags into the cache (once) and load it."""
    # -march=native code must not run on another CPU sharing this cache: key it by the CPU too
    digest = hashlib.sha256((_SOURCE + " ".join(flags) + _cpu_signature()).encode()).hexdigest()[:16]
    lib_path = _cache_dir() / f"scan_{digest}.so"
    if not lib_path.exists():
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "scan.c", Path(tmp) / "scan.so"
            src.write_text(_SOURCE)
            cc = os.environ.get("CC", "cc")
            subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"], check=True, capture_output=True,
                           timeout=120)
            os.replace(out, lib_path)  # atomic: concurrent first uses never see half a file
    return ctypes.CDLL(str(lib_path))


@lru_cache(maxsize=1)
def native_library() -> ctypes.CDLL | None:
    """The compiled kernel, building it on first use; None when disabled or not buildable.
    With OpenMP where the compiler has it (see scan_forward in the C source), else without."""
    if os.environ.get("RECSIM_FT_NATIVE_SCAN", "1") == "0":
        return None
    for flags in ((*_CFLAGS, "-fopenmp"), _CFLAGS):
        try:
            lib = _build(flags)
            break
        except (OSError, subprocess.SubprocessError):
            continue
    else:
        return None
    for fn in (lib.scan_forward, lib.scan_backward, lib.conv_forward, lib.conv_backward, lib.exp2_array):
        fn.restype = None
    return lib


def native_applies(*tensors: Tensor) -> bool:
    """Whether the kernel can take these tensors: float32 on CPU, and the library is built."""
    return (all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
            and native_library() is not None)


def _args(*tensors: Tensor) -> list:
    """Raw pointers for ctypes; the caller must keep every tensor alive during the call."""
    return [ctypes.c_void_p(t.data_ptr()) for t in tensors]


def _threads(batch: int) -> int:
    """Slices of the batch for the kernel: torch's thread count, at most one row each."""
    return max(1, min(torch.get_num_threads(), batch))


def _pointer(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def scan_forward(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                 z: Tensor | None) -> Tensor:
    """``(sum_n h_t C_t + D u_t) * silu(z_t)`` with ``h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t``;
    contiguous time-major input, ``D`` / ``z`` None to leave that part out."""
    L, b, d = u.shape
    out = torch.empty_like(u)
    native_library().scan_forward(*_args(u, dt, A, B, C), _pointer(D), _pointer(z), _pointer(out),
                                  *map(ctypes.c_int64, (L, b, d, A.shape[1], _threads(b))))
    return out


def scan_backward(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                  g_out: Tensor, softplus: bool):
    """Gradients (u, dt, A, B, C, D, z) of ``sum(scan_forward(...) * g_out)``; with ``softplus`` the
    dt gradient is that of ``raw`` where ``dt = softplus(raw)``. None for an absent D or z."""
    L, b, d = u.shape
    g_u, g_dt, g_B, g_C = torch.empty_like(u), torch.empty_like(u), torch.empty_like(B), torch.empty_like(C)
    g_z = torch.empty_like(u) if z is not None else None
    n_threads = _threads(b)
    # one accumulator per slice of the batch: no write races
    g_A_parts, g_D_parts = torch.zeros(n_threads, *A.shape, dtype=A.dtype), torch.zeros(n_threads, d, dtype=u.dtype)
    native_library().scan_backward(*_args(u, dt, A, B, C), _pointer(D), _pointer(z), *_args(g_out, g_u, g_dt),
                                   _pointer(g_z), *_args(g_A_parts, g_D_parts, g_B, g_C),
                                   *map(ctypes.c_int64, (int(softplus), L, b, d, A.shape[1], n_threads)))
    return g_u, g_dt, g_A_parts.sum(0), g_B, g_C, (g_D_parts.sum(0) if D is not None else None), g_z


def exp2(x: Tensor) -> Tensor:
    """The kernel's own vectorised ``2 ** x`` on a contiguous float32 tensor (for the tests)."""
    out = torch.empty_like(x)
    native_library().exp2_array(*_args(x, out), ctypes.c_int64(x.numel()))
    return out


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
