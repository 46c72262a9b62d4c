"""The selective scan of Mamba: a fast CPU autograd function, a plain reference, and the
optional ``mamba_ssm`` CUDA kernel behind one call.

The recurrence, per batch row ``b``, channel ``d`` and state ``n``::

    dt_t = softplus(delta_t + delta_bias)          (or delta_t + delta_bias)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = sum_n h_t * C_t + D * u_t
    out  = y * silu(z)                              (when z is given)

Why a hand-written backward: letting autograd record the time loop builds one graph node per
step and zero-fills a full-size gradient for every indexed step (quadratic in L). Here the
forward computes the discretisation for a whole chunk in two vectorised ops, runs the
recurrence in place, and the backward runs the adjoint recurrence in place in reverse. For
sequences longer than ``chunk_len`` only the state at each chunk start is kept and the chunk
is recomputed in the backward, so memory grows as ``L * d_inner`` rather than
``L * d_inner * d_state``.

For float32 CPU tensors a fused C kernel (:mod:`recsim_ft.models.native_scan`, compiled on first
use when a C compiler is present) replaces both loops; float64 (the tests' reference precision)
and machines without a compiler use the PyTorch path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recsim_ft.models import native_scan

#: sequences up to this length keep every state for the backward; longer ones are recomputed
DEFAULT_CHUNK_LEN = 32


def _discretised_states(dt: Tensor, u: Tensor, A: Tensor, B: Tensor, h0: Tensor | None):
    """Decay factors ``a = exp(dt * A)`` and states ``h`` of one time-major chunk.

    Shapes: dt, u (T, b, d); A (d, n); B (T, b, n); h0 (b, d, n) or None (zero state);
    returns a, h (T, b, d, n), both contiguous.
    """
    a = (dt.unsqueeze(-1) * A).exp_()
    h = (dt * u).unsqueeze(-1) * B.unsqueeze(-2)
    steps_a, steps_h = a.unbind(0), h.unbind(0)
    if h0 is not None:
        steps_h[0].addcmul_(steps_a[0], h0)
    for t in range(1, len(steps_h)):
        steps_h[t].addcmul_(steps_a[t], steps_h[t - 1])
    return a, h


def _contract_state(h: Tensor, v: Tensor) -> Tensor:
    """``sum_n h[..., d, n] * v[..., n]``: (T, b, d, n), (T, b, n) -> (T, b, d), as one bmm
    (a broadcast multiply-and-sum over the short last axis is several times slower on CPU)."""
    T, b, d, n = h.shape
    return torch.bmm(h.view(T * b, d, n), v.reshape(T * b, n, 1)).view(T, b, d)


def _contract_channels(h: Tensor, v: Tensor) -> Tensor:
    """``sum_d h[..., d, n] * v[..., d]``: (T, b, d, n), (T, b, d) -> (T, b, n), as one bmm."""
    T, b, d, n = h.shape
    return torch.bmm(v.reshape(T * b, 1, d), h.view(T * b, d, n)).view(T, b, n)


def _scan_forward_torch(u, dt, A, B, C, chunk_len):
    """Pure-PyTorch forward: y, and what the backward needs (every state for a single chunk,
    else the state at each chunk start)."""
    ys, chunk_starts, h = [], [], None
    for start in range(0, u.shape[0], chunk_len):
        sl = slice(start, start + chunk_len)
        chunk_starts.append(h)
        a, states = _discretised_states(dt[sl], u[sl], A, B[sl], h)
        ys.append(_contract_state(states, C[sl]))
        h = states[-1]
    if len(ys) == 1:
        return ys[0], (a, states)
    return torch.cat(ys), (torch.stack(chunk_starts[1:]),)


def _scan_backward_torch(u, dt, A, B, C, g_y, g_u, kept, single_chunk, chunk_len):
    """Pure-PyTorch adjoint scan; adds the scan's part of dL/du into ``g_u`` in place and returns
    the gradients of dt, A, B and C."""
    L = u.shape[0]
    g_dt, g_B, g_C = torch.empty_like(dt), torch.empty_like(B), torch.empty_like(C)
    g_A = torch.zeros_like(A)
    carry = None  # gradient reaching the last state of a chunk from the next chunk
    starts = list(range(0, L, chunk_len))
    for i in reversed(range(len(starts))):
        sl = slice(starts[i], starts[i] + chunk_len)
        h0 = None if i == 0 else kept[0][i - 1]
        if single_chunk:
            a, states = kept
        else:
            a, states = _discretised_states(dt[sl], u[sl], A, B[sl], h0)
        gy = g_y[sl]
        g_C[sl] = _contract_channels(states, gy)
        # adjoint recurrence: G_t = dL/dh_t = C_t * gy_t + a_{t+1} * G_{t+1}
        G = gy.unsqueeze(-1) * C[sl].unsqueeze(-2)
        steps_G, steps_a = G.unbind(0), a.unbind(0)
        if carry is not None:
            steps_G[-1].add_(carry)
        for t in range(len(steps_G) - 2, -1, -1):
            steps_G[t].addcmul_(steps_a[t + 1], steps_G[t + 1])
        carry = steps_a[0] * steps_G[0]
        # through h_t = a_t * h_{t-1} + dt_t * u_t * B_t
        dt_c, u_c = dt[sl], u[sl]
        GB = _contract_state(G, B[sl])
        g_B[sl] = _contract_channels(G, dt_c * u_c)
        g_u[sl] += dt_c * GB
        g_dt_c = u_c * GB
        # through a_t = exp(dt_t * A): dL/da_t * a_t = G_t * h_{t-1} * a_t
        P = G.mul_(a)
        P[1:].mul_(states[:-1])
        if h0 is None:
            P[0].zero_()
        else:
            P[0].mul_(h0)
        g_A += (P * dt_c.unsqueeze(-1)).sum((0, 1))
        g_dt_c += torch.mv(P.mul_(A).view(-1, A.shape[1]), torch.ones_like(A[0])).view_as(g_dt_c)
        g_dt[sl] = g_dt_c
    return g_dt, g_A, g_B, g_C


class _SelectiveScanFn(torch.autograd.Function):
    """Selective scan on time-major tensors (see :func:`selective_scan` for the layout).

    The C kernel takes the whole layer (delta bias, softplus, D skip and SiLU gate included);
    the PyTorch path runs the recurrence and adds those around it.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_len):
        ctx.native = native_scan.native_applies(
            *(t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None)
        )
        ctx.single_chunk, ctx.chunk_len, ctx.delta_softplus = (
            u.shape[0] <= chunk_len,
            chunk_len,
            delta_softplus,
        )
        ctx.has_bias = delta_bias is not None
        if ctx.native:
            A, D, delta_bias = (None if t is None else t.contiguous() for t in (A, D, delta_bias))
            out, checkpoints = native_scan.scan_forward(
                u,
                delta,
                A,
                B,
                C,
                D,
                z,
                delta_bias,
                delta_softplus,
                for_backward=any(ctx.needs_input_grad),
            )
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, checkpoints)
            return out
        raw = delta if delta_bias is None else delta + delta_bias
        dt = F.softplus(raw) if delta_softplus else raw
        y, kept = _scan_forward_torch(u, dt, A, B, C, chunk_len)
        if D is not None:
            y = y + u * D
        out = y if z is None else y * F.silu(z)
        ctx.save_for_backward(
            u,
            dt,
            A,
            B,
            C,
            D,
            z,
            delta if delta_softplus else None,
            delta_bias,
            y if z is not None else None,
            *kept,
        )
        return out

    @staticmethod
    def backward(ctx, g_out):
        g_out = g_out.contiguous()  # may arrive in any layout; the kernels need a plain one
        if ctx.native:
            u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
            g_u, g_delta, g_A, g_B, g_C, g_D, g_z, g_bias = native_scan.scan_backward(
                u, delta, A, B, C, D, z, g_out, delta_bias, ctx.delta_softplus, checkpoints
            )
            return g_u, g_delta, g_A, g_B, g_C, g_D, g_z, g_bias, None, None
        u, dt, A, B, C, D, z, delta, delta_bias, y, *kept = ctx.saved_tensors
        g_z = None
        if z is not None:
            sig_z = torch.sigmoid(z)
            g_z = g_out * y * sig_z * (1 + z * (1 - sig_z))
            g_y = g_out * (z * sig_z)
        else:
            g_y = g_out
        g_D = (g_y * u).sum((0, 1)) if D is not None else None
        g_u = g_y * D if D is not None else torch.zeros_like(u)
        g_dt, g_A, g_B, g_C = _scan_backward_torch(
            u, dt, A, B, C, g_y, g_u, kept, ctx.single_chunk, ctx.chunk_len
        )
        g_delta = g_dt
        if ctx.delta_softplus:
            g_delta = g_dt * torch.sigmoid(delta if delta_bias is None else delta + delta_bias)
        g_bias = g_delta.sum((0, 1)) if ctx.has_bias else None
        return g_u, g_delta, g_A, g_B, g_C, g_D, g_z, g_bias, None, None


def selective_scan_time_major(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    chunk_len: int = DEFAULT_CHUNK_LEN,
) -> Tensor:
    """:func:`selective_scan` on time-major tensors, the layout the Mamba block computes in.

    Shape:
        u, delta, z: (L, batch, d_inner); B, C: (L, batch, d_state); output: (L, batch, d_inner).
    """
    if u.dim() != 3 or B.dim() != 3 or A.dim() != 2:
        raise ValueError(
            f"expected u (L, b, d), A (d, n), B (L, b, n); got {tuple(u.shape)}, "
            f"{tuple(A.shape)}, {tuple(B.shape)}"
        )
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
    return _SelectiveScanFn.apply(
        u.contiguous(),
        delta.contiguous(),
        A,
        B.contiguous(),
        C.contiguous(),
        D,
        z,
        delta_bias,
        delta_softplus,
        chunk_len,
    )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    chunk_len: int = DEFAULT_CHUNK_LEN,
) -> Tensor:
    """Fast selective scan with ``mamba_ssm``'s ``selective_scan_fn`` signature and layout.

    Shape:
        u, delta, z: (batch, d_inner, L); A: (d_inner, d_state); B, C: (batch, d_state, L);
        D, delta_bias: (d_inner,); output: (batch, d_inner, L).

    Examples:
        >>> u, delta, z = torch.randn(3, 2, 4, 5).unbind(0)
        >>> B, C = torch.randn(2, 2, 3, 5).unbind(0)
        >>> A = -torch.rand(4, 3)
        >>> fast = selective_scan(u, delta, A, B, C, torch.ones(4), z, delta_softplus=True)
        >>> ref = selective_scan_reference(u, delta, A, B, C, torch.ones(4), z, delta_softplus=True)
        >>> fast.shape, torch.allclose(fast, ref, atol=1e-5)
        (torch.Size([2, 4, 5]), True)
    """

    def time_major(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.permute(2, 0, 1)

    out = selective_scan_time_major(
        time_major(u),
        time_major(delta),
        A,
        time_major(B),
        time_major(C),
        D,
        time_major(z),
        delta_bias,
        delta_softplus,
        chunk_len,
    )
    return out.permute(1, 2, 0)


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """The recurrence written step by step with plain autograd: slow, obviously right.

    Same arguments and shapes as :func:`selective_scan`; used to test it.
    """
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        a = torch.exp(delta[:, :, t, None] * A)
        h = a * h + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D[:, None]
    return y if z is None else y * F.silu(z)


class _CausalConvFn(torch.autograd.Function):
    """Depthwise causal convolution as a loop over the taps, each one fused multiply-add over
    the whole (L, batch, d) tensor; several times faster on CPU than a grouped ``conv1d``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.native = bias is not None and native_scan.native_applies(x, weight, bias)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if ctx.native:
            return native_scan.conv_forward(x, weight.contiguous(), bias.contiguous(), silu=False)[
                0
            ]
        L, K = x.shape[0], weight.shape[1]
        taps = min(K, L)  # taps reaching before t = 0 only ever see the zero padding
        out = bias.expand_as(x).clone() if bias is not None else torch.zeros_like(x)
        for shift in range(taps):
            out[shift:].addcmul_(x[: L - shift], weight[:, K - 1 - shift])
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        if ctx.native:
            return native_scan.conv_backward(x, weight, g.contiguous(), pre=None)
        g_bias = g.sum((0, 1)) if ctx.has_bias else None
        L, K = x.shape[0], weight.shape[1]
        g_x, g_w = torch.zeros_like(x), torch.zeros_like(weight)
        for shift in range(min(K, L)):
            g_x[: L - shift].addcmul_(g[shift:], weight[:, K - 1 - shift])
            g_w[:, K - 1 - shift] = (g[shift:] * x[: L - shift]).sum((0, 1))
        return g_x, g_w, g_bias


def causal_conv1d_time_major(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``out[t] = bias + sum_k weight[:, k] * x[t - (K - 1) + k]`` (zero before t = 0), which is
    ``conv1d(..., groups=d, padding=K - 1)[..., :L]`` in time-major layout.

    Shape:
        x: (L, batch, d); weight: (d, K); bias: (d,); output: (L, batch, d).

    Examples:
        >>> x, w, b = torch.randn(5, 2, 3), torch.randn(3, 4), torch.randn(3)
        >>> ref = F.conv1d(x.permute(1, 2, 0), w.unsqueeze(1), b, padding=3, groups=3)[..., :5]
        >>> torch.allclose(causal_conv1d_time_major(x, w, b), ref.permute(2, 0, 1), atol=1e-6)
        True
    """
    return _CausalConvFn.apply(x, weight, bias)


class _MambaInnerFn(torch.autograd.Function):
    """Everything of a Mamba block between ``in_proj`` and ``out_proj`` on the C kernels, with
    one hand-written backward: conv + SiLU, x_proj, dt_proj, and the scan with its softplus,
    skip and gate (the CPU counterpart of mamba_ssm's ``mamba_inner_fn``).

    Why: composed from separate ops, autograd records a dozen nodes per block, copies the two
    halves of in_proj's output and the column slices of x_proj's to contiguous tensors, and
    concatenates their gradients back. Here the kernels read and write those slices in place.
    The conv output and the step sizes are recomputed in the backward rather than kept (as
    mamba_ssm's ``checkpoint_lvl=1``): three (L, b, d_inner) tensors less per layer for one
    cheap conv and one rank-8 matmul.
    """

    @staticmethod
    def forward(ctx, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D):
        d_inner, rank, n = conv_weight.shape[0], dt_proj_weight.shape[1], A.shape[1]
        u, pre = native_scan.conv_forward(xz[..., :d_inner], conv_weight, conv_bias, silu=True)
        x_dbl = F.linear(u, x_proj_weight)  # (L, b, rank + 2n): dt_low, B, C side by side
        dt_low, B, C = x_dbl.split([rank, n, n], dim=-1)
        y, checkpoints = native_scan.scan_forward(
            u,
            F.linear(dt_low, dt_proj_weight),
            A,
            B,
            C,
            D,
            xz[..., d_inner:],
            dt_proj_bias,
            softplus=True,
            for_backward=any(ctx.needs_input_grad),
        )
        ctx.save_for_backward(
            xz,
            conv_weight,
            conv_bias,
            x_proj_weight,
            dt_proj_weight,
            dt_proj_bias,
            A,
            D,
            x_dbl,
            checkpoints,
        )
        return y

    @staticmethod
    def backward(ctx, g_y):
        (
            xz,
            conv_weight,
            conv_bias,
            x_proj_weight,
            dt_proj_weight,
            dt_proj_bias,
            A,
            D,
            x_dbl,
            checkpoints,
        ) = ctx.saved_tensors
        d_inner, rank, n = conv_weight.shape[0], dt_proj_weight.shape[1], A.shape[1]
        u, pre = native_scan.conv_forward(xz[..., :d_inner], conv_weight, conv_bias, silu=True)
        g_xz, g_x_dbl = torch.empty_like(xz), torch.empty_like(x_dbl)
        g_dt_low, g_B, g_C = g_x_dbl.split([rank, n, n], dim=-1)
        dt_low, B, C = x_dbl.split([rank, n, n], dim=-1)
        g_u, g_delta, g_A, _, _, g_D, _, g_dt_bias = native_scan.scan_backward(
            u,
            F.linear(dt_low, dt_proj_weight),
            A,
            B,
            C,
            D,
            xz[..., d_inner:],
            g_y.contiguous(),
            dt_proj_bias,
            softplus=True,
            checkpoints=checkpoints,
            g_B=g_B,
            g_C=g_C,
            g_z=g_xz[..., d_inner:],
        )
        # the rank-8 products as (rank, rows) results: 3-4x faster than (rows, rank) in oneDNN
        g_delta_2d = g_delta.view(-1, d_inner)
        g_dt_low.copy_((dt_proj_weight.t() @ g_delta_2d.t()).t().view_as(g_dt_low))
        g_dt_proj_weight = (dt_low.reshape(-1, rank).t() @ g_delta_2d).t().contiguous()
        g_x_dbl_2d = g_x_dbl.view(-1, rank + 2 * n)
        g_u.view(-1, d_inner).addmm_(g_x_dbl_2d, x_proj_weight)
        g_x_proj_weight = g_x_dbl_2d.t() @ u.view(-1, d_inner)
        _, g_conv_weight, g_conv_bias = native_scan.conv_backward(
            xz[..., :d_inner], conv_weight, g_u, pre, g_x=g_xz[..., :d_inner]
        )
        return (
            g_xz,
            g_conv_weight,
            g_conv_bias,
            g_x_proj_weight,
            g_dt_proj_weight,
            g_dt_bias,
            g_A,
            g_D,
        )


def mamba_inner_time_major(
    xz: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor,
    x_proj_weight: Tensor,
    dt_proj_weight: Tensor,
    dt_proj_bias: Tensor,
    A: Tensor,
    D: Tensor,
) -> Tensor:
    """A Mamba block from in_proj's output ``xz`` (L, b, 2 d_inner) to out_proj's input (L, b,
    d_inner), fused on the C kernels (float32 CPU, where :func:`native_scan.native_applies`).

    Shape:
        conv_weight: (d_inner, K); x_proj_weight: (rank + 2 d_state, d_inner);
        dt_proj_weight: (d_inner, rank); A: (d_inner, d_state);
        conv_bias, dt_proj_bias, D: (d_inner,).
    """
    return _MambaInnerFn.apply(
        xz.contiguous(),
        conv_weight.contiguous(),
        conv_bias.contiguous(),
        x_proj_weight.contiguous(),
        dt_proj_weight.contiguous(),
        dt_proj_bias.contiguous(),
        A.contiguous(),
        D.contiguous(),
    )


def cuda_kernels_available() -> bool:
    """Whether ``mamba_ssm``'s CUDA selective scan imports (the ``cuda`` extra)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # ImportError, or a missing compiled extension inside the package
        return False
    return True


def causal_conv1d_kernel():
    """``causal_conv1d.causal_conv1d_fn`` (CUDA, conv widths 2-4), or None when not installed."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:  # ImportError, or a missing compiled extension inside the package
        return None
    return causal_conv1d_fn
