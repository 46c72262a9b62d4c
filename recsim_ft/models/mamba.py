"""The Mamba block (``mamba_ssm.modules.mamba_simple.Mamba`` layout) and the FT-Mamba embedder.

The block's parameters have exactly mamba_simple's names, shapes and initialisation, so a state
dict moves between this block and ``mamba_ssm``. What runs between ``in_proj`` and
``out_proj`` is chosen in one place, :func:`kernel_path`:

- ``"triton"``: CUDA, float32: the fused kernels of :mod:`recsim_ft.models.triton_mamba`
  (the ``gpu`` extra), built for short sequences and large batches;
- ``"mamba_ssm"``: CUDA: ``mamba_ssm``'s selective scan (the ``cuda`` extra), as
  mamba_simple's non-fused path;
- ``"native"``: CPU, float32: the fused C kernels of :mod:`recsim_ft.models.native_scan`;
- ``"torch"``: anywhere: the block composed of separate ops, with the hand-written scan and
  conv of :mod:`.scan` (which use the C kernels for float32 CPU tensors where built); in
  float64 it is the reference the other paths are tested against.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsim_ft.models import native_scan
from recsim_ft.models.presets import KERNEL_PATHS
from recsim_ft.models.scan import (
    causal_conv1d_kernel,
    causal_conv1d_time_major,
    cuda_kernels_available,
    mamba_inner_time_major,
    selective_scan_reference,
    selective_scan_time_major,
)


@lru_cache(maxsize=1)
def triton_status() -> tuple[bool, str]:
    """Whether the Triton kernels import here, and the triton version or why not."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install 'recsim-ft[gpu]')"
    try:
        import triton

        from recsim_ft.models import triton_mamba  # noqa: F401  (compiles nothing yet)
    except Exception as err:  # a broken triton install fails in many ways; all mean "not usable"
        return False, f"triton does not import: {type(err).__name__}: {err}"
    return True, f"triton {triton.__version__}"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def kernel_path(x: Tensor, requested: str = "auto") -> str:
    """The path a block input ``x`` takes (see the module docstring); ``requested`` other than
    "auto" is checked and returned, or refused with the reason. ``RECSIM_FT_KERNELS`` in the
    environment replaces "auto" (e.g. ``torch`` to debug against the reference)."""
    if requested == "auto":
        requested = os.environ.get("RECSIM_FT_KERNELS", "auto")
    if requested not in KERNEL_PATHS:
        raise ValueError(f"kernels must be one of {KERNEL_PATHS}, got {requested!r}")
    float32 = x.dtype == torch.float32
    if requested == "auto":
        if x.is_cuda and float32 and triton_status()[0]:
            return "triton"
        if x.is_cuda and cuda_kernels_available():
            return "mamba_ssm"
        if not x.is_cuda and float32 and native_scan.native_library() is not None:
            return "native"
        return "torch"
    why_not = {
        "triton": None
        if float32 and (x.is_cuda or _interpreting()) and triton_status()[0]
        else "needs float32 CUDA tensors (or TRITON_INTERPRET=1) and triton "
        f"({triton_status()[1]})",
        "mamba_ssm": None
        if x.is_cuda and cuda_kernels_available()
        else "needs CUDA tensors and the 'cuda' extra (mamba-ssm, causal-conv1d) built with its "
        "kernels",
        "native": None
        if not x.is_cuda and float32 and native_scan.native_library() is not None
        else f"needs float32 CPU tensors and the C kernel ({native_scan.native_status()[1]})",
    }.get(requested)
    if why_not:
        raise RuntimeError(f"kernels={requested!r} {why_not}; got a {x.dtype} tensor on {x.device}")
    return requested


def _at_least_float32(t: Tensor) -> Tensor:
    """The SSM parameters in float32 under half-precision training, as mamba_simple keeps them,
    and in float64 in a float64 block."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class MambaBlock(nn.Module):
    """One selective-state-space block (Gu & Dao 2023), as in mamba_simple::

        x ─ in_proj ┬ x ─ causal conv1d ─ SiLU ┬ x_proj ─ (dt, B, C) ┐
                    │                          └──────── u ──────────┴ selective scan ┐
                    └ z ────────────────────────────────────────────── * SiLU(z) ─────┴ out_proj

    Args:
        d_model: token width. d_state: SSM state size per channel. d_conv: causal conv width.
        expand: d_inner = expand * d_model. dt_rank: rank of the dt projection (None: ceil(d/16)).
        dt_min, dt_max, dt_init_floor: range of the initial step sizes softplus(dt_proj.bias).
        kernels: the compute path, one of ``KERNEL_PATHS`` (see :func:`kernel_path`); every path
            computes the same function and takes the same state dict.

    Shape:
        input and output: (batch, L, d_model).

    Examples:
        >>> block = MambaBlock(d_model=16, d_state=4, d_conv=4)
        >>> block(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
        >>> sum(p.numel() for p in MambaBlock(d_model=128, d_state=16, d_conv=16).parameters())
        119552
    """

    def __init__(
        self,
        *,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        kernels: str = "auto",
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        if kernels not in KERNEL_PATHS:
            raise ValueError(f"kernels must be one of {KERNEL_PATHS}, got {kernels!r}")
        self.kernels = kernels
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=True,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self._dt_range = (dt_min, dt_max, dt_init_floor)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mamba_simple's initialisation of the SSM parameters (the linears keep torch's
        default)."""
        dt_min, dt_max, floor = self._dt_range
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        # step sizes log-uniform in [dt_min, dt_max]; the bias is their inverse softplus
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        dt = dt.clamp(min=floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.A_log.copy_(
                torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(
                    self.d_inner, 1
                )
            )
            self.D.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        assert x.dim() == 3, f"expected (batch, L, d_model), got {tuple(x.shape)}"
        return self.forward_time_major(x.transpose(0, 1)).transpose(0, 1)

    def forward_time_major(self, x: Tensor, last_only: bool = False) -> Tensor:
        """The same block on (L, batch, d_model) input: every path computes in this layout, so
        stacked blocks never copy their activations to transpose them.

        ``last_only=True`` returns the last step's output alone, (1, batch, d_model), the same
        values: the scan still runs over every step (the state needs them), but the gate ``z``
        and ``out_proj`` only at the last one, which the embedder's last layer is all it reads.
        """
        xz = self._in_proj(x, last_only)  # (L, b, 2 d_inner): x and z side by side
        y = self._inner(xz)
        return self.out_proj(y[-1:] if last_only else y)

    def _in_proj(self, x: Tensor, last_only: bool) -> Tensor:
        """in_proj's output; with ``last_only`` its ``z`` half only at the last step (zeros
        before it: their outputs are never read, so they get no gradient either)."""
        if not last_only:
            return self.in_proj(x)
        w_x, w_z = self.in_proj.weight.split(self.d_inner)
        z = F.pad(F.linear(x[-1:], w_z), (0, 0, 0, 0, x.shape[0] - 1, 0))
        return torch.cat([F.linear(x, w_x), z], dim=-1)

    def _inner(self, xz: Tensor) -> Tensor:
        """Everything between in_proj and out_proj, on the path :func:`kernel_path` picks.
        Under autocast (bf16 training) it runs in float32, as mamba_ssm's ``custom_fwd`` does:
        the scan's state and decays need float32's range and precision."""
        if torch.is_autocast_enabled(xz.device.type):
            with torch.autocast(xz.device.type, enabled=False):
                return self._inner(xz.float())
        if torch.compiler.is_exporting():  # torch.export / ONNX: plain ops, no custom kernel
            return self._inner_channels_first(*xz.chunk(2, dim=-1), selective_scan_reference)
        path = kernel_path(xz, self.kernels)
        if path == "mamba_ssm":
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            return self._inner_channels_first(*xz.chunk(2, dim=-1), selective_scan_fn)
        conv_weight = self.conv1d.weight.squeeze(1)
        # the fused paths take the same weights; Triton takes A_log, the C kernels A itself
        conv_bias, dt_weight, dt_bias = self.conv1d.bias, self.dt_proj.weight, self.dt_proj.bias
        weights = (conv_weight, conv_bias, self.x_proj.weight, dt_weight, dt_bias)
        if path == "triton":
            from recsim_ft.models.triton_mamba import mamba_inner  # imports triton: only here

            return mamba_inner(xz, *weights, self.A_log, self.D)
        A = -torch.exp(_at_least_float32(self.A_log))
        if path == "native":
            return mamba_inner_time_major(xz, *weights, A, self.D)
        xs, z = xz.chunk(2, dim=-1)
        u = F.silu(causal_conv1d_time_major(xs, conv_weight, self.conv1d.bias))
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # the bias goes into the scan, as in mamba_simple
        return selective_scan_time_major(
            u,
            delta,
            A,
            B,
            C,
            _at_least_float32(self.D),
            z=z,
            delta_bias=_at_least_float32(self.dt_proj.bias),
            delta_softplus=True,
        )

    def _inner_channels_first(self, xs: Tensor, z: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        """The block's middle in mamba_ssm's (batch, d, L) layout around ``scan`` (mamba_ssm's
        CUDA ``selective_scan_fn``, or :func:`selective_scan_reference`'s plain ops, which
        ``torch.export`` traces). The conv uses causal_conv1d's kernel where it exists (CUDA,
        widths 2-4 only); elsewhere, as for the paper's width 16, the depthwise ``conv1d``, as
        mamba_simple does without it."""
        xs, z = xs.permute(1, 2, 0).contiguous(), z.permute(1, 2, 0).contiguous()
        conv_kernel = causal_conv1d_kernel() if xs.is_cuda and 2 <= self.d_conv <= 4 else None
        if conv_kernel is not None:
            u = conv_kernel(xs, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        else:
            u = F.silu(self.conv1d(xs)[..., : xs.shape[-1]])
        dt, B, C = self.x_proj(u.transpose(1, 2)).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2).contiguous()
        y = scan(
            u,
            delta,
            -torch.exp(_at_least_float32(self.A_log)),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            _at_least_float32(self.D),
            z=z,
            delta_bias=_at_least_float32(self.dt_proj.bias),
            delta_softplus=True,
        )
        return y.permute(2, 0, 1)


class MambaEmbedder(nn.Module):
    """FT-Mamba encoder: ``n_layers`` x (x = LayerNorm(MambaBlock(x))), output = last token.

    The LayerNorm after the block's output projection is the paper's (their embeddings diverged
    without it); ``residual=True`` makes a layer LayerNorm(x + MambaBlock(x)) as in mamba_ssm's
    ``Block`` (see ``ModelConfig.mamba_residual`` for why the default is the paper's). The last
    token is the [CLS] token, the only one a causal model has let see every feature. The last
    layer computes its gate, ``out_proj`` and norm at that token alone (the same output for less
    work; its scan still runs over every token).

    Shape:
        input: (batch, n_tokens, d_model); output: (batch, d_model).

    Examples:
        >>> enc = MambaEmbedder(d_model=16, n_layers=2, d_state=4, d_conv=4)
        >>> enc(torch.randn(3, 7, 16)).shape
        torch.Size([3, 16])
    """

    def __init__(
        self, *, d_model: int, n_layers: int, residual: bool = False, **block_kwargs
    ) -> None:
        super().__init__()
        self.residual = residual
        self.blocks = nn.ModuleList(
            MambaBlock(d_model=d_model, **block_kwargs) for _ in range(n_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))

    @property
    def d_out(self) -> int:
        return self.norms[0].normalized_shape[0]

    def forward(self, tokens: Tensor) -> Tensor:
        assert tokens.dim() == 3, f"expected (batch, n_tokens, d_model), got {tuple(tokens.shape)}"
        x = tokens.transpose(0, 1)  # time-major inside, see MambaBlock.forward_time_major
        last = len(self.blocks) - 1
        for i, (block, norm) in enumerate(zip(self.blocks, self.norms, strict=True)):
            y = block.forward_time_major(x, last_only=i == last)  # only the last token is read
            x = norm(x[-y.shape[0] :] + y if self.residual else y)
        return x[-1]
