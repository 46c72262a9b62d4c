"""The shared vocabulary of recsim-ft: feature schemas and batches of feature rows.

Every layer speaks it: an env describes its users and items with a ``Schema`` and hands out
``Batch`` rows; the collector stores them, the models tokenize them, the agents score them. It
lives on the ground floor, importing nothing else of recsim-ft, so models, data and agents need
no env module to understand a row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

FeatureKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class Feature:
    """One column of a user or item table.

    Numeric features carry the bounds of their observation ``Box``; categorical features carry
    their cardinality and the label of each category (index ``i`` means ``categories[i]``).
    """

    name: str
    kind: FeatureKind
    categories: tuple[str, ...] = ()
    low: float = -np.inf
    high: float = np.inf

    def __post_init__(self) -> None:
        if self.kind not in ("numeric", "categorical"):
            raise ValueError(
                f"feature {self.name!r}: kind must be 'numeric' or 'categorical', got {self.kind!r}"
            )
        if self.kind == "categorical" and len(self.categories) < 1:
            raise ValueError(f"categorical feature {self.name!r} needs at least one category")
        if self.kind == "numeric" and self.categories:
            raise ValueError(f"numeric feature {self.name!r} cannot have categories")

    @property
    def cardinality(self) -> int:
        """Number of categories (0 for a numeric feature)."""
        return len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            d["categories"] = list(self.categories)
        else:
            d["low"] = None if np.isinf(self.low) else float(self.low)
            d["high"] = None if np.isinf(self.high) else float(self.high)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Feature:
        if d["kind"] == "categorical":
            return cls(d["name"], "categorical", tuple(d["categories"]))
        low = -np.inf if d.get("low") is None else d["low"]
        high = np.inf if d.get("high") is None else d["high"]
        return cls(d["name"], "numeric", low=low, high=high)


@dataclass(frozen=True)
class Schema:
    """Ordered features of one side (users or items).

    Numeric features fill the columns of ``Batch.numeric`` in schema order, categorical ones the
    columns of ``Batch.categorical``.

    >>> age = Feature("age", "numeric", low=0, high=99)
    >>> s = Schema((age, Feature("sex", "categorical", ("f", "m"))))
    >>> s.n_numeric, s.cardinalities
    (1, (2,))
    """

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate feature names in schema: {sorted(dup)}")
        if not self.features:
            raise ValueError("a schema needs at least one feature")

    @property
    def numeric(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.kind == "numeric")

    @property
    def categorical(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.kind == "categorical")

    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    @property
    def n_categorical(self) -> int:
        return len(self.categorical)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(f.cardinality for f in self.categorical)

    def __len__(self) -> int:
        return len(self.features)

    def to_dict(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.features]

    @classmethod
    def from_dict(cls, items: Sequence[dict[str, Any]]) -> Schema:
        return cls(tuple(Feature.from_dict(d) for d in items))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls.from_dict(json.loads(text))

    def space(self) -> spaces.Dict:
        """The observation space of one row: a ``"numeric"`` Box and/or a ``"categorical"``
        MultiDiscrete."""
        parts: dict[str, spaces.Space] = {}
        if self.n_numeric:
            low = np.array([f.low for f in self.numeric], dtype=np.float32)
            high = np.array([f.high for f in self.numeric], dtype=np.float32)
            parts["numeric"] = spaces.Box(low, high, dtype=np.float32)
        if self.n_categorical:
            parts["categorical"] = spaces.MultiDiscrete(
                np.array(self.cardinalities, dtype=np.int64)
            )
        return spaces.Dict(parts)

    def validate(self, batch: Batch, what: str = "batch") -> None:
        """Raise a ValueError naming the column when ``batch`` does not fit this schema."""
        if batch.numeric.shape[1] != self.n_numeric:
            raise ValueError(
                f"{what}: expected {self.n_numeric} numeric columns, got {batch.numeric.shape[1]}"
            )
        if batch.categorical.shape[1] != self.n_categorical:
            raise ValueError(
                f"{what}: expected {self.n_categorical} categorical columns, "
                f"got {batch.categorical.shape[1]}"
            )
        if self.n_numeric and not np.isfinite(batch.numeric).all():
            col = int(np.where(~np.isfinite(batch.numeric).all(axis=0))[0][0])
            raise ValueError(
                f"{what}: numeric feature {self.numeric[col].name!r} has NaN or inf values"
            )
        for j, f in enumerate(self.categorical):
            codes = batch.categorical[:, j]
            if codes.size and (codes.min() < 0 or codes.max() >= f.cardinality):
                raise ValueError(
                    f"{what}: categorical feature {f.name!r} has codes outside [0, {f.cardinality})"
                )


@dataclass
class Batch:
    """Features of ``n`` users or items: ``numeric`` float32 (n, n_numeric), ``categorical`` int64
    (n, n_categorical) and ``ids`` int64 (n,) (user ids, or item indices for an item table)."""

    numeric: np.ndarray
    categorical: np.ndarray
    ids: np.ndarray

    def __post_init__(self) -> None:
        self.numeric = np.asarray(self.numeric, dtype=np.float32)
        codes = np.asarray(self.categorical)
        if codes.dtype.kind == "f":  # a cast to int64 would truncate 2.7 to category 2
            fractional = ~np.isfinite(codes) | (codes != np.round(codes))
            if fractional.any():
                raise ValueError(
                    "Batch: categorical codes must be whole numbers, got "
                    f"{float(codes[fractional].flat[0])!r}"
                )
        self.categorical = codes.astype(np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        n = len(self.ids)
        if self.numeric.ndim != 2 or self.categorical.ndim != 2 or self.ids.ndim != 1:
            raise ValueError("Batch expects numeric (n, a), categorical (n, b) and ids (n,) arrays")
        if self.numeric.shape[0] != n or self.categorical.shape[0] != n:
            raise ValueError(
                f"Batch row counts differ: numeric {self.numeric.shape[0]}, "
                f"categorical {self.categorical.shape[0]}, ids {n}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """SHA-256 of the rows (every array's dtype, shape and bytes): equal rows, equal digest;
        what ties state that belongs to an item table's rows (a popularity prior) to it.

        >>> Batch(np.zeros((2, 0)), [[0], [1]], [0, 1]).digest()[:12]
        'b7ea2492aff3'
        """
        digest = hashlib.sha256()
        for array in (self.numeric, self.categorical, self.ids):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str} {array.shape}\n".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    def __getitem__(self, index: Any) -> Batch:
        """Rows by integer array, slice or boolean mask (always returns a Batch)."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Batch(self.numeric[index], self.categorical[index], self.ids[index])

    @classmethod
    def concat(cls, batches: Sequence[Batch]) -> Batch:
        return cls(
            np.concatenate([b.numeric for b in batches]),
            np.concatenate([b.categorical for b in batches]),
            np.concatenate([b.ids for b in batches]),
        )

    def observations(self, schema: Schema) -> dict[str, np.ndarray]:
        """Every row as one batched observation of ``schema.space()`` (a leading row axis), as a
        vector env returns it; the arrays are copies, so the caller may keep or change them."""
        observations: dict[str, np.ndarray] = {}
        if schema.n_numeric:
            observations["numeric"] = self.numeric.copy()
        if schema.n_categorical:
            observations["categorical"] = self.categorical.copy()
        return observations

    def observation(self, i: int, schema: Schema) -> dict[str, np.ndarray]:
        """Row ``i`` as a Gymnasium observation of ``schema.space()``."""
        return {key: rows[0] for key, rows in self[[i]].observations(schema).items()}

    @classmethod
    def from_observations(
        cls,
        observations: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]],
        schema: Schema,
        ids: np.ndarray | None = None,
    ) -> Batch:
        """Stack one observation (or a list, or a batched Dict observation of a vector env); an
        observation that does not fit ``schema`` is refused, naming the part and its shape."""
        if isinstance(observations, dict):
            parts = [observations]
        elif isinstance(observations, Sequence) and all(isinstance(o, dict) for o in observations):
            parts = list(observations)
        else:
            raise TypeError(
                "expected a Gymnasium observation (a dict of 'numeric' and/or 'categorical' "
                f"arrays) or a list of them, got {type(observations).__name__}"
            )
        columns: list[np.ndarray | None] = []
        for key, width in (("numeric", schema.n_numeric), ("categorical", schema.n_categorical)):
            if width == 0:
                columns.append(None)
                continue
            arrays = [np.asarray(o.get(key, np.zeros(0))) for o in parts]
            for a in arrays:  # one row (width,) or a vector env's batch (n, width)
                if a.ndim not in (1, 2) or a.shape[-1] != width:
                    raise ValueError(
                        f"observation {key!r} must hold {width} values per user (shape "
                        f"({width},) or (n, {width})), got shape {a.shape}"
                    )
            columns.append(np.concatenate([a.reshape(-1, width) for a in arrays]))
        counts = {len(c) for c in columns if c is not None}
        if len(counts) > 1:
            raise ValueError(f"observation parts disagree on the number of users: {sorted(counts)}")
        n = counts.pop()  # a schema has at least one feature
        num = np.zeros((n, 0)) if columns[0] is None else columns[0]
        cat = np.zeros((n, 0), np.int64) if columns[1] is None else columns[1]
        return cls(num, cat, np.full(n, -1, np.int64) if ids is None else ids)
