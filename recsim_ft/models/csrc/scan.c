/* The fused float32 CPU kernels of a Mamba block: the selective scan (forward, and a backward
   that recomputes the states chunk by chunk) and the depthwise causal conv. Built and loaded by
   recsim_ft/models/native_scan.py; the interface is in scan.h. */
#include "scan.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

/* Inlined even where the compiler would not: each call site is specialised to its block width. */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Every entry point runs with subnormals flushed to zero in its own threads, restoring their
   floating-point mode on the way out (the process keeps subnormals; see _CFLAGS in native_scan.py).
   Why: deep in a backward the gradients reach 1e-38, and on x86 each subnormal operand costs a
   microcode assist of ~100 cycles, enough to make a long backward an order of magnitude slower. x86
   only (MXCSR FTZ and DAZ bits); elsewhere a no-op. */
static inline unsigned flush_subnormals(void) {
#if defined(__SSE2__)
  unsigned mode = _mm_getcsr();
  _mm_setcsr(mode | 0x8040);
  return mode;
#else
  return 0;
#endif
}

static inline void restore_float_mode(unsigned mode) {
#if defined(__SSE2__)
  _mm_setcsr(mode);
#else
  (void)mode;
#endif
}

/* 2^y written so `omp simd` loops vectorise it (the decays exp(dt * A) = 2^(dt * A log2 e)):
   libm's exp2f stays a scalar call unless the whole library is built with -ffast-math, which we
   refuse (see _CFLAGS in native_scan.py). k = round(y), f = y - k in [-1/2, 1/2] (exact),
   2^f = 1 + f P(f) with Cephes' exp2f polynomial, times 2^k built in the exponent bits. Within
   1 ulp of exp2 over [-126, 127]; 0 below -127 (flushing what would be subnormal), inf from
   127.5, NaN stays NaN. The clamps are plain compares, so they vectorise (fminf / fmaxf do not). */
static inline float exp2_split(float k, float f) {
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
  union {
    int32_t i;
    float f;
  } scale;
  scale.i = (ki + 127) << 23;
  return p * scale.f;
}

static inline float vec_exp2f(float y) {
  y = y > 130.0f ? 130.0f : y;
  y = y < -130.0f ? -130.0f : y;
  float k = floorf(y + 0.5f);
  return exp2_split(k, y - k);
}

/* exp(x) = 2^(x log2 e) with the product carried to about 2^-48 (fma for its rounding error,
   plus the tail of log2 e), so large |x| loses no accuracy to it */
#define LOG2E 1.44269504088896341f
#define LOG2E_TAIL 1.925963033500011e-8f
static inline float vec_expf(float x) {
  x = x > 90.0f ? 90.0f : x;
  x = x < -90.0f ? -90.0f : x;
  float k = floorf(x * LOG2E + 0.5f);
  return exp2_split(k, fmaf(x, LOG2E, -k) + x * LOG2E_TAIL);
}

/* for the tests: y = 2^x elementwise */
void exp2_array(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = vec_exp2f(x[i]);
}

static inline float sigmoidf_(float x) { return 1.0f / (1.0f + vec_expf(-x)); }

/* softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1]: log1p(e) = 2 atanh(s) with
   s = e / (2 + e) in (0, 1/3], whose odd series to s^15 is within float precision and keeps
   the relative accuracy of tiny e (no 1 + e rounding). */
static inline float vec_softplusf(float x) {
  float e = vec_expf(x < 0.f ? x : -x);
  float s = e / (2.f + e), s2 = s * s;
  float p = 1.f / 15.f;
  p = p * s2 + 1.f / 13.f;
  p = p * s2 + 1.f / 11.f;
  p = p * s2 + 1.f / 9.f;
  p = p * s2 + 1.f / 7.f;
  p = p * s2 + 1.f / 5.f;
  p = p * s2 + 1.f / 3.f;
  p = p * s2 + 1.f;
  return (x > 0.f ? x : 0.f) + 2.f * s * p;
}

/* for the tests: y = softplus(x) elementwise */
void softplus_array(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = vec_softplusf(x[i]);
}

#define LN2 0.69314718055994531f
/* Channel-vectorised scan: every inner loop runs over a block of W channels (one or two
   vector registers), the state index n outside it, so nothing reduces across lanes per
   element. h is kept as (N, D): row n holds state n of every channel. */
#define W 16

ALWAYS_INLINE void fwd_block(const float* dtr, const float* ur, const float* AT, const float* Bv,
                             const float* Cv, const float* Dskip, const float* zr, float* h,
                             float* o, int64_t D, int64_t N, int64_t w) {
  float dtu[W], acc[W];
#pragma omp simd
  for (int64_t j = 0; j < w; j++) {
    dtu[j] = dtr[j] * ur[j];
    acc[j] = Dskip ? Dskip[j] * ur[j] : 0.f;
  }
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
    /* cache-line aligned: the slots below keep 64-byte alignment, so no vector load splits a
       line */
    scratch = aligned_alloc(64, ((floats * sizeof(float) + 63) / 64) * 64);
    scratch_floats = scratch ? floats : 0;
  }
  return scratch;
}

/* A (D, N) as (N, D) and times log2 e into AT, so the decays are exp2(dt * AT) */
static void transposed_log2(const float* A, float* AT, int64_t D, int64_t N) {
  for (int64_t d = 0; d < D; d++)
    for (int64_t n = 0; n < N; n++)
      AT[n * D + d] = (float)((double)A[d * N + n] * 1.4426950408889634);
}

/* The step sizes of one row, dt = softplus(delta + bias), into dt; or delta itself when there
   is neither bias nor softplus. Forward and backward both derive them, so none are kept. */
static inline const float* step_sizes(const Scan* s, int64_t row, float* dt) {
  const float* delta = s->delta + row;
  if (!s->bias && !s->softplus) return delta;
#pragma omp simd
  for (int64_t d = 0; d < s->D; d++) {
    float x = delta[d] + (s->bias ? s->bias[d] : 0.f);
    dt[d] = s->softplus ? vec_softplusf(x) : x;
  }
  return dt;
}

static void scan_forward_rows(const void* args, int64_t k, int64_t b0, int64_t b1) {
  const Scan* s = args;
  (void)k;
  int64_t D = s->D, N = s->N, Bt = s->Bt;
  float* AT = thread_scratch(2 * D * N + 96 + D);
  float* h = AT + D * N + 48; /* padded: see S in scan_backward_rows */
  float* dtrow = h + D * N + 48;
  transposed_log2(s->A, AT, D, N);
  for (int64_t b = b0; b < b1; b++) {
    memset(h, 0, D * N * sizeof(float));
    for (int64_t t = 0; t < s->L; t++) {
      int64_t r = t * Bt + b, row = r * D;
      const float* dtr = step_sizes(s, row, dtrow);
      const float* Bv = s->B + r * s->sBC;
      const float* Cv = s->C + r * s->sBC;
      const float* zr = s->z ? s->z + r * s->sz : NULL;
      for (int64_t d0 = 0; d0 < D; d0 += W) {
        int64_t w = D - d0 < W ? D - d0 : W;
        if (w == W)
          fwd_block(dtr + d0, s->u + row + d0, AT + d0, Bv, Cv, s->Dskip ? s->Dskip + d0 : NULL,
                    zr ? zr + d0 : NULL, h + d0, s->out + row + d0, D, N, W);
        else
          fwd_block(dtr + d0, s->u + row + d0, AT + d0, Bv, Cv, s->Dskip ? s->Dskip + d0 : NULL,
                    zr ? zr + d0 : NULL, h + d0, s->out + row + d0, D, N, w);
      }
      if (s->chunk_starts && (t + 1) % CHUNK_LEN == 0 && t + 1 < s->L)
        memcpy(s->chunk_starts + ((t / CHUNK_LEN) * Bt + b) * D * N, h, D * N * sizeof(float));
    }
  }
}

/* One (t, b) row of the states recomputation: cur = a * prev + dt u B, a = exp(dt A) kept,
   y = sum_n cur C (the scan output before the skip, for the gate's gradient). */
ALWAYS_INLINE void recompute_block(const float* dtr, const float* ur, const float* AT,
                                   const float* Bv, const float* Cv, const float* prev, float* cur,
                                   float* a, float* y, int64_t D, int64_t N, int64_t w) {
  float dtu[W], acc[W];
#pragma omp simd
  for (int64_t j = 0; j < w; j++) {
    dtu[j] = dtr[j] * ur[j];
    acc[j] = 0.f;
  }
  for (int64_t n = 0; n < N; n++) {
    float bn = Bv[n], cn = Cv[n];
#pragma omp simd
    for (int64_t j = 0; j < w; j++) {
      float av = vec_exp2f(dtr[j] * AT[n * D + j]);
      float hv = av * prev[n * D + j] + dtu[j] * bn;
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
ALWAYS_INLINE void adjoint_block(const float* dtr, const float* ur, const float* gyr,
                                 const float* AT, const float* Bv, const float* Cv,
                                 const float* restrict hcur, const float* restrict hprev,
                                 const float* restrict a, float* restrict G, float* restrict gA,
                                 float* restrict gBacc, float* restrict gCacc, float* restrict gdt,
                                 float* restrict gu, int64_t D, int64_t N, int64_t w) {
  float s_dt[W], s_g[W];
#pragma omp simd
  for (int64_t j = 0; j < w; j++) {
    s_dt[j] = 0.f;
    s_g[j] = 0.f;
  }
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
  for (int64_t j = 0; j < w; j++) {
    gdt[j] = s_dt[j] * LN2 + ur[j] * s_g[j];
    gu[j] = dtr[j] * s_g[j];
  }
}

/* recompute_block over a whole row, in blocks of W channels (the last one may be narrower) */
static void recompute_row(const float* dtr, const float* ur, const float* AT, const float* Bv,
                          const float* Cv, const float* prev, float* cur, float* a, float* y,
                          int64_t D, int64_t N) {
  for (int64_t d0 = 0; d0 < D; d0 += W) {
    if (D - d0 >= W)
      recompute_block(dtr + d0, ur + d0, AT + d0, Bv, Cv, prev + d0, cur + d0, a + d0, y + d0, D, N,
                      W);
    else
      recompute_block(dtr + d0, ur + d0, AT + d0, Bv, Cv, prev + d0, cur + d0, a + d0, y + d0, D, N,
                      D - d0);
  }
}

static void scan_backward_rows(const void* args, int64_t k, int64_t b0, int64_t b1) {
  const Scan* s = args;
  /* S: the stride of every (N, D) slot. DN alone is a multiple of 4 KiB (16 KiB at D 256, N
     16), so the slots the inner loop reads and writes together would share their L1 sets and
     stall on 4K aliasing; 3 cache lines of padding shift each one. */
  int64_t L = s->L, Bt = s->Bt, D = s->D, N = s->N;
  int64_t n_chunks = (L + CHUNK_LEN - 1) / CHUNK_LEN, DN = D * N, S = DN + 48;
  float* AT = thread_scratch((4 + 2 * CHUNK_LEN) * S + 2 * CHUNK_LEN * D + 2 * N * W + D);
  float* gAT = AT + S;
  float* G = gAT + S; /* dL/dh carried backwards */
  float* zero = G + S;
  float* buf = zero + S;               /* states of one chunk */
  float* abuf = buf + CHUNK_LEN * S;   /* decays exp(dt * A) of one chunk */
  float* ybuf = abuf + CHUNK_LEN * S;  /* scan outputs y of one chunk */
  float* dtbuf = ybuf + CHUNK_LEN * D; /* step sizes of one chunk */
  float* gBacc = dtbuf + CHUNK_LEN * D;
  float* gCacc = gBacc + N * W;
  float* gyrow = gCacc + N * W;
  float* gA = s->gA_parts + k * DN;
  float* gD = s->gD_parts ? s->gD_parts + k * D : NULL;
  float* gbias = s->gbias_parts ? s->gbias_parts + k * D : NULL;
  const float *u = s->u, *Dskip = s->Dskip;
  const float* dts[CHUNK_LEN]; /* the step sizes of each time step of the chunk */
  transposed_log2(s->A, AT, D, N);
  memset(gAT, 0, DN * sizeof(float));
  memset(zero, 0, DN * sizeof(float));
  for (int64_t b = b0; b < b1; b++) {
    /* the states entering each chunk, from the forward */
#define CHUNK_START(c) (s->chunk_starts + (((c) - 1) * Bt + b) * DN)
    memset(G, 0, DN * sizeof(float));
    for (int64_t c = n_chunks - 1; c >= 0; c--) {
      int64_t t0 = c * CHUNK_LEN, t1 = t0 + CHUNK_LEN < L ? t0 + CHUNK_LEN : L;
      for (int64_t t = t0; t < t1; t++) {
        int64_t r = t * Bt + b;
        const float* prev = t == t0 ? (t ? CHUNK_START(c) : zero) : buf + (t - t0 - 1) * S;
        dts[t - t0] = step_sizes(s, r * D, dtbuf + (t - t0) * D);
        recompute_row(dts[t - t0], u + r * D, AT, s->B + r * s->sBC, s->C + r * s->sBC, prev,
                      buf + (t - t0) * S, abuf + (t - t0) * S, ybuf + (t - t0) * D, D, N);
      }
      for (int64_t t = t1 - 1; t >= t0; t--) {
        int64_t r = t * Bt + b, row = r * D;
        const float* Bv = s->B + r * s->sBC;
        const float* Cv = s->C + r * s->sBC;
        const float* gout = s->gout + row;
        const float* hcur = buf + (t - t0) * S;
        const float* hprev = t > t0 ? buf + (t - t0 - 1) * S : (t ? CHUNK_START(c) : zero);
        const float* at = abuf + (t - t0) * S;
        const float* yt = ybuf + (t - t0) * D;
        const float* dt = dts[t - t0];
        /* gradient of y through out = (y + Dskip u) * silu(z) */
        if (s->z) {
          const float* zr = s->z + r * s->sz;
          float* gzr = s->gz + r * s->sz;
#pragma omp simd
          for (int64_t d = 0; d < D; d++) {
            float y = yt[d] + (Dskip ? Dskip[d] * u[row + d] : 0.f);
            float zv = zr[d], sz = sigmoidf_(zv), g = gout[d];
            gzr[d] = g * y * sz * (1.f + zv * (1.f - sz));
            gyrow[d] = g * zv * sz;
          }
        } else {
          memcpy(gyrow, gout, D * sizeof(float));
        }
        memset(gBacc, 0, N * W * sizeof(float));
        memset(gCacc, 0, N * W * sizeof(float));
        for (int64_t d0 = 0; d0 < D; d0 += W) {
          if (D - d0 >= W)
            adjoint_block(dt + d0, u + row + d0, gyrow + d0, AT + d0, Bv, Cv, hcur + d0, hprev + d0,
                          at + d0, G + d0, gAT + d0, gBacc, gCacc, s->gdt + row + d0,
                          s->gu + row + d0, D, N, W);
          else
            adjoint_block(dt + d0, u + row + d0, gyrow + d0, AT + d0, Bv, Cv, hcur + d0, hprev + d0,
                          at + d0, G + d0, gAT + d0, gBacc, gCacc, s->gdt + row + d0,
                          s->gu + row + d0, D, N, D - d0);
        }
        for (int64_t n = 0; n < N; n++) {
          float sb = 0.f, sc = 0.f;
          for (int64_t j = 0; j < W; j++) {
            sb += gBacc[n * W + j];
            sc += gCacc[n * W + j];
          }
          s->gB[r * s->sBC + n] = sb;
          s->gC[r * s->sBC + n] = sc;
        }
        float* gdt = s->gdt + row;
        if (s->softplus) { /* softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)) */
#pragma omp simd
          for (int64_t d = 0; d < D; d++) gdt[d] *= 1.f - vec_expf(-dt[d]);
        }
        if (gbias) {
#pragma omp simd
          for (int64_t d = 0; d < D; d++) gbias[d] += gdt[d];
        }
        if (Dskip) {
#pragma omp simd
          for (int64_t d = 0; d < D; d++) {
            s->gu[row + d] += gyrow[d] * Dskip[d];
            gD[d] += gyrow[d] * u[row + d];
          }
        }
      }
    }
  }
#undef CHUNK_START
  for (int64_t d = 0; d < D; d++)
    for (int64_t n = 0; n < N; n++) gA[d * N + n] += gAT[n * D + d];
}

/* The entry points split the batch rows into `threads` slices. Built with -fopenmp, the
   library shares torch's OpenMP runtime (the same libgomp.so.1, already loaded), so the slices
   run on torch's own worker threads: a second pool would fight them for the cores while they
   spin between torch's ops. Without OpenMP the slices run one after another. */
typedef void (*Rows)(const void* args, int64_t k, int64_t b0, int64_t b1);

static void over_slices(Rows rows, const void* args, int64_t Bt, int64_t threads) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int64_t k = 0; k < threads; k++) {
    unsigned mode = flush_subnormals();
    rows(args, k, Bt * k / threads, Bt * (k + 1) / threads);
    restore_float_mode(mode);
  }
}

void scan_forward(const Scan* s) { over_slices(scan_forward_rows, s, s->Bt, s->threads); }

void scan_backward(const Scan* s) { over_slices(scan_backward_rows, s, s->Bt, s->threads); }

/* out[j] = bias[j] + sum_s w_s[j] x_s[j] over `taps` taps for one block of w <= CW channels,
   summed in registers: accumulating in memory would chain every tap through a store and a
   reload. CW = 4 vector widths, so four independent sums hide the latency of each FMA. x0 is
   the row at t, `back` the distance to the row at t - 1, wT the transposed weight at this block. */
#define CW (4 * W)
ALWAYS_INLINE void conv_block(const float* x0, int64_t back, const float* wT, const float* bias,
                              int64_t taps, int64_t K, int64_t D, float* out, int64_t w) {
  float acc[CW];
#pragma omp simd
  for (int64_t j = 0; j < w; j++) acc[j] = bias ? bias[j] : 0.f;
  for (int64_t s = 0; s < taps; s++) {
    const float* xs = x0 - s * back;
    const float* ws = wT + (K - 1 - s) * D;
#pragma omp simd
    for (int64_t j = 0; j < w; j++) acc[j] += ws[j] * xs[j];
  }
#pragma omp simd
  for (int64_t j = 0; j < w; j++) out[j] = acc[j];
}

static void conv_forward_rows(const void* args, int64_t k, int64_t b0, int64_t b1) {
  const Conv* c = args;
  (void)k;
  int64_t D = c->D, K = c->K, back = c->Bt * c->sx;
  for (int64_t t = 0; t < c->L; t++)
    for (int64_t b = b0; b < b1; b++) {
      int64_t r = t * c->Bt + b, taps = t + 1 < K ? t + 1 : K;
      const float* x0 = c->x + r * c->sx;
      float* o = c->pre ? c->pre + r * D : c->out + r * D;
      for (int64_t d0 = 0; d0 < D; d0 += CW) {
        if (D - d0 >= CW)
          conv_block(x0 + d0, back, c->wT + d0, c->bias + d0, taps, K, D, o + d0, CW);
        else
          conv_block(x0 + d0, back, c->wT + d0, c->bias + d0, taps, K, D, o + d0, D - d0);
      }
      if (c->pre) {
        float* u = c->out + r * D;
#pragma omp simd
        for (int64_t d = 0; d < D; d++) u[d] = o[d] * sigmoidf_(o[d]);
      }
    }
}

/* The weight gradient of one block: gw_s[j] += gc_{t+s}[j] x_t[j] for the taps reaching forward */
ALWAYS_INLINE void conv_weight_grad_block(const float* gc0, const float* xt, float* gwT,
                                          int64_t taps, int64_t K, int64_t D, int64_t w) {
  for (int64_t s = 0; s < taps; s++) {
    const float* gcs = gc0 + s * D;
    float* gws = gwT + (K - 1 - s) * D;
#pragma omp simd
    for (int64_t j = 0; j < w; j++) gws[j] += gcs[j] * xt[j];
  }
}

static void conv_backward_rows(const void* args, int64_t k, int64_t b0, int64_t b1) {
  const Conv* c = args;
  int64_t L = c->L, Bt = c->Bt, D = c->D, K = c->K;
  float* gc = thread_scratch(L * D); /* gradient of the conv output, one batch row, (L, D) */
  float* gw = c->gwT_parts + k * K * D;
  float* gbias = c->gbias_parts + k * D;
  for (int64_t b = b0; b < b1; b++) {
    for (int64_t t = 0; t < L; t++) {
      int64_t r = t * Bt + b;
      const float* g = c->g + r * D;
      float* gct = gc + t * D;
      if (c->pre) { /* silu'(p) = sigmoid(p) (1 + p (1 - sigmoid(p))) */
        const float* p = c->pre + r * D;
#pragma omp simd
        for (int64_t d = 0; d < D; d++) {
          float sp = sigmoidf_(p[d]);
          gct[d] = g[d] * sp * (1.f + p[d] * (1.f - sp));
        }
      } else {
        memcpy(gct, g, D * sizeof(float));
      }
#pragma omp simd
      for (int64_t d = 0; d < D; d++) gbias[d] += gct[d];
    }
    /* x_t reaches out_{t+s} through tap K-1-s: gx_t = sum_s wT[K-1-s] gc_{t+s}, the forward's
       sum with time reversed (rows of gc are D apart, walking forward: back = -D) */
    for (int64_t t = 0; t < L; t++) {
      int64_t r = t * Bt + b, taps = L - t < K ? L - t : K;
      const float* xt = c->x + r * c->sx;
      float* gx = c->gx + r * c->sx;
      for (int64_t d0 = 0; d0 < D; d0 += CW) {
        if (D - d0 >= CW) {
          conv_block(gc + t * D + d0, -D, c->wT + d0, NULL, taps, K, D, gx + d0, CW);
          conv_weight_grad_block(gc + t * D + d0, xt + d0, gw + d0, taps, K, D, CW);
        } else {
          conv_block(gc + t * D + d0, -D, c->wT + d0, NULL, taps, K, D, gx + d0, D - d0);
          conv_weight_grad_block(gc + t * D + d0, xt + d0, gw + d0, taps, K, D, D - d0);
        }
      }
    }
  }
}

void conv_forward(const Conv* c) { over_slices(conv_forward_rows, c, c->Bt, c->threads); }

void conv_backward(const Conv* c) { over_slices(conv_backward_rows, c, c->Bt, c->threads); }

/* FIELD(T, f): the layout of field f of struct T */
#define FIELD(T, f) {#f, offsetof(T, f), sizeof(((T*)0)->f)}

static const FieldLayout scan_fields[] = {
    FIELD(Scan, u),
    FIELD(Scan, delta),
    FIELD(Scan, bias),
    FIELD(Scan, A),
    FIELD(Scan, B),
    FIELD(Scan, C),
    FIELD(Scan, Dskip),
    FIELD(Scan, z),
    FIELD(Scan, gout),
    FIELD(Scan, out),
    FIELD(Scan, gu),
    FIELD(Scan, gdt),
    FIELD(Scan, gz),
    FIELD(Scan, gA_parts),
    FIELD(Scan, gD_parts),
    FIELD(Scan, gbias_parts),
    FIELD(Scan, gB),
    FIELD(Scan, gC),
    FIELD(Scan, chunk_starts),
    FIELD(Scan, softplus),
    FIELD(Scan, L),
    FIELD(Scan, Bt),
    FIELD(Scan, D),
    FIELD(Scan, N),
    FIELD(Scan, sBC),
    FIELD(Scan, sz),
    FIELD(Scan, threads),
};

static const FieldLayout conv_fields[] = {
    FIELD(Conv, x),           FIELD(Conv, wT),  FIELD(Conv, bias),    FIELD(Conv, g),
    FIELD(Conv, pre),         FIELD(Conv, out), FIELD(Conv, gx),      FIELD(Conv, gwT_parts),
    FIELD(Conv, gbias_parts), FIELD(Conv, sx),  FIELD(Conv, L),       FIELD(Conv, Bt),
    FIELD(Conv, D),           FIELD(Conv, K),   FIELD(Conv, threads),
};

int64_t struct_layout(const char* name, int64_t* size, const FieldLayout** fields) {
  if (strcmp(name, "Scan") == 0) {
    *size = sizeof(Scan);
    *fields = scan_fields;
    return sizeof(scan_fields) / sizeof(scan_fields[0]);
  }
  if (strcmp(name, "Conv") == 0) {
    *size = sizeof(Conv);
    *fields = conv_fields;
    return sizeof(conv_fields) / sizeof(conv_fields[0]);
  }
  return -1;
}
