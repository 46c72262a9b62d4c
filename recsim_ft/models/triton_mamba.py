"""Triton kernels for the Mamba block on CUDA, built for FT-Mamba's shapes: short sequences (a
few dozen feature tokens) and large batches.

mamba_ssm's kernels are written for sequences of thousands of steps, with a block of threads
scanning one channel in parallel over time: at L = 21 most of those threads idle. Here the
parallelism is over batch rows and channels instead, as in a recurrent cell: one program per
(batch row, block of channels) walks through time, each lane holding its channels' d_state
states in registers, and the next step's inputs are loaded while this step computes. Between
in_proj and out_proj the block is three kernels and one cuBLAS matmul forward, four kernels
and two matmuls backward:

    conv        u = silu(causal_conv(x) + conv_bias)
    (cuBLAS)    x_dbl = u @ x_proj.T = (dt_low, B, C)
    scan        dt = softplus(dt_low @ dt_proj.T + dt_bias);  A = -exp(A_log)
                h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t;   out_t = (h_t . C_t + D u_t) silu(z_t)

The backward walks each chunk of ``CHUNK`` steps twice: forward from the state the forward pass
kept at the chunk's start, writing the states to a scratch buffer, then backward through the
adjoint recurrence, reading them. Gradients that sum over channels or over the batch are
written as per-program partial sums and reduced by torch in a fixed order: no atomics, so a
run is bit-identical to the next with the same seed.

The layout is the CPU block's: time-major rows ``(t, b)``. This module imports triton; import
it only where triton is installed. Under ``TRITON_INTERPRET=1`` the same kernels run on CPU
tensors through Triton's interpreter, which is how the tests prove them correct without a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

#: Steps per chunk of the backward (and between the states the forward keeps for it).
CHUNK = 32
#: Channels per scan program: the most that still gives about ``_TARGET_PROGRAMS`` programs.
_SCAN_BLOCK_D = (16, 64)
_TARGET_PROGRAMS = 1024
#: Run-time sizes the kernels are not recompiled for (triton would otherwise compile a variant
#: per value class of each, e.g. batch 8 vs 32): only the tile constants select a variant.
_SIZES = ("L", "batch")
#: Time steps and channels per conv program.
_CONV_T, _CONV_C = 16, 64


# The kernels' long argument lists read better packed than one per line:
# fmt: off
# -- elementwise helpers ---------------------------------------------------------------------------
@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _softplus(x):
    # log(1 + e^x) rounds e^x away in float32 below -15, where softplus(x) = e^x to 1e-7
    return tl.where(x > 20.0, x, tl.where(x < -15.0, tl.exp(x), tl.log(1.0 + tl.exp(x))))


# -- causal depthwise conv + SiLU ------------------------------------------------------------------
@triton.jit
def _conv_pre(xz_ptr, conv_w_ptr, conv_b_ptr, t, cols, L, batch, d_inner, stride_xz,
              K: tl.constexpr):
    """``conv_bias + sum_k w[:, k] x[t - (K - 1) + k]`` (zero before t = 0) of a (time, channel)
    tile, x read from the first d_inner columns of in_proj's output."""
    cmask = cols < d_inner
    pre = tl.zeros([t.shape[0], cols.shape[0]], tl.float32)
    pre += tl.load(conv_b_ptr + cols, mask=cmask, other=0.0)[None, :]
    for k in tl.static_range(K):
        src = t - (K - 1) + k
        m = ((src >= 0) & (src < L))[:, None] & cmask[None, :]
        offsets = (src.to(tl.int64) * batch)[:, None] * stride_xz + cols[None, :]
        x = tl.load(xz_ptr + offsets, mask=m, other=0.0)
        pre += x * tl.load(conv_w_ptr + cols * K + k, mask=cmask, other=0.0)[None, :]
    return pre


@triton.jit(do_not_specialize=_SIZES)
def _conv_fwd_kernel(xz_ptr, conv_w_ptr, conv_b_ptr, u_ptr, L, batch, d_inner, stride_xz,
                     K: tl.constexpr, T: tl.constexpr, BLOCK_C: tl.constexpr):
    """u = silu(conv(x)) on T steps x BLOCK_C channels of one batch row."""
    row_b = tl.program_id(0)
    t = tl.program_id(1) * T + tl.arange(0, T)
    cols = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    pre = _conv_pre(xz_ptr + row_b * stride_xz, conv_w_ptr, conv_b_ptr, t, cols, L, batch, d_inner,
                    stride_xz, K)
    rows = t.to(tl.int64) * batch + row_b
    tl.store(u_ptr + rows[:, None] * d_inner + cols[None, :], pre * _sigmoid(pre),
             mask=(t < L)[:, None] & (cols < d_inner)[None, :])


@triton.jit(do_not_specialize=_SIZES)
def _conv_bwd_kernel(xz_ptr, conv_w_ptr, conv_b_ptr, g_u_ptr, g_pre_ptr, parts_ptr,
                     L, batch, d_inner, stride_xz,
                     K: tl.constexpr, T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Through the SiLU: g_pre = g_u silu'(pre); and this program's partial sums of the conv
    weight and bias gradients (parts[program] laid out as weight (d_inner, K), bias (d_inner,))."""
    row_b = tl.program_id(0)
    t = tl.program_id(1) * T + tl.arange(0, T)
    cols = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < d_inner
    m = (t < L)[:, None] & cmask[None, :]
    x_row = xz_ptr + row_b * stride_xz
    pre = _conv_pre(x_row, conv_w_ptr, conv_b_ptr, t, cols, L, batch, d_inner, stride_xz, K)
    rows = t.to(tl.int64) * batch + row_b
    g_u = tl.load(g_u_ptr + rows[:, None] * d_inner + cols[None, :], mask=m, other=0.0)
    s = _sigmoid(pre)
    g_pre = tl.where(m, g_u * s * (1.0 + pre * (1.0 - s)), 0.0)
    tl.store(g_pre_ptr + rows[:, None] * d_inner + cols[None, :], g_pre, mask=m)
    program = (row_b * tl.num_programs(1) + tl.program_id(1)).to(tl.int64)
    parts = parts_ptr + program * d_inner * (K + 1)
    tl.store(parts + d_inner * K + cols, tl.sum(g_pre, axis=0), mask=cmask)
    for k in tl.static_range(K):
        src = t - (K - 1) + k
        ms = ((src >= 0) & (src < L))[:, None] & cmask[None, :]
        offsets = (src.to(tl.int64) * batch)[:, None] * stride_xz + cols[None, :]
        x = tl.load(x_row + offsets, mask=ms, other=0.0)
        tl.store(parts + cols * K + k, tl.sum(g_pre * x, axis=0), mask=cmask)


@triton.jit(do_not_specialize=_SIZES)
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
        offsets = (src.to(tl.int64) * batch + row_b)[:, None] * d_inner + cols[None, :]
        g = tl.load(g_pre_ptr + offsets, mask=m, other=0.0)
        g_x += g * tl.load(conv_w_ptr + cols * K + k, mask=cmask, other=0.0)[None, :]
    rows = t.to(tl.int64) * batch + row_b
    tl.store(g_xz_ptr + rows[:, None] * stride_xz + cols[None, :], g_x,
             mask=(t < L)[:, None] & cmask[None, :])


# -- selective scan --------------------------------------------------------------------------------
@triton.jit
def _inside(idx, t, lo, hi):
    """``lo <= t < hi`` as a mask shaped like ``idx`` (t may be a plain int)."""
    steps = idx * 0 + t
    return (steps >= lo) & (steps < hi)


@triton.jit
def _step_inputs(u_ptr, x_dbl_ptr, z_ptr, t, lo, hi, row_b, batch, d_inner, n_xdbl, stride_z,
                 cols, cmask, n_idx, n_mask, r_idx, r_mask, R: tl.constexpr, N: tl.constexpr):
    """u, z (channels), dt_low (rank), B, C (states) of step t; zeros unless lo <= t < hi."""
    row = (t * batch + row_b).to(tl.int64)
    m = cmask & _inside(cols, t, lo, hi)
    u = tl.load(u_ptr + row * d_inner + cols, mask=m, other=0.0)
    z = tl.load(z_ptr + row * stride_z + cols, mask=m, other=0.0)
    xrow = x_dbl_ptr + row * n_xdbl
    dt_low = tl.load(xrow + r_idx, mask=r_mask & _inside(r_idx, t, lo, hi), other=0.0)
    B = tl.load(xrow + R + n_idx, mask=n_mask & _inside(n_idx, t, lo, hi), other=0.0)
    C = tl.load(xrow + R + N + n_idx, mask=n_mask & _inside(n_idx, t, lo, hi), other=0.0)
    return u, z, dt_low, B, C


@triton.jit
def _discretise(u, dt_low, B, dt_w, dt_b, A, cmask):
    """delta (before softplus), dt, the decays a = exp(dt A) and the inputs bx = dt u B."""
    delta = tl.sum(dt_w * dt_low[None, :], axis=1) + dt_b
    dt = tl.where(cmask, _softplus(delta), 0.0)
    a = tl.exp(dt[:, None] * A)
    bx = (dt * u)[:, None] * B[None, :]
    return delta, dt, a, bx


@triton.jit
def _scan_params(dt_w_ptr, dt_b_ptr, a_log_ptr, d_skip_ptr, cols, cmask, n_idx, n_mask, r_idx,
                 r_mask, R: tl.constexpr, N: tl.constexpr):
    """A = -exp(A_log), dt_proj's weight and bias, and D, for this program's channels."""
    dn_mask = cmask[:, None] & n_mask[None, :]
    A = -tl.exp(tl.load(a_log_ptr + cols[:, None] * N + n_idx[None, :], mask=dn_mask, other=0.0))
    dr_mask = cmask[:, None] & r_mask[None, :]
    dt_w = tl.load(dt_w_ptr + cols[:, None] * R + r_idx[None, :], mask=dr_mask, other=0.0)
    dt_b = tl.load(dt_b_ptr + cols, mask=cmask, other=0.0)
    d_skip = tl.load(d_skip_ptr + cols, mask=cmask, other=0.0)
    return A, dt_w, dt_b, d_skip


@triton.jit(do_not_specialize=_SIZES)
def _scan_fwd_kernel(u_ptr, x_dbl_ptr, z_ptr, dt_w_ptr, dt_b_ptr, a_log_ptr, d_skip_ptr, out_ptr,
                     chunk_starts_ptr, L, batch, d_inner, n_xdbl, stride_z,
                     R: tl.constexpr, N: tl.constexpr, RP: tl.constexpr, NP: tl.constexpr,
                     CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, KEEP_STATES: tl.constexpr):
    """The recurrence for one batch row and BLOCK_D channels, step by step; with KEEP_STATES the
    state entering every chunk after the first goes to chunk_starts (n_chunks - 1, b, d, N)."""
    row_b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d_inner
    n_idx = tl.arange(0, NP)
    n_mask = n_idx < N
    r_idx = tl.arange(0, RP)
    r_mask = r_idx < R
    A, dt_w, dt_b, d_skip = _scan_params(dt_w_ptr, dt_b_ptr, a_log_ptr, d_skip_ptr, cols, cmask,
                                         n_idx, n_mask, r_idx, r_mask, R, N)
    h = tl.zeros([BLOCK_D, NP], tl.float32)
    u, z, dt_low, B, C = _step_inputs(
        u_ptr, x_dbl_ptr, z_ptr, 0, 0, L, row_b, batch, d_inner, n_xdbl, stride_z,
        cols, cmask, n_idx, n_mask, r_idx, r_mask, R, N)
    for t in range(0, L):
        # the next step's loads go out before this step's arithmetic
        u_next, z_next, dt_low_next, B_next, C_next = _step_inputs(
            u_ptr, x_dbl_ptr, z_ptr, t + 1, 0, L, row_b, batch, d_inner, n_xdbl, stride_z,
            cols, cmask, n_idx, n_mask, r_idx, r_mask, R, N)
        if KEEP_STATES:
            if (t % CHUNK == 0) & (t > 0):
                start = chunk_starts_ptr + (
                    (t // CHUNK - 1) * batch + row_b).to(tl.int64) * d_inner * N
                dn_mask = cmask[:, None] & n_mask[None, :]
                tl.store(start + cols[:, None] * N + n_idx[None, :], h, mask=dn_mask)
        delta, dt, a, bx = _discretise(u, dt_low, B, dt_w, dt_b, A, cmask)
        h = a * h + bx
        y = tl.sum(h * C[None, :], axis=1) + d_skip * u
        row = (t * batch + row_b).to(tl.int64)
        tl.store(out_ptr + row * d_inner + cols, y * z * _sigmoid(z), mask=cmask)
        u, z, dt_low, B, C = u_next, z_next, dt_low_next, B_next, C_next


@triton.jit(do_not_specialize=_SIZES)
def _scan_bwd_kernel(u_ptr, x_dbl_ptr, z_ptr, dt_w_ptr, dt_b_ptr, a_log_ptr, d_skip_ptr, g_out_ptr,
                     chunk_starts_ptr, states_ptr, g_u_ptr, g_z_ptr, g_x_dbl_ptr, parts_ptr,
                     L, batch, d_inner, n_xdbl, stride_z,
                     R: tl.constexpr, N: tl.constexpr, RP: tl.constexpr, NP: tl.constexpr,
                     CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
    """Gradients of the scan for one batch row and BLOCK_D channels: g_u and g_z in place; the
    (dt_low, B, C) gradients summed over this program's channels into g_x_dbl[channel block];
    the parameter gradients of this row into parts[row], laid out as A_log (d, N),
    dt_proj.weight (d, R), D (d), dt_proj.bias (d). ``states``: scratch (CHUNK, b, d, N)."""
    row_b = tl.program_id(0)
    block = tl.program_id(1)
    cols = block * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d_inner
    n_idx = tl.arange(0, NP)
    n_mask = n_idx < N
    r_idx = tl.arange(0, RP)
    r_mask = r_idx < R
    dn_mask = cmask[:, None] & n_mask[None, :]
    dn_offsets = cols[:, None] * N + n_idx[None, :]
    A, dt_w, dt_b, d_skip = _scan_params(dt_w_ptr, dt_b_ptr, a_log_ptr, d_skip_ptr, cols, cmask,
                                         n_idx, n_mask, r_idx, r_mask, R, N)
    g_x_dbl = g_x_dbl_ptr + block.to(tl.int64) * L * batch * n_xdbl
    g_A = tl.zeros([BLOCK_D, NP], tl.float32)
    g_dt_w = tl.zeros([BLOCK_D, RP], tl.float32)
    g_d_skip = tl.zeros([BLOCK_D], tl.float32)
    g_dt_b = tl.zeros([BLOCK_D], tl.float32)
    carry = tl.zeros([BLOCK_D, NP], tl.float32)  # a_{t+1} dL/dh_{t+1}
    n_chunks = tl.cdiv(L, CHUNK)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t0 = c * CHUNK
        t1 = tl.minimum(t0 + CHUNK, L)
        h = tl.zeros([BLOCK_D, NP], tl.float32)
        if c > 0:
            start = chunk_starts_ptr + ((c - 1) * batch + row_b).to(tl.int64) * d_inner * N
            h = tl.load(start + dn_offsets, mask=dn_mask, other=0.0)
        # forward through the chunk, keeping its states
        u, z, dt_low, B, C = _step_inputs(
            u_ptr, x_dbl_ptr, z_ptr, t0, t0, t1, row_b, batch, d_inner, n_xdbl, stride_z,
            cols, cmask, n_idx, n_mask, r_idx, r_mask, R, N)
        for t in range(t0, t1):
            u_next, z_next, dt_low_next, B_next, C_next = _step_inputs(
                u_ptr, x_dbl_ptr, z_ptr, t + 1, t0, t1, row_b, batch, d_inner, n_xdbl, stride_z,
                cols, cmask, n_idx, n_mask, r_idx, r_mask, R, N)
            delta, dt, a, bx = _discretise(u, dt_low, B, dt_w, dt_b, A, cmask)
            h = a * h + bx
            state = states_ptr + ((t - t0) * batch + row_b).to(tl.int64) * d_inner * N
            tl.store(state + dn_offsets, h, mask=dn_mask)
            u, z, dt_low, B, C = u_next, z_next, dt_low_next, B_next, C_next
        tl.debug_barrier()  # the states are read back below, in the same layout
        # backward through the chunk: G_t = C_t g_y_t + a_{t+1} G_{t+1}
        t = t1 - 1
        u, z, dt_low, B, C = _step_inputs(
            u_ptr, x_dbl_ptr, z_ptr, t, t0, t1, row_b, batch, d_inner, n_xdbl, stride_z,
            cols, cmask, n_idx, n_mask, r_idx, r_mask, R, N)
        for j in range(0, t1 - t0):
            t = t1 - 1 - j
            u_prev, z_prev, dt_low_prev, B_prev, C_prev = _step_inputs(
                u_ptr, x_dbl_ptr, z_ptr, t - 1, t0, t1, row_b, batch, d_inner, n_xdbl, stride_z,
                cols, cmask, n_idx, n_mask, r_idx, r_mask, R, N)
            row = (t * batch + row_b).to(tl.int64)
            state = states_ptr + ((t - t0) * batch + row_b).to(tl.int64) * d_inner * N
            h = tl.load(state + dn_offsets, mask=dn_mask, other=0.0)
            g_out = tl.load(g_out_ptr + row * d_inner + cols, mask=cmask, other=0.0)
            delta, dt, a, bx = _discretise(u, dt_low, B, dt_w, dt_b, A, cmask)
            # through the gate: out = y silu(z)
            s_z = _sigmoid(z)
            y = tl.sum(h * C[None, :], axis=1) + d_skip * u
            tl.store(g_z_ptr + row * stride_z + cols, g_out * y * s_z * (1.0 + z * (1.0 - s_z)),
                     mask=cmask)
            g_y = g_out * z * s_z
            G = g_y[:, None] * C[None, :] + carry
            carry = a * G
            # through h_t = a_t h_{t-1} + dt_t u_t B_t, with a_t h_{t-1} = h_t - bx_t
            GB = tl.sum(G * B[None, :], axis=1)
            tl.store(g_u_ptr + row * d_inner + cols, GB * dt + d_skip * g_y, mask=cmask)
            G_ah = G * (h - bx)
            g_A += G_ah * dt[:, None]
            g_dt = GB * u + tl.sum(G_ah * A, axis=1)
            g_delta = tl.where(cmask, g_dt * _sigmoid(delta), 0.0)
            g_dt_b += g_delta
            g_d_skip += g_y * u
            g_dt_w += g_delta[:, None] * dt_low[None, :]
            g_row = g_x_dbl + row * n_xdbl
            tl.store(g_row + r_idx, tl.sum(g_delta[:, None] * dt_w, axis=0), mask=r_mask)
            tl.store(g_row + R + n_idx, tl.sum(G * (dt * u)[:, None], axis=0), mask=n_mask)
            tl.store(g_row + R + N + n_idx, tl.sum(h * g_y[:, None], axis=0), mask=n_mask)
            u, z, dt_low, B, C = u_prev, z_prev, dt_low_prev, B_prev, C_prev
        tl.debug_barrier()  # the next chunk's forward overwrites the scratch states
    parts = parts_ptr + row_b.to(tl.int64) * d_inner * (N + R + 2)
    tl.store(parts + dn_offsets, g_A * A, mask=dn_mask)  # dA/dA_log = A
    tl.store(parts + d_inner * N + cols[:, None] * R + r_idx[None, :], g_dt_w,
             mask=cmask[:, None] & r_mask[None, :])
    tl.store(parts + d_inner * (N + R) + cols, g_d_skip, mask=cmask)
    tl.store(parts + d_inner * (N + R + 1) + cols, g_dt_b, mask=cmask)


# fmt: on
# -- launch ----------------------------------------------------------------------------------------
def _pow2(n: int, at_least: int = 1) -> int:
    return max(at_least, triton.next_power_of_2(n))


class _Shapes:
    """Sizes and tile choices of one call (a pure function of the shapes: the same shapes always
    get the same tiles, hence the same summation order)."""

    def __init__(
        self, xz: Tensor, conv_weight: Tensor, dt_proj_weight: Tensor, a_log: Tensor
    ) -> None:
        self.L, self.batch, two_d = xz.shape
        self.d_inner, self.K = conv_weight.shape
        self.R, self.N = dt_proj_weight.shape[1], a_log.shape[1]
        self.n_xdbl = self.R + 2 * self.N
        assert two_d == 2 * self.d_inner, f"xz has {two_d} columns for d_inner {self.d_inner}"
        self.RP, self.NP = _pow2(self.R), _pow2(self.N)
        self.chunk = min(CHUNK, self.L)
        self.n_chunks = triton.cdiv(self.L, CHUNK)
        smallest, largest = _SCAN_BLOCK_D
        block_d = min(largest, _pow2(self.d_inner))
        while (
            block_d > smallest
            and self.batch * triton.cdiv(self.d_inner, block_d) < _TARGET_PROGRAMS
        ):
            block_d //= 2
        self.block_d, self.n_dblocks = block_d, triton.cdiv(self.d_inner, block_d)
        self.scan_warps = max(1, min(8, block_d * self.NP // 128))  # 4 elements per lane: no spills
        self.block_c = min(_CONV_C, _pow2(self.d_inner, 16))
        self.conv_grid = (
            self.batch,
            triton.cdiv(self.L, _CONV_T),
            triton.cdiv(self.d_inner, self.block_c),
        )


class MambaInnerFn(torch.autograd.Function):
    """A Mamba block from in_proj's output ``xz`` (L, b, 2 d_inner), time-major and contiguous,
    to out_proj's input (L, b, d_inner), on the Triton kernels (see the module docstring)."""

    @staticmethod
    def forward(
        ctx, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, a_log, d_skip
    ):
        s = _Shapes(xz, conv_weight, dt_proj_weight, a_log)
        u = xz.new_empty(s.L, s.batch, s.d_inner)
        _conv_fwd_kernel[s.conv_grid](
            xz,
            conv_weight,
            conv_bias,
            u,
            s.L,
            s.batch,
            s.d_inner,
            2 * s.d_inner,
            K=s.K,
            T=_CONV_T,
            BLOCK_C=s.block_c,
            num_warps=4,
        )
        x_dbl = F.linear(u, x_proj_weight)
        keep = any(ctx.needs_input_grad) and s.n_chunks > 1
        chunk_starts = xz.new_empty(s.n_chunks - 1 if keep else 0, s.batch, s.d_inner, s.N)
        out = torch.empty_like(u)
        _scan_fwd_kernel[(s.batch, s.n_dblocks)](
            u,
            x_dbl,
            xz[..., s.d_inner :],
            dt_proj_weight,
            dt_proj_bias,
            a_log,
            d_skip,
            out,
            chunk_starts,
            s.L,
            s.batch,
            s.d_inner,
            s.n_xdbl,
            2 * s.d_inner,
            R=s.R,
            N=s.N,
            RP=s.RP,
            NP=s.NP,
            CHUNK=CHUNK,
            BLOCK_D=s.block_d,
            KEEP_STATES=keep,
            num_warps=s.scan_warps,
        )
        ctx.save_for_backward(
            xz,
            conv_weight,
            conv_bias,
            x_proj_weight,
            dt_proj_weight,
            dt_proj_bias,
            a_log,
            d_skip,
            u,
            x_dbl,
            chunk_starts,
        )
        ctx.shapes = s
        return out

    @staticmethod
    def backward(ctx, g_out):
        (
            xz,
            conv_weight,
            conv_bias,
            x_proj_weight,
            dt_proj_weight,
            dt_proj_bias,
            a_log,
            d_skip,
            u,
            x_dbl,
            chunk_starts,
        ) = ctx.saved_tensors
        s: _Shapes = ctx.shapes
        g_out = g_out.contiguous()
        g_xz = torch.empty_like(xz)
        g_u = torch.empty_like(u)
        states = xz.new_empty(s.chunk, s.batch, s.d_inner, s.N)
        g_x_dbl_parts = xz.new_empty(s.n_dblocks, s.L, s.batch, s.n_xdbl)
        scan_parts = xz.new_empty(s.batch, s.d_inner * (s.N + s.R + 2))
        _scan_bwd_kernel[(s.batch, s.n_dblocks)](
            u,
            x_dbl,
            xz[..., s.d_inner :],
            dt_proj_weight,
            dt_proj_bias,
            a_log,
            d_skip,
            g_out,
            chunk_starts,
            states,
            g_u,
            g_xz[..., s.d_inner :],
            g_x_dbl_parts,
            scan_parts,
            s.L,
            s.batch,
            s.d_inner,
            s.n_xdbl,
            2 * s.d_inner,
            R=s.R,
            N=s.N,
            RP=s.RP,
            NP=s.NP,
            CHUNK=CHUNK,
            BLOCK_D=s.block_d,
            num_warps=s.scan_warps,
        )
        g_x_dbl = g_x_dbl_parts[0] if s.n_dblocks == 1 else g_x_dbl_parts.sum(0)
        g_a_log, g_dt_w, g_d_skip, g_dt_b = scan_parts.sum(0).split(
            [s.d_inner * s.N, s.d_inner * s.R, s.d_inner, s.d_inner]
        )
        g_x_dbl_2d = g_x_dbl.view(-1, s.n_xdbl)
        g_x_proj_w = g_x_dbl_2d.t() @ u.view(-1, s.d_inner)
        g_u.view(-1, s.d_inner).addmm_(g_x_dbl_2d, x_proj_weight)
        g_pre = torch.empty_like(u)
        conv_parts = xz.new_empty(s.conv_grid[0] * s.conv_grid[1], s.d_inner * (s.K + 1))
        _conv_bwd_kernel[s.conv_grid](
            xz,
            conv_weight,
            conv_bias,
            g_u,
            g_pre,
            conv_parts,
            s.L,
            s.batch,
            s.d_inner,
            2 * s.d_inner,
            K=s.K,
            T=_CONV_T,
            BLOCK_C=s.block_c,
            num_warps=4,
        )
        _conv_input_grad_kernel[s.conv_grid](
            g_pre,
            conv_weight,
            g_xz,
            s.L,
            s.batch,
            s.d_inner,
            2 * s.d_inner,
            K=s.K,
            T=_CONV_T,
            BLOCK_C=s.block_c,
            num_warps=4,
        )
        g_conv_w, g_conv_b = conv_parts.sum(0).split([s.d_inner * s.K, s.d_inner])
        return (
            g_xz,
            g_conv_w.view(s.d_inner, s.K),
            g_conv_b,
            g_x_proj_w,
            g_dt_w.view(s.d_inner, s.R),
            g_dt_b,
            g_a_log.view(s.d_inner, s.N),
            g_d_skip,
        )


def mamba_inner(
    xz: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor,
    x_proj_weight: Tensor,
    dt_proj_weight: Tensor,
    dt_proj_bias: Tensor,
    a_log: Tensor,
    d_skip: Tensor,
) -> Tensor:
    """:class:`MambaInnerFn` on float32 tensors (made contiguous).

    Shape:
        xz: (L, b, 2 d_inner); conv_weight: (d_inner, K); x_proj_weight: (rank + 2 d_state,
        d_inner); dt_proj_weight: (d_inner, rank); a_log: (d_inner, d_state); conv_bias,
        dt_proj_bias, d_skip: (d_inner,); output: (L, b, d_inner).
    """
    return MambaInnerFn.apply(
        *(
            t.contiguous()
            for t in (
                xz,
                conv_weight,
                conv_bias,
                x_proj_weight,
                dt_proj_weight,
                dt_proj_bias,
                a_log,
                d_skip,
            )
        )
    )
