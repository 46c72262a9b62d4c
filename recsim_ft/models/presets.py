"""Model configuration: one dataclass, and the named presets (``PRESETS``: ``paper``,
``paper_relu_head``, ``quick`` and ``ranking``), each a model and its training."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from recsim_ft.checks import check_choice, check_int

#: The encoders a tower can use: FT-Mamba, FT-Transformer, or an MLP over the flattened tokens.
EMBEDDERS = ("mamba", "transformer", "mlp")
#: The Mamba block's compute paths (see ``recsim_ft.models.mamba.kernel_path``); all compute the
#: same function, so this field never changes what a model is, only where it runs fast.
KERNEL_PATHS = ("auto", "triton", "mamba_ssm", "native", "torch")
FINAL_ACTIVATIONS = ("none", "relu")
#: The activation between the head's layers: the paper's ReLU, or GELU, which still passes a
#: gradient where its input is below 0, so a unit cannot die for good (see
#: ``ModelConfig.head_activation``).
HEAD_ACTIVATIONS = ("relu", "gelu")
#: The ``ModelConfig`` fields that are sizes (widths, depths, counts): positive integers.
_SIZES = (
    "d_token",
    "mamba_layers",
    "d_state",
    "d_conv",
    "expand",
    "transformer_layers",
    "n_heads",
    "d_ffn",
    "mlp_layers",
    "mlp_hidden",
)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a :class:`~recsim_ft.models.TwoTower` besides its schemas.

    The defaults are the ``paper`` preset: d_token 128 (the width that reproduces the paper's
    parameter counts: 479,232 per Mamba embedder, 1,186,048 per Transformer embedder), Mamba 4
    layers with d_state 16, d_conv 16, expand 2, dt_rank ceil(128/16) = 8; Transformer 2 layers,
    2 heads, feed-forward 2048, no dropout; head 64 -> 32 on each tower. ``seed`` fixes the
    initial weights.

    ``final_activation``: ``"none"`` (default) ends each head with its last Linear; ``"relu"``
    adds the ReLU the paper's heads end with. Why not the paper's: scores of two ReLU towers are
    never negative, and trained by MSE on rewards that are mostly <= 0 (Spotify) the last ReLUs
    die, every score becomes 0 and training stops. Dropping that one ReLU keeps the parameter
    count.

    ``head_activation``: ``"gelu"`` (default) or the paper's ``"relu"`` between the head's
    layers. Why not the paper's: in the plateau at the start of training a tower's rows barely
    differ (the FT-Transformer's [CLS] output varies by 3-5% of its norm over users) and the
    towers shrink; Adam's noisy steps then push every hidden ReLU of one head below 0 for every
    row, that tower's output becomes one constant vector, its gradient is exactly 0 and training
    never leaves the plateau (Spotify, FT-Transformer: 2 of 5 reported seeds; see
    docs/results/baseline_diagnosis.md). GELU keeps the parameter count.

    ``mamba_residual``: ``False`` (default) makes a Mamba layer LayerNorm(block(x)), the paper's
    "Mamba block followed by a LayerNorm"; ``True`` makes it LayerNorm(x + block(x)) as in
    mamba_ssm's ``Block``. Why the paper's: with the residual the [CLS] token's own value, the
    same for every user, dominates the last position, so a fresh model's user embeddings barely
    differ between users and training starts on a plateau (see CHANGELOG.md, version 0.1.0).
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
    head_activation: str = "gelu"
    mamba_residual: bool = False
    kernels: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("ModelConfig.embedder", self.embedder, EMBEDDERS)
        check_choice("ModelConfig.kernels", self.kernels, KERNEL_PATHS)
        check_choice("ModelConfig.final_activation", self.final_activation, FINAL_ACTIVATIONS)
        check_choice("ModelConfig.head_activation", self.head_activation, HEAD_ACTIVATIONS)
        for name in _SIZES:
            check_int(f"ModelConfig.{name}", getattr(self, name), low=1)
        check_int("ModelConfig.dt_rank", self.dt_rank, low=1, allow_none=True)
        if not self.head_dims:
            raise ValueError("ModelConfig.head_dims must hold at least one width, got ()")
        object.__setattr__(
            self,
            "head_dims",
            tuple(check_int("ModelConfig.head_dims", d, low=1) for d in self.head_dims),
        )
        if self.d_token % self.n_heads:
            raise ValueError(f"d_token {self.d_token} is not divisible by n_heads {self.n_heads}")

    @property
    def d_out(self) -> int:
        """Width of the tower outputs whose inner product is the score."""
        return self.head_dims[-1]


@dataclass(frozen=True)
class Preset:
    """A named model and its training: ``model`` builds the towers, ``training`` overrides
    fields of ``recsim_ft.train.TrainConfig`` (empty: the paper's protocol; the trainer checks
    the values, a test checks every preset's)."""

    model: ModelConfig
    training: dict[str, Any] = field(default_factory=dict, hash=False)


#: Every preset, model and training side in one table. ``paper``: the paper's model and
#: protocol. ``ranking``: the paper's model trained for ranking: the softmax over the catalogue
#: (in-batch with the logQ correction beyond ``recsim_ft.losses.CATALOGUE_SOFTMAX_MAX`` items),
#: the popularity prior where the negatives come from the batch, and early stopping on
#: validation users' NDCG@10, chosen by ``recsim-ft tune`` on validation users
#: (docs/results/ranking_preset.md has the evidence). ``paper_relu_head``: the paper's ReLU
#: between the head's layers, as every version before 0.2 had it. ``quick``: a small model.
PRESETS: dict[str, Preset] = {
    "paper": Preset(ModelConfig()),
    "ranking": Preset(
        ModelConfig(),
        {
            "loss": "softmax",
            "lr": 3e-4,
            "batch_size": 128,
            "steps": 2000,
            "schedule": "cosine",
            "popularity_prior": "auto",
            "select_metric": "NDCG@10",
        },
    ),
    "paper_relu_head": Preset(ModelConfig(head_activation="relu")),
    "quick": Preset(
        ModelConfig(
            d_token=32,
            mamba_layers=2,
            d_state=8,
            d_conv=4,
            transformer_layers=1,
            d_ffn=64,
            mlp_hidden=64,
        )
    ),
}


def preset_of(name: str) -> Preset:
    """The preset called ``name``, or an error naming the presets there are."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


#: Fields added after model files and run directories were first written, with the value every
#: earlier file had (older model files and runs were all built with the residual Mamba layer,
#: and with ReLU heads).
LEGACY_DEFAULTS = {"mamba_residual": True, "head_activation": "relu"}


def config_from_dict(saved: dict) -> ModelConfig:
    """A ``ModelConfig`` from its saved ``asdict`` form, older files included (``LEGACY_DEFAULTS``;
    their ``use_cuda_kernels=True`` is ``kernels="mamba_ssm"``)."""
    saved = dict(saved)
    if saved.pop("use_cuda_kernels", None):
        saved.setdefault("kernels", "mamba_ssm")
    return ModelConfig(**{**LEGACY_DEFAULTS, **saved})


def make_config(
    preset: str | ModelConfig = "paper", embedder: str | None = None, **overrides
) -> ModelConfig:
    """A preset (by name) with ``embedder`` and any ``ModelConfig`` field overridden.

    >>> make_config("paper", "transformer", d_token=192).d_token
    192
    """
    config = preset if isinstance(preset, ModelConfig) else preset_of(preset).model
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown model option(s) {unknown}; known: {sorted(known)}")
    if embedder is not None:
        overrides["embedder"] = embedder
    return replace(config, **overrides)
