"""Model configuration: one dataclass, and the named presets ``paper`` and ``quick``."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

EMBEDDERS = ("mamba", "transformer", "mlp")
#: The Mamba block's compute paths (see ``recsim_ft.models.mamba.kernel_path``); all compute the
#: same function, so this field never changes what a model is, only where it runs fast.
KERNEL_PATHS = ("auto", "triton", "mamba_ssm", "native", "torch")
FINAL_ACTIVATIONS = ("none", "relu")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a :class:`~recsim_ft.models.TwoTower` besides its schemas.

    The defaults are the ``paper`` preset: d_token 128 (the width that reproduces the paper's
    parameter counts, see PAPER.md), Mamba 4 layers with d_state 16, d_conv 16, expand 2,
    dt_rank ceil(128/16) = 8; Transformer 2 layers, 2 heads, feed-forward 2048, no dropout;
    head 64 -> 32 on each tower. ``seed`` fixes the initial weights.

    ``final_activation``: the paper ends both heads with a ReLU. We measured that, trained with
    MSE on targets that are mostly <= 0 (Spotify: 71%), the last ReLUs of both towers die within
    a few hundred steps: every score becomes exactly 0 and training stops (HR@1 frozen at the
    item-order ranking). Our default, ``"none"``, drops that one ReLU (same parameter count);
    ``"relu"`` is the paper's head as written.

    ``mamba_residual``: a Mamba layer is LayerNorm(block(x)) by default, the paper's "Mamba
    block followed by a LayerNorm"; ``True`` makes it LayerNorm(x + block(x)) as in mamba_ssm's
    ``Block``. We measured why the paper's layer matters: with the residual, the [CLS] token's
    own (user-independent) value dominates the last position, the user embeddings of a fresh
    model barely differ between users (std 0.003-0.005 vs 0.10-0.14 without it), and training
    sits on a plateau (vaccine at lr 1e-5: validation NDCG@10 0.25 vs 0.96 without it).
    """

    embedder: str = "mamba"
    d_token: int = 128
    mamba_layers: int = 4
    d_state: int = 16
    d_conv: int = 16
    expand: int = 2
    dt_rank: int | None = None
    transformer_layers: int = 2
    n_heads: int = 2
    d_ffn: int = 2048
    mlp_layers: int = 2
    mlp_hidden: int = 256
    head_dims: tuple[int, ...] = (64, 32)
    final_activation: str = "none"
    mamba_residual: bool = False
    kernels: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.embedder not in EMBEDDERS:
            raise ValueError(f"embedder must be one of {EMBEDDERS}, got {self.embedder!r}")
        if self.kernels not in KERNEL_PATHS:
            raise ValueError(f"kernels must be one of {KERNEL_PATHS}, got {self.kernels!r}")
        if self.final_activation not in FINAL_ACTIVATIONS:
            raise ValueError(f"final_activation must be one of {FINAL_ACTIVATIONS}, got {self.final_activation!r}")
        object.__setattr__(self, "head_dims", tuple(int(d) for d in self.head_dims))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("seed", "embedder", "head_dims", "final_activation", "kernels", "dt_rank",
                              "mamba_residual") and value < 1:
                raise ValueError(f"ModelConfig.{f.name} must be >= 1, got {value!r}")
        if not self.head_dims or min(self.head_dims) < 1:
            raise ValueError(f"ModelConfig.head_dims must be positive widths, got {self.head_dims!r}")
        if self.d_token % self.n_heads:
            raise ValueError(f"d_token {self.d_token} is not divisible by n_heads {self.n_heads}")

    @property
    def d_out(self) -> int:
        """Width of the tower outputs whose inner product is the score."""
        return self.head_dims[-1]


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "quick": ModelConfig(d_token=32, mamba_layers=2, d_state=8, d_conv=4, transformer_layers=1,
                         d_ffn=64, mlp_hidden=64),
}


#: Fields added after model files and run directories were first written, with the value every
#: earlier file had (older model files and runs were all built with the residual Mamba layer).
LEGACY_DEFAULTS = {"mamba_residual": True}


def config_from_dict(saved: dict) -> ModelConfig:
    """A ``ModelConfig`` from its saved ``asdict`` form, older files included (``LEGACY_DEFAULTS``;
    their ``use_cuda_kernels=True`` is ``kernels="mamba_ssm"``)."""
    saved = dict(saved)
    if saved.pop("use_cuda_kernels", None):
        saved.setdefault("kernels", "mamba_ssm")
    return ModelConfig(**{**LEGACY_DEFAULTS, **saved})


def make_config(preset: str | ModelConfig = "paper", embedder: str | None = None, **overrides) -> ModelConfig:
    """A preset (by name) with ``embedder`` and any ``ModelConfig`` field overridden.

    >>> make_config("paper", "transformer", d_token=192).d_token
    192
    """
    if isinstance(preset, ModelConfig):
        config = preset
    elif preset in PRESETS:
        config = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown model option(s) {unknown}; known: {sorted(known)}")
    if embedder is not None:
        overrides["embedder"] = embedder
    return replace(config, **overrides)
