"""Triton kernels for the Mamba block on CUDA, built for FT-Mamba's shapes: short sequences (a
few dozen feature tokens) and large batches.

mamba_ssm's kernels are written for sequences of thousands of steps and waste the GPU at
L = 21; composed from PyTorch ops, the block is hundreds of small launches. Here everything of
the block between ``in_proj`` and ``out_proj`` is two kernels forward and three backward:

    conv_xproj   u = silu(causal_conv(x) + conv_bias);   x_dbl = u @ x_proj.T = (dt_low, B, C)
    scan         dt = softplus(dt_low @ dt_proj.T + dt_bias);  A = -exp(A_log)
                 h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t;   out_t = (h_t . C_t + D u_t) silu(z_t)

One program per (batch row, channel block) keeps its states in registers and runs the
recurrence over a chunk of up to ``MAX_CHUNK`` steps as a parallel associative scan; longer
sequences loop over chunks, and the forward keeps the state entering each chunk for the
backward (``L / MAX_CHUNK`` states per row, not ``L``). The backward runs the adjoint
recurrence as a reverse scan and recomputes the rest. Gradients that sum over the batch are
written as per-row (or per-program) partial sums and reduced by torch in a fixed order: no
atomics, so a run is bit-identical to the next with the same seed.

The layout is the CPU block's: time-major rows ``(t, b)``. This module imports triton; import
it only where triton is installed. Under ``TRITON_INTERPRET=1`` the same kernels run on CPU
tensors through Triton's interpreter, which is how the tests prove them correct without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

#: Longest stretch of time one program scans in registers; longer sequences loop over chunks.
MAX_CHUNK = 32
#: Elements of one (chunk, channels, states) register tile of the forward and backward scans
#: (the backward keeps about twice as many tiles live), and warps per program: chosen so that
#: ptxas fits both in the register file without spilling at d_state 16.
_SCAN_TILE_FWD, _SCAN_TILE_BWD, _SCAN_WARPS = 4096, 2048, 8
#: Programs the backward scan aims for, so that small batches still fill the GPU.
_TARGET_PROGRAMS = 512
#: Time steps per program of the conv kernels (tl.dot needs at least 16 rows).
_CONV_T = 16
#: Channels per inner block of the conv kernels, and their warps per program (no spills).
_CONV_C, _CONV_WARPS = 32, 8


# -- elementwise helpers ---------------------------------------------------------------------------
@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _softplus(x):
    # log(1 + e^x) rounds e^x away in float32 below -15, where softplus(x) = e^x to 1e-7
    return tl.where(x > 20.0, x, tl.where(x < -15.0, tl.exp(x), tl.log(1.0 + tl.exp(x))))


@triton.jit
def _linear_recurrence(a_left, b_left, a_right, b_right):
    """Composition of the steps h -> a h + b (left first): the scan's associative operator."""
    return a_left * a_right, b_left * a_right + b_right


# -- causal depthwise conv + SiLU + x_proj -----------------------------------------------------------
@triton.jit
def _conv_tile(xz_ptr, conv_w_ptr, conv_b_ptr, t, L, row_b, batch, d_inner, stride_xz, cols,
               K: tl.constexpr):
    """``conv_bias + sum_k w[:, k] x[t - (K - 1) + k]`` (zero before t = 0) of a (time, channel)
    tile, x read from the first d_inner columns of in_proj's output."""
    cmask = cols < d_inner
    bias = tl.load(conv_b_ptr + cols, mask=cmask, other=0.0)
    pre = tl.zeros([t.shape[0], cols.shape[0]], tl.float32) + bias[None, :]
    for k in tl.static_range(K):
        src = t - (K - 1) + k
        m = ((src >= 0) & (src < L))[:, None] & cmask[None, :]
        rows = src.to(tl.int64) * batch + row_b
        x = tl.load(xz_ptr + rows[:, None] * stride_xz + cols[None, :], mask=m, other=0.0)
        w = tl.load(conv_w_ptr + cols * K + k, mask=cmask, other=0.0)
        pre += x * w[None, :]
    return pre


@triton.jit
def _conv_xproj_fwd_kernel(xz_ptr, conv_w_ptr, conv_b_ptr, x_proj_w_ptr, u_ptr, x_dbl_ptr,
                           L, batch, d_inner, stride_xz, n_xdbl,
                           K: tl.constexpr, T: tl.constexpr, BLOCK_C: tl.constexpr,
                           N_CBLOCKS: tl.constexpr, XW: tl.constexpr):
    """u = silu(conv(x)) for T steps of one batch row, all channels; x_dbl = u @ x_proj.T."""
    row_b = tl.program_id(0)
    t = tl.program_id(1) * T + tl.arange(0, T)
    tmask = t < L
    rows = t.to(tl.int64) * batch + row_b
    j = tl.arange(0, XW)
    jmask = j < n_xdbl
    x_dbl = tl.zeros([T, XW], tl.float32)
    for cb in tl.static_range(N_CBLOCKS):
        cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        m = tmask[:, None] & (cols < d_inner)[None, :]
        pre = _conv_tile(xz_ptr, conv_w_ptr, conv_b_ptr, t, L, row_b, batch, d_inner, stride_xz,
                         cols, K)
        u = tl.where(m, pre * _sigmoid(pre), 0.0)
        tl.store(u_ptr + rows[:, None] * d_inner + cols[None, :], u, mask=m)
        w_t = tl.load(x_proj_w_ptr + j[None, :] * d_inner + cols[:, None],
                      mask=(cols < d_inner)[:, None] & jmask[None, :], other=0.0)
        x_dbl += tl.dot(u, w_t, input_precision="ieee")
    tl.store(x_dbl_ptr + rows[:, None] * n_xdbl + j[None, :], x_dbl,
             mask=tmask[:, None] & jmask[None, :])


@triton.jit
def _conv_xproj_bwd_kernel(xz_ptr, conv_w_ptr, conv_b_ptr, x_proj_w_ptr, g_u_ptr, g_x_dbl_ptr,
                           g_pre_ptr, parts_ptr,
                           L, batch, d_inner, stride_xz, n_xdbl,
                           K: tl.constexpr, T: tl.constexpr, BLOCK_C: tl.constexpr,
                           N_CBLOCKS: tl.constexpr, XW: tl.constexpr):
    """Through x_proj and the SiLU: g_pre = (g_u + g_x_dbl @ x_proj) * silu'(pre); and this
    program's partial sums of the conv weight and bias gradients (parts[program] laid out as
    weight (d_inner, K) then bias (d_inner,))."""
    row_b = tl.program_id(0)
    t = tl.program_id(1) * T + tl.arange(0, T)
    tmask = t < L
    rows = t.to(tl.int64) * batch + row_b
    j = tl.arange(0, XW)
    jmask = j < n_xdbl
    g_x_dbl = tl.load(g_x_dbl_ptr + rows[:, None] * n_xdbl + j[None, :],
                      mask=tmask[:, None] & jmask[None, :], other=0.0)
    parts = parts_ptr + (row_b * tl.num_programs(1) + tl.program_id(1)).to(tl.int64) * d_inner * (K + 1)
    for cb in tl.static_range(N_CBLOCKS):
        cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < d_inner
        m = tmask[:, None] & cmask[None, :]
        w = tl.load(x_proj_w_ptr + j[:, None] * d_inner + cols[None, :],
                    mask=jmask[:, None] & cmask[None, :], other=0.0)
        g_u = tl.load(g_u_ptr + rows[:, None] * d_inner + cols[None, :], mask=m, other=0.0)
        g_u += tl.dot(g_x_dbl, w, input_precision="ieee")
        pre = _conv_tile(xz_ptr, conv_w_ptr, conv_b_ptr, t, L, row_b, batch, d_inner, stride_xz,
                         cols, K)
        s = _sigmoid(pre)
        g_pre = tl.where(m, g_u * s * (1.0 + pre * (1.0 - s)), 0.0)
        tl.store(g_pre_ptr + rows[:, None] * d_inner + cols[None, :], g_pre, mask=m)
        tl.store(parts + d_inner * K + cols, tl.sum(g_pre, axis=0), mask=cmask)
        for k in tl.static_range(K):
            src = t - (K - 1) + k
            ms = ((src >= 0) & (src < L))[:, None] & cmask[None, :]
            x = tl.load(xz_ptr + (src.to(tl.int64) * batch + row_b)[:, None] * stride_xz
                        + cols[None, :], mask=ms, other=0.0)
            tl.store(parts + cols * K + k, tl.sum(g_pre * x, axis=0), mask=cmask)


@triton.jit
def _conv_input_grad_kernel(g_pre_ptr, conv_w_ptr, g_xz_ptr, L, batch, d_inner, stride_xz,
                            K: tl.constexpr, T: tl.constexpr, BLOCK_C: tl.constexpr):
    """g_x[t] = sum_k w[:, k] g_pre[t + (K - 1) - k], into the first d_inner columns of g_xz."""
    row_b = tl.program_id(0)
    t = tl.program_id(1) * T + tl.arange(0, T)
    cols = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < d_inner
    g_x = tl.zeros([T, BLOCK_C], tl.float32)
    for k in tl.static_range(K):
        src = t + (K - 1) - k
        m = (src < L)[:, None] & cmask[None, :]
        g = tl.load(g_pre_ptr + (src.to(tl.int64) * batch + row_b)[:, None] * d_inner + cols[None, :],
                    mask=m, other=0.0)
        w = tl.load(conv_w_ptr + cols * K + k, mask=cmask, other=0.0)
        g_x += g * w[None, :]
    rows = t.to(tl.int64) * batch + row_b
    tl.store(g_xz_ptr + rows[:, None] * stride_xz + cols[None, :], g_x,
             mask=(t < L)[:, None] & cmask[None, :])


# -- selective scan -----------------------------------------------------------------------------------
@triton.jit
def _scan_chunk(u_ptr, x_dbl_ptr, rows, tmask, cols, cmask, n_idx, n_mask, r_idx, r_mask, dt_w, dt_b,
                A, h0, d_inner, n_xdbl, R: tl.constexpr, N: tl.constexpr):
    """Inputs and states of one chunk: u, dt_low, B, C, delta (pre-softplus), dt, the decays
    a = exp(dt A), the inputs bx = dt u B, and the states h (entering state ``h0``)."""
    m = tmask[:, None] & cmask[None, :]
    u = tl.load(u_ptr + rows[:, None] * d_inner + cols[None, :], mask=m, other=0.0)
    xrow = x_dbl_ptr + rows[:, None] * n_xdbl
    dt_low = tl.load(xrow + r_idx[None, :], mask=tmask[:, None] & r_mask[None, :], other=0.0)
    B = tl.load(xrow + R + n_idx[None, :], mask=tmask[:, None] & n_mask[None, :], other=0.0)
    C = tl.load(xrow + R + N + n_idx[None, :], mask=tmask[:, None] & n_mask[None, :], other=0.0)
    delta = tl.sum(dt_low[:, None, :] * dt_w[None, :, :], axis=2) + dt_b[None, :]
    dt = tl.where(m, _softplus(delta), 0.0)  # padding: a = 1, bx = 0 carries the state through
    a = tl.exp(dt[:, :, None] * A[None, :, :])
    bx = (dt * u)[:, :, None] * B[:, None, :]
    a_cum, h = tl.associative_scan((a, bx), 0, _linear_recurrence)
    h += a_cum * h0[None, :, :]
    return u, dt_low, B, C, delta, dt, a, bx, h


@triton.jit
def _scan_fwd_kernel(u_ptr, x_dbl_ptr, z_ptr, dt_w_ptr, dt_b_ptr, a_log_ptr, d_skip_ptr, out_ptr,
                     ckpt_ptr, L, batch, d_inner, n_xdbl, stride_z,
                     R: tl.constexpr, N: tl.constexpr, RP: tl.constexpr, NP: tl.constexpr,
                     CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, KEEP_STATES: tl.constexpr):
    row_b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d_inner
    n_idx = tl.arange(0, NP)
    n_mask = n_idx < N
    r_idx = tl.arange(0, RP)
    r_mask = r_idx < R
    dn_mask = cmask[:, None] & n_mask[None, :]
    A = -tl.exp(tl.load(a_log_ptr + cols[:, None] * N + n_idx[None, :], mask=dn_mask, other=0.0))
    dt_w = tl.load(dt_w_ptr + cols[:, None] * R + r_idx[None, :],
                   mask=cmask[:, None] & r_mask[None, :], other=0.0)
    dt_b = tl.load(dt_b_ptr + cols, mask=cmask, other=0.0)
    d_skip = tl.load(d_skip_ptr + cols, mask=cmask, other=0.0)
    steps = tl.arange(0, CHUNK)
    h = tl.zeros([BLOCK_D, NP], tl.float32)
    for c in range(0, tl.cdiv(L, CHUNK)):
        if KEEP_STATES:
            if c > 0:
                ckpt = ckpt_ptr + ((c - 1) * batch + row_b).to(tl.int64) * d_inner * N
                tl.store(ckpt + cols[:, None] * N + n_idx[None, :], h, mask=dn_mask)
        t = c * CHUNK + steps
        tmask = t < L
        rows = t.to(tl.int64) * batch + row_b
        u, dt_low, B, C, delta, dt, a, bx, hs = _scan_chunk(
            u_ptr, x_dbl_ptr, rows, tmask, cols, cmask, n_idx, n_mask, r_idx, r_mask, dt_w, dt_b, A,
            h, d_inner, n_xdbl, R, N)
        m = tmask[:, None] & cmask[None, :]
        z = tl.load(z_ptr + rows[:, None] * stride_z + cols[None, :], mask=m, other=0.0)
        y = tl.sum(hs * C[:, None, :], axis=2) + d_skip[None, :] * u
        tl.store(out_ptr + rows[:, None] * d_inner + cols[None, :], y * z * _sigmoid(z), mask=m)
        h = tl.sum(tl.where((steps == CHUNK - 1)[:, None, None], hs, 0.0), axis=0)


@triton.jit
def _scan_bwd_kernel(u_ptr, x_dbl_ptr, z_ptr, dt_w_ptr, dt_b_ptr, a_log_ptr, d_skip_ptr, g_out_ptr,
                     ckpt_ptr, g_u_ptr, g_z_ptr, g_x_dbl_ptr, parts_ptr,
                     L, batch, d_inner, n_xdbl, stride_z, n_dblocks,
                     R: tl.constexpr, N: tl.constexpr, RP: tl.constexpr, NP: tl.constexpr,
                     CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, SPLIT: tl.constexpr):
    """Gradients of the scan for one batch row and every SPLIT-th channel block: g_u, g_z in
    place; (dt_low, B, C) gradients summed over this program's channels into its split's slice
    of g_x_dbl; the parameter gradients of this row into parts[row] laid out as A_log (d, N),
    dt_proj.weight (d, R), D (d), dt_proj.bias (d)."""
    row_b = tl.program_id(0)
    split = tl.program_id(1)
    n_idx = tl.arange(0, NP)
    n_mask = n_idx < N
    r_idx = tl.arange(0, RP)
    r_mask = r_idx < R
    steps = tl.arange(0, CHUNK)
    n_chunks = tl.cdiv(L, CHUNK)
    g_x_dbl = g_x_dbl_ptr + split.to(tl.int64) * L * batch * n_xdbl
    parts = parts_ptr + row_b.to(tl.int64) * d_inner * (N + R + 2)
    for blk in range(split, n_dblocks, SPLIT):
        # the previous block's partial sums of g_x_dbl, stored by other threads, are read below
        tl.debug_barrier()
        cols = blk * BLOCK_D + tl.arange(0, BLOCK_D)
        cmask = cols < d_inner
        dn_mask = cmask[:, None] & n_mask[None, :]
        dr_mask = cmask[:, None] & r_mask[None, :]
        A = -tl.exp(tl.load(a_log_ptr + cols[:, None] * N + n_idx[None, :], mask=dn_mask, other=0.0))
        dt_w = tl.load(dt_w_ptr + cols[:, None] * R + r_idx[None, :], mask=dr_mask, other=0.0)
        dt_b = tl.load(dt_b_ptr + cols, mask=cmask, other=0.0)
        d_skip = tl.load(d_skip_ptr + cols, mask=cmask, other=0.0)
        g_A = tl.zeros([BLOCK_D, NP], tl.float32)
        g_dt_w = tl.zeros([BLOCK_D, RP], tl.float32)
        g_d_skip = tl.zeros([BLOCK_D], tl.float32)
        g_dt_b = tl.zeros([BLOCK_D], tl.float32)
        carry = tl.zeros([BLOCK_D, NP], tl.float32)  # a_{t+1} dL/dh_{t+1} from the next chunk
        for i in range(0, n_chunks):
            c = n_chunks - 1 - i
            t = c * CHUNK + steps
            tmask = t < L
            m = tmask[:, None] & cmask[None, :]
            rows = t.to(tl.int64) * batch + row_b
            h0 = tl.zeros([BLOCK_D, NP], tl.float32)
            if c > 0:
                ckpt = ckpt_ptr + ((c - 1) * batch + row_b).to(tl.int64) * d_inner * N
                h0 = tl.load(ckpt + cols[:, None] * N + n_idx[None, :], mask=dn_mask, other=0.0)
            u, dt_low, B, C, delta, dt, a, bx, h = _scan_chunk(
                u_ptr, x_dbl_ptr, rows, tmask, cols, cmask, n_idx, n_mask, r_idx, r_mask, dt_w, dt_b,
                A, h0, d_inner, n_xdbl, R, N)
            # through the gate: out = y silu(z)
            z = tl.load(z_ptr + rows[:, None] * stride_z + cols[None, :], mask=m, other=0.0)
            g_out = tl.load(g_out_ptr + rows[:, None] * d_inner + cols[None, :], mask=m, other=0.0)
            s_z = _sigmoid(z)
            y = tl.sum(h * C[:, None, :], axis=2) + d_skip[None, :] * u
            tl.store(g_z_ptr + rows[:, None] * stride_z + cols[None, :],
                     g_out * y * s_z * (1.0 + z * (1.0 - s_z)), mask=m)
            g_y = g_out * z * s_z
            # adjoint recurrence G_t = C_t g_y_t + a_{t+1} G_{t+1}, as a reverse scan
            nxt = t + 1
            nrows = nxt.to(tl.int64) * batch + row_b
            dt_low_next = tl.load(x_dbl_ptr + nrows[:, None] * n_xdbl + r_idx[None, :],
                                  mask=(nxt < L)[:, None] & r_mask[None, :], other=0.0)
            dt_next = _softplus(tl.sum(dt_low_next[:, None, :] * dt_w[None, :, :], axis=2) + dt_b[None, :])
            a_next = tl.where(((nxt < L) & (steps < CHUNK - 1))[:, None, None],
                              tl.exp(dt_next[:, :, None] * A[None, :, :]),
                              tl.where((steps == CHUNK - 1)[:, None, None], 1.0, 0.0))
            a_rev, G = tl.associative_scan((a_next, g_y[:, :, None] * C[:, None, :]), 0,
                                           _linear_recurrence, reverse=True)
            G += a_rev * carry[None, :, :]
            carry = tl.sum(tl.where((steps == 0)[:, None, None], a * G, 0.0), axis=0)
            # through h_t = a_t h_{t-1} + dt_t u_t B_t, with a_t h_{t-1} = h_t - bx_t
            GB = tl.sum(G * B[:, None, :], axis=2)
            tl.store(g_u_ptr + rows[:, None] * d_inner + cols[None, :],
                     GB * dt + d_skip[None, :] * g_y, mask=m)
            G_ah = G * (h - bx)
            g_A += tl.sum(G_ah * dt[:, :, None], axis=0)
            g_dt = GB * u + tl.sum(G_ah * A[None, :, :], axis=2)
            g_delta = tl.where(m, g_dt * _sigmoid(delta), 0.0)
            g_dt_b += tl.sum(g_delta, axis=0)
            g_d_skip += tl.sum(g_y * u, axis=0)
            g_dt_w += tl.sum(g_delta[:, :, None] * dt_low[:, None, :], axis=0)
            # (dt_low, B, C) gradients: this block's channels added to the split's running sums
            g_dt_low = tl.sum(g_delta[:, :, None] * dt_w[None, :, :], axis=1)
            g_B = tl.sum(G * (dt * u)[:, :, None], axis=1)
            g_C = tl.sum(h * g_y[:, :, None], axis=1)
            xrow = g_x_dbl + rows[:, None] * n_xdbl
            mr = tmask[:, None] & r_mask[None, :]
            mn = tmask[:, None] & n_mask[None, :]
            if blk != split:  # the split's first block writes, the others add
                g_dt_low += tl.load(xrow + r_idx[None, :], mask=mr, other=0.0)
                g_B += tl.load(xrow + R + n_idx[None, :], mask=mn, other=0.0)
                g_C += tl.load(xrow + R + N + n_idx[None, :], mask=mn, other=0.0)
            tl.store(xrow + r_idx[None, :], g_dt_low, mask=mr)
            tl.store(xrow + R + n_idx[None, :], g_B, mask=mn)
            tl.store(xrow + R + N + n_idx[None, :], g_C, mask=mn)
        tl.store(parts + cols[:, None] * N + n_idx[None, :], g_A * A, mask=dn_mask)  # dA/dA_log = A
        tl.store(parts + d_inner * N + cols[:, None] * R + r_idx[None, :], g_dt_w, mask=dr_mask)
        tl.store(parts + d_inner * (N + R) + cols, g_d_skip, mask=cmask)
        tl.store(parts + d_inner * (N + R + 1) + cols, g_dt_b, mask=cmask)


# -- launch ------------------------------------------------------------------------------------------
def _pow2(n: int, at_least: int = 1) -> int:
    return max(at_least, triton.next_power_of_2(n))


class _Shapes:
    """Sizes and tile choices of one call (a pure function of the shapes: the same shapes always
    get the same tiles, hence the same summation order)."""

    def __init__(self, xz: Tensor, conv_weight: Tensor, dt_proj_weight: Tensor, a_log: Tensor) -> None:
        self.L, self.batch, two_d = xz.shape
        self.d_inner, self.K = conv_weight.shape
        self.R, self.N = dt_proj_weight.shape[1], a_log.shape[1]
        self.n_xdbl = self.R + 2 * self.N
        assert two_d == 2 * self.d_inner, f"xz has {two_d} columns for d_inner {self.d_inner}"
        self.RP, self.NP, self.XW = _pow2(self.R), _pow2(self.N), _pow2(self.n_xdbl, 16)
        self.chunk = min(_pow2(self.L, 2), MAX_CHUNK)
        self.n_chunks = triton.cdiv(self.L, self.chunk)
        self.block_d = self._block_d(_SCAN_TILE_FWD)
        self.block_d_bwd = self._block_d(_SCAN_TILE_BWD)
        self.n_dblocks_bwd = triton.cdiv(self.d_inner, self.block_d_bwd)
        self.split = max(1, min(triton.cdiv(_TARGET_PROGRAMS, self.batch), self.n_dblocks_bwd))
        self.block_c = min(_CONV_C, _pow2(self.d_inner, 16))
        self.n_cblocks = triton.cdiv(self.d_inner, self.block_c)
        self.n_tchunks = triton.cdiv(self.L, _CONV_T)

    def _block_d(self, tile: int) -> int:
        return max(1, min(tile // (self.chunk * self.NP), _pow2(self.d_inner)))


def _conv_xproj_forward(xz, conv_weight, conv_bias, x_proj_weight, s: _Shapes) -> tuple[Tensor, Tensor]:
    u = xz.new_empty(s.L, s.batch, s.d_inner)
    x_dbl = xz.new_empty(s.L, s.batch, s.n_xdbl)
    _conv_xproj_fwd_kernel[(s.batch, s.n_tchunks)](
        xz, conv_weight, conv_bias, x_proj_weight, u, x_dbl, s.L, s.batch, s.d_inner, 2 * s.d_inner,
        s.n_xdbl, K=s.K, T=_CONV_T, BLOCK_C=s.block_c,
        N_CBLOCKS=s.n_cblocks, XW=s.XW, num_warps=_CONV_WARPS)
    return u, x_dbl


class MambaInnerFn(torch.autograd.Function):
    """A Mamba block from in_proj's output ``xz`` (L, b, 2 d_inner), time-major and contiguous,
    to out_proj's input (L, b, d_inner), on the Triton kernels (see the module docstring)."""

    @staticmethod
    def forward(ctx, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, a_log, d_skip):
        s = _Shapes(xz, conv_weight, dt_proj_weight, a_log)
        u, x_dbl = _conv_xproj_forward(xz, conv_weight, conv_bias, x_proj_weight, s)
        keep = any(ctx.needs_input_grad) and s.n_chunks > 1
        ckpt = xz.new_empty(max(s.n_chunks - 1, 0) if keep else 0, s.batch, s.d_inner, s.N)
        out = xz.new_empty(s.L, s.batch, s.d_inner)
        _scan_fwd_kernel[(s.batch, triton.cdiv(s.d_inner, s.block_d))](
            u, x_dbl, xz[..., s.d_inner:], dt_proj_weight, dt_proj_bias, a_log, d_skip, out, ckpt,
            s.L, s.batch, s.d_inner, s.n_xdbl, 2 * s.d_inner, R=s.R, N=s.N, RP=s.RP, NP=s.NP,
            CHUNK=s.chunk, BLOCK_D=s.block_d, KEEP_STATES=keep, num_warps=_SCAN_WARPS)
        ctx.save_for_backward(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, a_log,
                              d_skip, u, x_dbl, ckpt)
        ctx.shapes = s
        return out

    @staticmethod
    def backward(ctx, g_out):
        xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, a_log, d_skip, u, x_dbl, ckpt = \
            ctx.saved_tensors
        s: _Shapes = ctx.shapes
        g_out = g_out.contiguous()
        g_xz = torch.empty_like(xz)
        g_u = torch.empty_like(u)
        g_x_dbl_parts = xz.new_empty(s.split, s.L, s.batch, s.n_xdbl)
        scan_parts = xz.new_empty(s.batch, s.d_inner * (s.N + s.R + 2))
        _scan_bwd_kernel[(s.batch, s.split)](
            u, x_dbl, xz[..., s.d_inner:], dt_proj_weight, dt_proj_bias, a_log, d_skip, g_out, ckpt,
            g_u, g_xz[..., s.d_inner:], g_x_dbl_parts, scan_parts,
            s.L, s.batch, s.d_inner, s.n_xdbl, 2 * s.d_inner, s.n_dblocks_bwd,
            R=s.R, N=s.N, RP=s.RP, NP=s.NP, CHUNK=s.chunk, BLOCK_D=s.block_d_bwd, SPLIT=s.split,
            num_warps=_SCAN_WARPS)
        g_x_dbl = g_x_dbl_parts[0] if s.split == 1 else g_x_dbl_parts.sum(0)
        g_a_log, g_dt_w, g_d_skip, g_dt_b = scan_parts.sum(0).split(
            [s.d_inner * s.N, s.d_inner * s.R, s.d_inner, s.d_inner])
        g_x_proj_w = g_x_dbl.view(-1, s.n_xdbl).t() @ u.view(-1, s.d_inner)
        g_pre = torch.empty_like(u)
        conv_parts = xz.new_empty(s.batch * s.n_tchunks, s.d_inner * (s.K + 1))
        _conv_xproj_bwd_kernel[(s.batch, s.n_tchunks)](
            xz, conv_weight, conv_bias, x_proj_weight, g_u, g_x_dbl, g_pre, conv_parts,
            s.L, s.batch, s.d_inner, 2 * s.d_inner, s.n_xdbl, K=s.K, T=_CONV_T, BLOCK_C=s.block_c,
            N_CBLOCKS=s.n_cblocks, XW=s.XW, num_warps=_CONV_WARPS)
        _conv_input_grad_kernel[(s.batch, s.n_tchunks, s.n_cblocks)](
            g_pre, conv_weight, g_xz, s.L, s.batch, s.d_inner, 2 * s.d_inner, K=s.K, T=_CONV_T,
            BLOCK_C=s.block_c, num_warps=_CONV_WARPS)
        g_conv_w, g_conv_b = conv_parts.sum(0).split([s.d_inner * s.K, s.d_inner])
        return (g_xz, g_conv_w.view(s.d_inner, s.K), g_conv_b, g_x_proj_w, g_dt_w.view(s.d_inner, s.R), g_dt_b,
                g_a_log.view(s.d_inner, s.N), g_d_skip)


def mamba_inner(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor, x_proj_weight: Tensor,
                dt_proj_weight: Tensor, dt_proj_bias: Tensor, a_log: Tensor, d_skip: Tensor) -> Tensor:
    """:class:`MambaInnerFn` on float32 tensors (made contiguous).

    Shape:
        xz: (L, b, 2 d_inner); conv_weight: (d_inner, K); x_proj_weight: (rank + 2 d_state,
        d_inner); dt_proj_weight: (d_inner, rank); a_log: (d_inner, d_state); conv_bias,
        dt_proj_bias, d_skip: (d_inner,); output: (L, b, d_inner).
    """
    return MambaInnerFn.apply(*(t.contiguous() for t in (xz, conv_weight, conv_bias, x_proj_weight,
                                                          dt_proj_weight, dt_proj_bias, a_log, d_skip)))
