"""Feature tensors and the FT-Transformer feature tokenizer (paper eq. 1-2)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from recsim_ft.schema import Batch, Schema


class FeatureTensors(NamedTuple):
    """The torch view of a :class:`~recsim_ft.schema.Batch`: numeric float32 (n, n_numeric)
    and categorical int64 (n, n_categorical)."""

    numeric: Tensor
    categorical: Tensor

    @classmethod
    def from_batch(cls, batch: Batch, device: torch.device | str | None = None) -> FeatureTensors:
        return cls(
            torch.as_tensor(batch.numeric, dtype=torch.float32, device=device),
            torch.as_tensor(batch.categorical, dtype=torch.int64, device=device),
        )

    @classmethod
    def coerce(
        cls, rows: Batch | FeatureTensors, device: torch.device | str | None = None
    ) -> FeatureTensors:
        """Accept either form; move to ``device``."""
        if isinstance(rows, Batch):
            return cls.from_batch(rows, device)
        if isinstance(rows, FeatureTensors):
            return cls(
                rows[0].to(device=device, dtype=torch.float32),
                rows[1].to(device=device, dtype=torch.int64),
            )
        raise TypeError(f"expected a Batch or FeatureTensors, got {type(rows).__name__}")

    @property
    def n_rows(self) -> int:
        return self.numeric.shape[0]


class FeatureTokenizer(nn.Module):
    """One ``d_token``-wide token per feature, plus a [CLS] token appended at the end::

        numeric j       ->  x_j * W_num[j] + b_num[j]
        categorical j   ->  W_cat_j[x_j] + b_cat[j]   (a code outside [0, cardinality): "unknown")
        [CLS]           ->  1 * W_num[-1] + b_num[-1]

    Token order: numeric features, categorical features (schema order), [CLS]. The unknown row
    lets a model serve users with categories never seen in training; a NaN or infinite numeric
    value has no honest token (see :meth:`check_finite`).

    Shape:
        input: FeatureTensors with (n, n_numeric) and (n, n_categorical);
        output: (n, n_numeric + n_categorical + 1, d_token).

    Examples:
        >>> from recsim_ft.schema import Feature
        >>> schema = Schema((Feature("age", "numeric"), Feature("sex", "categorical", ("f", "m"))))
        >>> tok = FeatureTokenizer(schema, d_token=8)
        >>> x = FeatureTensors(torch.tensor([[30.0], [41.0]]), torch.tensor([[1], [7]]))
        >>> tok(x).shape  # code 7 is unknown: no crash
        torch.Size([2, 3, 8])
    """

    def __init__(self, schema: Schema, *, d_token: int) -> None:
        super().__init__()
        self.schema = schema
        self.d_token = d_token
        self.numeric_weight = nn.Parameter(torch.empty(schema.n_numeric + 1, d_token))
        self.numeric_bias = nn.Parameter(torch.empty(schema.n_numeric + 1, d_token))
        cards = torch.tensor(schema.cardinalities, dtype=torch.int64)
        # each table has cardinality + 1 rows; its last row is the "unknown" category
        self.register_buffer("_cardinalities", cards, persistent=False)
        self.register_buffer("_offsets", torch.cumsum(cards + 1, 0) - (cards + 1), persistent=False)
        self.category_embeddings = (
            nn.Embedding(int((cards + 1).sum()), d_token) if len(cards) else None
        )
        self.category_bias = nn.Parameter(torch.empty(len(cards), d_token)) if len(cards) else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """rtdl's uniform(-1/sqrt(d), 1/sqrt(d)) for every table and bias."""
        bound = 1 / math.sqrt(self.d_token)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def check_finite(self, x: FeatureTensors) -> None:
        """Raise ValueError naming the first numeric feature with a NaN or infinite value. Called
        where data enters a model (``TwoTower``'s methods, the trainer once per log), not in
        ``forward``: on a GPU the check waits for the device, which a training step must not."""
        bad = ~torch.isfinite(x.numeric)
        if bad.any():
            name = self.schema.numeric[int(bad.any(0).nonzero()[0])].name
            raise ValueError(f"numeric feature {name!r} has NaN or infinite values")

    @property
    def n_tokens(self) -> int:
        return len(self.schema) + 1

    def forward(self, x: FeatureTensors) -> Tensor:
        numeric, categorical = x
        assert numeric.dim() == 2 and categorical.dim() == 2, "expected 2-d numeric and categorical"
        if (
            numeric.shape[1] != self.schema.n_numeric
            or categorical.shape[1] != self.schema.n_categorical
        ):
            raise ValueError(
                f"expected {self.schema.n_numeric} numeric and {self.schema.n_categorical} "
                f"categorical columns, got {numeric.shape[1]} and {categorical.shape[1]}"
            )
        ones = torch.ones(numeric.shape[0], 1, dtype=numeric.dtype, device=numeric.device)
        with_cls = torch.cat([numeric, ones], dim=1)
        numeric_tokens = with_cls.unsqueeze(-1) * self.numeric_weight + self.numeric_bias
        if self.category_embeddings is None:
            return numeric_tokens
        known = (categorical >= 0) & (categorical < self._cardinalities)
        codes = torch.where(known, categorical, self._cardinalities) + self._offsets
        categorical_tokens = self.category_embeddings(codes) + self.category_bias
        return torch.cat(
            [numeric_tokens[:, :-1], categorical_tokens, numeric_tokens[:, -1:]], dim=1
        )
