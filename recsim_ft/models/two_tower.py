"""The two-tower recommender: user and item towers (tokenizer -> embedder -> head), score =
inner product of the tower outputs."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
import torch
from torch import Tensor, nn

from recsim_ft.models.io import read_model_file, write_model_file
from recsim_ft.models.mamba import MambaEmbedder
from recsim_ft.models.mlp import MLPEmbedder
from recsim_ft.models.presets import EMBEDDERS, ModelConfig, config_from_dict, make_config
from recsim_ft.models.tokenizer import FeatureTensors, FeatureTokenizer
from recsim_ft.models.transformer import TransformerEmbedder
from recsim_ft.schema import Batch, Feature, Schema

Rows = Batch | FeatureTensors


def build_embedder(config: ModelConfig, n_tokens: int) -> nn.Module:
    """The encoder named by ``config.embedder``; it maps (n, n_tokens, d_token) to (n, d_out)."""
    if config.embedder == "mamba":
        return MambaEmbedder(
            d_model=config.d_token,
            n_layers=config.mamba_layers,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            dt_rank=config.dt_rank,
            residual=config.mamba_residual,
            kernels=config.kernels,
        )
    if config.embedder == "transformer":
        return TransformerEmbedder(
            d_model=config.d_token,
            n_layers=config.transformer_layers,
            n_heads=config.n_heads,
            d_ffn=config.d_ffn,
        )
    return MLPEmbedder(
        n_tokens=n_tokens,
        d_token=config.d_token,
        d_hidden=config.mlp_hidden,
        n_layers=config.mlp_layers,
    )


#: The modules of ``ModelConfig.head_activation``.
HEAD_ACTIVATION_MODULES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class Tower(nn.Module):
    """tokenizer -> embedder -> head (one Linear per ``head_dims``, ``config.head_activation``
    between them, and a final ReLU only with ``config.final_activation="relu"``), for one side.

    With ``dedupe=True`` only the distinct rows of a CPU batch go through the tower (item batches
    repeat the same few items a lot), and the result is gathered back. On a GPU the search for
    distinct rows would wait for the device; ``TwoTower.score_logged`` avoids it there.

    Shape:
        input: FeatureTensors of n rows; output: (n, config.d_out).
    """

    def __init__(self, schema: Schema, config: ModelConfig, *, dedupe: bool = False) -> None:
        super().__init__()
        self.tokenizer = FeatureTokenizer(schema, d_token=config.d_token)
        self.embedder = build_embedder(config, self.tokenizer.n_tokens)
        widths = [self.embedder.d_out, *config.head_dims]
        activation = HEAD_ACTIVATION_MODULES[config.head_activation]
        head: list[nn.Module] = []
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            head += [nn.Linear(d_in, d_out), activation()]
        head.pop()  # the last Linear's output is the tower's, unless the paper's final ReLU:
        if config.final_activation == "relu":
            head.append(nn.ReLU())
        self.head = nn.Sequential(*head)
        self.dedupe = dedupe

    def forward(self, x: FeatureTensors) -> Tensor:
        if self.dedupe and x.n_rows > 1 and not x.numeric.is_cuda:  # torch.unique syncs a GPU
            rows = torch.cat([x.numeric.double(), x.categorical.double()], dim=1)
            distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
            if len(distinct) < x.n_rows:
                n_num = x.numeric.shape[1]
                x = FeatureTensors(distinct[:, :n_num].float(), distinct[:, n_num:].long())
                return self.embed(x)[inverse]
        return self.embed(x)

    def embed(self, x: FeatureTensors) -> Tensor:
        """The tower's output for every row, in at least float32 (under bf16 autocast the
        scores and losses built from it keep float32's precision); ``forward`` without the
        search for distinct rows, so a traced graph (ONNX) has no data-dependent branch."""
        out = self.head(self.embedder(self.tokenizer(x)))
        return out.to(torch.promote_types(out.dtype, torch.float32))


class TwoTower(nn.Module):
    """FT-Mamba / FT-Transformer / MLP two-tower recommender.

    ``model(users, items)`` scores paired rows; ``score_all(users)`` scores every cached item
    for each user with one matrix product. Every method takes a ``Batch`` or ``FeatureTensors``.

    Shape:
        users: n rows, items: n rows -> forward: (n,); embed_*: (rows, config.d_out);
        score_all: (n_users, n_items).

    Examples:
        >>> user = Schema((Feature("age", "numeric"), Feature("sex", "categorical", ("f", "m"))))
        >>> item = Schema((Feature("song", "categorical", tuple("abcde")),))
        >>> model = TwoTower.from_schemas(user, item, embedder="mamba", preset="quick")
        >>> users = Batch([[25.0], [60.0]], [[0], [1]], [0, 1])
        >>> items = Batch([[]] * 5, [[i] for i in range(5)], range(5))
        >>> model(users, items[[3, 4]]).shape, model.score_all(users, items).shape
        (torch.Size([2]), torch.Size([2, 5]))

    ``item_prior`` (empty, or one value per item of the catalogue): added to every score of
    that item, in ``score_all`` and ``forward``; the popularity prior ``T log q`` a softmax
    trained with ``TrainConfig.popularity_prior`` sets (``recsim_ft.losses``), saved with the
    model.
    """

    def __init__(self, user_schema: Schema, item_schema: Schema, config: ModelConfig) -> None:
        super().__init__()
        self.user_schema, self.item_schema, self.config = user_schema, item_schema, config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.user_tower = Tower(user_schema, config)
            self.item_tower = Tower(item_schema, config, dedupe=True)
        # not in state_dict: the trainer's checkpoints recompute it from the log; save() keeps it
        self.register_buffer("item_prior", torch.zeros(0), persistent=False)
        #: the digest of the item table the prior belongs to (``set_item_prior``)
        self.catalogue: str | None = None
        self._item_cache: tuple[Tensor, int] | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_schemas(
        cls,
        user_schema: Schema,
        item_schema: Schema,
        embedder: str = "mamba",
        preset: str | ModelConfig = "paper",
        **overrides,
    ) -> TwoTower:
        return cls(user_schema, item_schema, make_config(preset, embedder, **overrides))

    @classmethod
    def from_env(
        cls, env: gym.Env, embedder: str = "mamba", preset: str | ModelConfig = "paper", **overrides
    ) -> TwoTower:
        """A model for ``env``'s user and item schemas (``env`` may be wrapped)."""
        env = getattr(env, "unwrapped", env)
        return cls.from_schemas(env.user_schema, env.item_schema, embedder, preset, **overrides)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- scoring --------------------------------------------------------------------------------
    def embed_users(self, users: Rows) -> Tensor:
        return self._embed(self.user_tower, users)

    def embed_items(self, items: Rows) -> Tensor:
        return self._embed(self.item_tower, items)

    def _embed(self, tower: Tower, rows: Rows) -> Tensor:
        rows = FeatureTensors.coerce(rows, self.device)
        tower.tokenizer.check_finite(rows)
        return tower(rows)

    def set_item_prior(self, prior: Tensor | None, catalogue: str | None = None) -> TwoTower:
        """Add ``prior[j]`` to every score of item ``j`` from now on (None: no prior).
        ``catalogue``: the digest (``Batch.digest``) of the item table whose rows the prior
        belongs to; saved with the model, and another catalogue is refused
        (:meth:`check_catalogue`)."""
        prior = torch.zeros(0) if prior is None else torch.as_tensor(prior, dtype=torch.float32)
        if prior.ndim != 1 or not torch.isfinite(prior).all():
            raise ValueError("the item prior must be one finite value per item")
        self.item_prior = prior.to(self.device)
        self.catalogue = catalogue if len(prior) else None
        return self

    def check_catalogue(self, item_table: Batch) -> None:
        """Refuse an item table other than the one the item prior belongs to: the prior of item
        ``j`` would be another item's (the item features alone fit any catalogue of the same
        schema, so a model without a prior takes any)."""
        if not len(self.item_prior):
            return
        if len(item_table) != len(self.item_prior):
            raise ValueError(
                f"the model's item prior has {len(self.item_prior):,} items, the catalogue "
                f"{len(item_table):,}: it belongs to another catalogue; re-train on this one, or "
                "drop the prior (set_item_prior(None))"
            )
        if self.catalogue is not None and item_table.digest() != self.catalogue:
            raise ValueError(
                f"the model's item prior belongs to another catalogue of {len(item_table):,} "
                f"items (item table digest {self.catalogue[:12]}, this one "
                f"{item_table.digest()[:12]}): item j's prior would be another item's; "
                "re-train on this catalogue, or drop the prior (set_item_prior(None))"
            )

    def _with_prior(self, scores: Tensor, item_ids: Tensor | None = None) -> Tensor:
        """``scores`` (..., n_items) of the whole catalogue, or of items ``item_ids``, plus the
        item prior."""
        prior = self.item_prior
        if not len(prior):
            return scores
        if item_ids is None:
            if scores.shape[-1] != len(prior):
                raise ValueError(
                    f"this model adds a prior to each of its catalogue's {len(prior):,} items "
                    f"and cannot score {scores.shape[-1]:,}: score the whole item table"
                )
            return scores + prior
        return scores + prior[item_ids]

    def forward(self, users: Rows, items: Rows) -> Tensor:
        u, i = self.embed_users(users), self.embed_items(items)
        if u.shape[0] != i.shape[0]:
            raise ValueError(
                f"forward scores paired rows: got {u.shape[0]} users and {i.shape[0]} items"
            )
        if not len(self.item_prior):
            return (u * i).sum(-1)
        if not isinstance(items, Batch) or (items.ids < 0).any():
            raise ValueError(
                "this model adds a prior per item: pass the items as a Batch with their ids"
            )
        return self._with_prior((u * i).sum(-1), torch.as_tensor(items.ids, device=self.device))

    def score_logged(
        self, users: FeatureTensors, item_ids: Tensor, item_table: FeatureTensors
    ) -> Tensor:
        """(n,) scores of logged pairs: user row i with item ``item_ids[i]`` of ``item_table``;
        the trainer's call, on inputs it checked once (see ``FeatureTokenizer.check_finite``).

        On a GPU, when the table has no more rows than the batch, the item tower embeds the whole
        table and each pair picks its row by a one-hot product: fixed shapes, no wait for the
        device, a deterministic backward, and fewer item rows than a large batch has, which a
        captured CUDA graph needs. Elsewhere the item tower embeds the batch's item rows.
        """
        u = self.user_tower(users)
        if users.numeric.is_cuda and item_table.n_rows <= len(item_ids):
            one_hot = (
                item_ids[:, None] == torch.arange(item_table.n_rows, device=item_ids.device)
            ).to(u.dtype)
            i = one_hot @ self.item_tower(item_table)
        else:
            i = self.item_tower(FeatureTensors(*(t[item_ids] for t in item_table)))
        return (u * i).sum(-1)

    def _parameter_version(self) -> int:
        # in-place updates (optimizer steps, load_state_dict) bump every touched tensor's version
        return sum(p._version for p in self.parameters())

    def cache_items(self, item_table: Rows) -> TwoTower:
        """Embed ``item_table`` once for :meth:`score_all`; any later parameter update or a call to
        ``train()`` / ``eval()`` drops the cache."""
        with torch.no_grad():
            self._item_cache = (self.embed_items(item_table), self._parameter_version())
        return self

    def train(self, mode: bool = True) -> TwoTower:
        self._item_cache = None
        return super().train(mode)

    def score_all(self, users: Rows, items: Rows | None = None) -> Tensor:
        """(n_users, n_items) scores of every item (``items``, or those of :meth:`cache_items`)."""
        if items is not None:
            item_embeddings = self.embed_items(items)
        else:
            if self._item_cache is None or self._item_cache[1] != self._parameter_version():
                self._item_cache = None
                raise RuntimeError(
                    "no valid item cache: call cache_items(item_table) after the last "
                    "parameter update, or pass items"
                )
            item_embeddings = self._item_cache[0]
        return self._with_prior(self.embed_users(users) @ item_embeddings.T)

    # -- compatibility and files ----------------------------------------------------------------
    def check_compatible(self, env: gym.Env) -> None:
        """Raise ValueError when ``env``'s feature schemas differ from the ones this model was
        built for, or its catalogue from the one its item prior belongs to."""
        env = getattr(env, "unwrapped", env)
        for side, mine, theirs in (
            ("user", self.user_schema, env.user_schema),
            ("item", self.item_schema, env.item_schema),
        ):
            if mine != theirs:
                theirs_by_name = {f.name: f for f in theirs.features}
                differing = [f.name for f in mine.features if theirs_by_name.get(f.name) != f]
                mine_names = {f.name for f in mine.features}
                extra = [f.name for f in theirs.features if f.name not in mine_names]
                raise ValueError(
                    f"the model's {side} schema differs from the env's: features missing or "
                    f"defined differently in the env: {differing}; only in the env: {extra}"
                    + ("" if differing or extra else "; the feature order differs")
                )
        self.check_catalogue(env.item_table())

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """One safetensors file with the weights, config and both schemas."""
        meta = {
            "config": asdict(self.config),
            "user_schema": self.user_schema.to_dict(),
            "item_schema": self.item_schema.to_dict(),
            **({"catalogue": self.catalogue} if self.catalogue else {}),
        }
        tensors = self.state_dict()
        if len(self.item_prior):
            tensors["item_prior"] = self.item_prior
        return write_model_file(path, tensors, meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TwoTower:
        tensors, meta = read_model_file(path, map_location)
        try:
            config = config_from_dict(meta["config"])
            model = cls(
                Schema.from_dict(meta["user_schema"]), Schema.from_dict(meta["item_schema"]), config
            )
            model.set_item_prior(tensors.pop("item_prior", None), meta.get("catalogue"))
            model.load_state_dict(tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"{path}: model file content does not match its metadata: {err}"
            ) from err
        return model.to(map_location).eval()


def spotify_shaped_schemas() -> tuple[Schema, Schema]:
    """Schemas with the Spotify env's shapes (20 numeric genre features; 50 songs), for reports."""
    user = Schema(tuple(Feature(f"genre_{j}", "numeric", low=0, high=1) for j in range(20)))
    item = Schema((Feature("song", "categorical", tuple(str(i) for i in range(50))),))
    return user, item


def param_counts(
    preset: str | ModelConfig = "paper",
    embedder: str = "mamba",
    user_schema: Schema | None = None,
    item_schema: Schema | None = None,
) -> dict[str, int]:
    """Trainable parameters: one embedder, each full tower, and the whole model.

    Tower totals depend on the schemas (tokenizer tables); default: Spotify shapes.

    >>> param_counts("paper", "mamba")["embedder"], param_counts("paper", "transformer")["embedder"]
    (479232, 1186048)
    """
    if user_schema is None or item_schema is None:
        user_schema, item_schema = spotify_shaped_schemas()
    model = TwoTower.from_schemas(user_schema, item_schema, embedder, preset)

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    return {
        "embedder": count(model.user_tower.embedder),
        "user_tower": count(model.user_tower),
        "item_tower": count(model.item_tower),
        "total": count(model),
    }


def params_report(
    preset: str | ModelConfig = "paper",
    user_schema: Schema | None = None,
    item_schema: Schema | None = None,
) -> str:
    """A printable table of :func:`param_counts` for every embedder kind."""
    shapes = "Spotify shapes" if user_schema is None else "given schemas"
    lines = [
        f"trainable parameters, preset {preset if isinstance(preset, str) else 'custom'} "
        f"(tower totals for {shapes})",
        f"{'embedder':<12} {'per embedder':>14} {'user tower':>12} {'item tower':>12} "
        f"{'total':>12}",
    ]
    for kind in EMBEDDERS:
        c = param_counts(preset, kind, user_schema, item_schema)
        lines.append(
            f"{kind:<12} {c['embedder']:>14,} {c['user_tower']:>12,} {c['item_tower']:>12,} "
            f"{c['total']:>12,}"
        )
    return "\n".join(lines)
