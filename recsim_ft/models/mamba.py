"""The Mamba block (``mamba_ssm.modules.mamba_simple.Mamba`` layout) and the FT-Mamba embedder.

The block's parameters have exactly mamba_simple's names, shapes and initialisation, so a state
dict moves between this pure-PyTorch block and the CUDA kernels of the ``cuda`` extra.

The CUDA path (``mamba_ssm.selective_scan_fn``, plus ``causal_conv1d_fn`` for conv widths 2-4,
imported only when used) follows mamba_simple's own non-fused path; it has not been run in this
repository's CI, which has no GPU (``tests/test_models.py`` checks it against the pure path
wherever CUDA and the kernels exist). On CPU the scan and conv run in :mod:`recsim_ft.models.scan`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsim_ft.models import native_scan
from recsim_ft.models.scan import (
    causal_conv1d_kernel,
    causal_conv1d_time_major,
    cuda_kernels_available,
    mamba_inner_time_major,
    selective_scan_time_major,
)


def _at_least_float32(t: Tensor) -> Tensor:
    """The SSM parameters in float32 under half-precision training, as mamba_simple keeps them,
    and in float64 in a float64 block."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class MambaBlock(nn.Module):
    """One selective-state-space block (Gu & Dao 2023), as in mamba_simple::

        x ─ in_proj ─┬─ x ─ causal conv1d ─ SiLU ─┬─ x_proj ─ (dt, B, C) ─┐
                     │                            └────────── u ──────────┴─ selective scan ─┐
                     └─ z ─────────────────────────────────────────────── * SiLU(z) ─────────┴─ out_proj

    Args:
        d_model: token width. d_state: SSM state size per channel. d_conv: causal conv width.
        expand: d_inner = expand * d_model. dt_rank: rank of the dt projection (None: ceil(d/16)).
        dt_min, dt_max, dt_init_floor: range of the initial step sizes softplus(dt_proj.bias).
        use_cuda_kernels: True = mamba_ssm / causal_conv1d kernels (error if missing), False =
            pure PyTorch, None = kernels only when importable and the input is on CUDA.

    Shape:
        input and output: (batch, L, d_model).

    Examples:
        >>> block = MambaBlock(d_model=16, d_state=4, d_conv=4)
        >>> block(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
        >>> sum(p.numel() for p in MambaBlock(d_model=128, d_state=16, d_conv=16).parameters())
        119552
    """

    def __init__(self, *, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, use_cuda_kernels: bool | None = None) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.use_cuda_kernels = use_cuda_kernels
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self._dt_range = (dt_min, dt_max, dt_init_floor)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mamba_simple's initialisation of the SSM parameters (the linears keep torch's default)."""
        dt_min, dt_max, floor = self._dt_range
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        # step sizes log-uniform in [dt_min, dt_max]; the bias is their inverse softplus
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
            self.D.fill_(1.0)

    def _use_kernels(self, x: Tensor) -> bool:
        if self.use_cuda_kernels is None:
            return x.is_cuda and cuda_kernels_available()
        if self.use_cuda_kernels and not cuda_kernels_available():
            raise RuntimeError("use_cuda_kernels=True needs the 'cuda' extra (mamba-ssm, causal-conv1d) "
                               "built with its CUDA kernels; see pyproject.toml")
        return self.use_cuda_kernels

    def forward(self, x: Tensor) -> Tensor:
        assert x.dim() == 3, f"expected (batch, L, d_model), got {tuple(x.shape)}"
        return self.forward_time_major(x.transpose(0, 1)).transpose(0, 1)

    def forward_time_major(self, x: Tensor) -> Tensor:
        """The same block on (L, batch, d_model) input: the pure-PyTorch path computes in this
        layout end to end, so stacked blocks never copy their activations to transpose them."""
        xz = self.in_proj(x)  # (L, b, 2 d_inner): x and z side by side
        if self._use_kernels(x):
            return self._forward_kernels(*xz.chunk(2, dim=-1))
        A = -torch.exp(_at_least_float32(self.A_log))
        if native_scan.native_applies(xz, *self.parameters()):
            return self.out_proj(mamba_inner_time_major(
                xz, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                self.dt_proj.bias, A, self.D))
        xs, z = xz.chunk(2, dim=-1)
        u = F.silu(causal_conv1d_time_major(xs, self.conv1d.weight.squeeze(1), self.conv1d.bias))
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # the bias goes into the scan, as in mamba_simple
        y = selective_scan_time_major(u, delta, A, B, C, _at_least_float32(self.D), z=z,
                                      delta_bias=_at_least_float32(self.dt_proj.bias), delta_softplus=True)
        return self.out_proj(y)

    def _forward_kernels(self, xs: Tensor, z: Tensor) -> Tensor:
        """mamba_ssm's CUDA selective scan (imported only here), in its (batch, d, L) layout. The
        conv uses causal_conv1d's kernel where it exists (widths 2-4 only); wider convs, such
        as the paper's width 16, use cuDNN's depthwise conv1d, as mamba_simple does without it."""
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        xs, z = xs.permute(1, 2, 0).contiguous(), z.permute(1, 2, 0).contiguous()
        conv_kernel = causal_conv1d_kernel() if 2 <= self.d_conv <= 4 else None
        if conv_kernel is not None:
            u = conv_kernel(xs, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        else:
            u = F.silu(self.conv1d(xs)[..., : xs.shape[-1]])
        dt, B, C = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2).contiguous()
        y = selective_scan_fn(u, delta, -torch.exp(self.A_log.float()), B.transpose(1, 2).contiguous(),
                              C.transpose(1, 2).contiguous(), self.D.float(), z=z,
                              delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y.permute(2, 0, 1))


class MambaEmbedder(nn.Module):
    """FT-Mamba encoder: ``n_layers`` x (x = LayerNorm(MambaBlock(x))), output = last token.

    The LayerNorm after the block's output projection is the paper's (their embeddings diverged
    without it); ``residual=True`` makes a layer LayerNorm(x + MambaBlock(x)) as in mamba_ssm's
    ``Block`` (see ``ModelConfig.mamba_residual`` for why the default is the paper's). The last
    token is the [CLS] token, the only one a causal model has let see every feature.

    Shape:
        input: (batch, n_tokens, d_model); output: (batch, d_model).

    Examples:
        >>> enc = MambaEmbedder(d_model=16, n_layers=2, d_state=4, d_conv=4)
        >>> enc(torch.randn(3, 7, 16)).shape
        torch.Size([3, 16])
    """

    def __init__(self, *, d_model: int, n_layers: int, residual: bool = False, **block_kwargs) -> None:
        super().__init__()
        self.residual = residual
        self.blocks = nn.ModuleList(MambaBlock(d_model=d_model, **block_kwargs) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))

    @property
    def d_out(self) -> int:
        return self.norms[0].normalized_shape[0]

    def forward(self, tokens: Tensor) -> Tensor:
        assert tokens.dim() == 3, f"expected (batch, n_tokens, d_model), got {tuple(tokens.shape)}"
        x = tokens.transpose(0, 1)  # time-major inside, see MambaBlock.forward_time_major
        for block, norm in zip(self.blocks, self.norms, strict=True):
            x = norm(x + block.forward_time_major(x) if self.residual else block.forward_time_major(x))
        return x[-1]
