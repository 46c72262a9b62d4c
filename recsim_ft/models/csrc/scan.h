/* The interface of the fused CPU kernels behind recsim_ft.models.native_scan: the argument
   structs and the entry points its ctypes bindings call. native_scan.py mirrors Scan and Conv
   field by field and compares its mirror with struct_layout() when it loads the library, so a
   field changed here and not there is an error at load, never a call with misplaced arguments. */
#ifndef RECSIM_FT_SCAN_H
#define RECSIM_FT_SCAN_H

#include <stdint.h>

/* The scan's chunk length: the forward keeps the states entering every chunk of CHUNK_LEN
   steps and the backward recomputes the states of one chunk at a time from them. native_scan.py
   defines it on the compiler's command line, as it sizes the buffer of chunk starts. */
#ifndef CHUNK_LEN
#error "compile with -DCHUNK_LEN=<steps>, as recsim_ft/models/native_scan.py does"
#endif

/* Arguments of the scan kernels. Rows of (L, Bt, D) tensors are contiguous, D apart; the rows
   of B, C, gB, gC are sBC apart and those of z, gz sz apart, so B and C can be column slices of
   x_proj's output and z the second half of in_proj's, read and written in place.
   Forward: out = (sum_n h_t C_t + Dskip u_t) * silu(z_t), h_t = exp(dt_t A) h_{t-1} + dt_t u_t
   B_t, dt = softplus(delta + bias) (softplus, bias optional).
   Backward: gradients of sum(out * gout); gdt is that of delta; gA, gD, gbias are accumulated
   into parts (threads, ...), one per slice of the batch, so the slices never race.
   chunk_starts (L > CHUNK_LEN only): the states entering chunks 1, 2, ... of every batch row,
   ((L - 1) / CHUNK_LEN, Bt, N, D), written by the forward (where not NULL) for the backward,
   which recomputes the states of one chunk at a time from them. */
typedef struct {
  const float *u, *delta, *bias, *A, *B, *C, *Dskip, *z, *gout;
  float *out, *gu, *gdt, *gz, *gA_parts, *gD_parts, *gbias_parts, *gB, *gC, *chunk_starts;
  int64_t softplus, L, Bt, D, N, sBC, sz, threads;
} Scan;

/* Depthwise causal conv, time-major, out_t = bias + sum_s wT[K-1-s] x_{t-s}: x rows sx apart
   (so x can be the first half of in_proj's output), wT (K, D) the weight transposed, out and
   pre (L, Bt, D). With pre != NULL: pre = conv, out = silu(pre) (the block's activation).
   Backward: g (L, Bt, D) the gradient of out; gx (rows sx apart) written, gwT and gbias
   accumulated into parts (threads, ...), one per slice of the batch. */
typedef struct {
  const float *x, *wT, *bias, *g;
  float *pre, *out, *gx, *gwT_parts, *gbias_parts;
  int64_t sx, L, Bt, D, K, threads;
} Conv;

void scan_forward(const Scan* s);
void scan_backward(const Scan* s);
void conv_forward(const Conv* c);
void conv_backward(const Conv* c);

/* The kernels' own vectorised 2^x and softplus, elementwise over n floats (for the tests) */
void exp2_array(const float* x, float* y, int64_t n);
void softplus_array(const float* x, float* y, int64_t n);

/* One field of a struct as the compiler laid it out */
typedef struct {
  const char* name;
  int64_t offset, size;
} FieldLayout;

/* The layout of the struct called `name` ("Scan" or "Conv"): its size into *size and its
   fields, in declaration order, into *fields; returns the number of fields, or -1 for an
   unknown name. */
int64_t struct_layout(const char* name, int64_t* size, const FieldLayout** fields);

#endif
