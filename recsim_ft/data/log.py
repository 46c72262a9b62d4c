"""The interaction log: what a behaviour policy showed to which user, and what came back.

A log is the training set of the offline agents and the unit a user saves, shares and reloads.
On disk it is one parquet file with one row per logged event and every fact needed to rebuild the
env and the models (env id and kwargs, seed, feature schemas, item table) in the parquet schema
metadata, so a file is self-describing and a mismatched file is refused with a clear error. A
file loads exactly as written or not at all: its pages carry CRC checksums, and its metadata a
SHA-256 of the log's content (every array and the metadata itself), checked on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsim_ft.checks import check_actions, check_bool
from recsim_ft.fileio import atomic_path
from recsim_ft.schema import Batch, Schema

#: Key of the recsim-ft entry in the parquet schema metadata.
METADATA_KEY = b"recsim_ft"
#: Bump when the file layout changes. Version 2 added the content hash; version 1 files (written
#: before it) still load, without the check, since there is nothing to check them against.
#: A log with dates (a ``time`` column) is written as version 3, which older readers refuse
#: rather than load without its dates; a log without them stays version 2.
FORMAT_VERSION = 2
_DATED_FORMAT_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
_FORMAT = "recsim_ft.InteractionLog"
#: Key of the content hash inside the recsim-ft metadata.
_HASH_KEY = "content_sha256"


def _jsonable(value: Any) -> Any:
    """JSON fallback for env kwargs: paths as strings, numpy values as Python values."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(
        f"env kwarg value {value!r} of type {type(value).__name__} cannot be stored in a log"
    )


def _to_json(value: Any) -> str:
    """The one JSON text of the metadata: keys sorted, so equal content gives equal text."""
    return json.dumps(value, default=_jsonable, sort_keys=True)


def env_identity(env: gym.Env) -> tuple[str, dict[str, Any]]:
    """The id and kwargs of ``env`` (or of the env inside a wrapper), kwargs as a saved log holds
    them (paths as strings, tuples as lists), for comparing an env with a log's."""
    return _env_id(env), _comparable_kwargs(env.unwrapped.spec_kwargs)


def _env_id(env: gym.Env) -> str:
    """The registered id of ``env`` (or of the env inside a wrapper), else its class name."""
    spec = env.spec or env.unwrapped.spec
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _comparable_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` in their JSON form; a value JSON cannot hold (which a log cannot save either)
    by its ``repr``."""

    def fallback(value: Any) -> Any:
        try:
            return _jsonable(value)
        except TypeError:
            return repr(value)

    return json.loads(json.dumps(kwargs, default=fallback, sort_keys=True))


def _schema_difference(mine: Schema, theirs: Schema) -> str:
    """What differs between two schemas, in words: the feature names, else the first feature
    whose kind, categories or bounds differ."""

    def names(schema: Schema) -> str:
        listed = [f.name for f in schema.features]
        return (
            f"{len(listed)} features ({', '.join(listed[:4])}{', ...' if len(listed) > 4 else ''})"
        )

    if [f.name for f in mine.features] != [f.name for f in theirs.features]:
        return f"the log's: {names(mine)}; the other: {names(theirs)}"
    for a, b in zip(mine.features, theirs.features, strict=True):
        if a == b:
            continue
        if a.kind != b.kind:
            return f"{a.name!r} is {a.kind} in the log, {b.kind} in the other"
        if a.categories != b.categories:
            first = next(
                (
                    i
                    for i, (x, y) in enumerate(zip(a.categories, b.categories, strict=False))
                    if x != y
                ),
                min(len(a.categories), len(b.categories)),
            )
            shown = (
                f"category {first} is {a.categories[first]!r} in the log, "
                f"{b.categories[first]!r} in the other"
                if first < min(len(a.categories), len(b.categories))
                else ""
            )
            return (
                f"{a.name!r} has other categories ({len(a.categories)} in the log, "
                f"{len(b.categories)} in the other" + (f"; {shown}" if shown else "") + ")"
            )
        return f"{a.name!r} has other bounds ([{a.low}, {a.high}] in the log, [{b.low}, {b.high}])"
    return "the schemas differ"


def uniform_slate_cascade(n_items: int, slate_size: int) -> np.ndarray:
    """(slate_size,) the probability that uniformly random slates of distinct items (``collect``'s
    default slate policy) start with given first ``j + 1`` items: ``1 / (m (m-1) ... (m-j))``;
    its last entry is a whole slate's probability."""
    return 1.0 / np.cumprod(np.arange(n_items, n_items - slate_size, -1, dtype=np.float64))


def logged_uniform_slates(
    position_propensities: np.ndarray, slate_propensities: np.ndarray, n_items: int
) -> bool:
    """True when logged propensities ((n, k) per item, (n,) per slate) are those of uniformly
    random slates: item ``1/m`` everywhere, slate ``uniform_slate_cascade(m, k)[-1]``."""
    k = np.shape(position_propensities)[-1]
    return bool(
        np.allclose(position_propensities, 1.0 / n_items, rtol=1e-9, atol=0)
        and np.allclose(
            slate_propensities, uniform_slate_cascade(n_items, k)[-1], rtol=1e-9, atol=0
        )
    )


@dataclass
class SlateColumns:
    """The slate columns of a slate log: ``collect`` in an env with ``slate_size=k`` logs each
    slate as ``k`` rows, one per position, in order (the Open Bandit Dataset's layout).

    Row ``r`` belongs to slate ``slate_ids[r]`` (0, 1, ... in row order) at ``positions[r]``
    (0 = first); ``chosen[r]`` is True for the item the user chose (at most one per slate).
    The log's ``actions`` are the items shown, ``rewards`` the reward of the chosen item on its
    row (0 on the others) and ``propensities`` the behaviour policy's probability of that item
    at that position; ``slate_propensities`` is the probability of the whole slate (the same on
    its k rows). NaN propensities: the policy did not report them.
    """

    slate_ids: np.ndarray
    positions: np.ndarray
    chosen: np.ndarray
    slate_propensities: np.ndarray

    def __post_init__(self) -> None:
        self.slate_ids = np.asarray(self.slate_ids, dtype=np.int64)
        self.positions = np.asarray(self.positions, dtype=np.int64)
        self.chosen = np.asarray(self.chosen, dtype=bool)
        self.slate_propensities = np.asarray(self.slate_propensities, dtype=np.float64)

    @property
    def slate_size(self) -> int:
        return int(self.positions.max()) + 1 if len(self.positions) else 0

    def check(self, rewards: np.ndarray) -> None:
        """Raise a ValueError naming the problem unless these columns describe whole slates."""
        n = len(rewards)
        for name in ("slate_ids", "positions", "chosen", "slate_propensities"):
            if getattr(self, name).shape != (n,):
                raise ValueError(
                    f"InteractionLog: slate column {name} must have shape ({n},), "
                    f"got {getattr(self, name).shape}"
                )
        k = self.slate_size
        if k == 0 or n % k:
            raise ValueError(f"InteractionLog: {n} rows are not whole slates of {k} positions")
        slates = n // k
        if not (
            np.array_equal(self.slate_ids, np.repeat(np.arange(slates), k))
            and np.array_equal(self.positions, np.tile(np.arange(k), slates))
        ):
            raise ValueError(
                "InteractionLog: slate rows must come slate by slate (slate_id 0, 1, ...), "
                "positions 0 .. k-1 in order"
            )
        if (self.chosen.reshape(slates, k).sum(axis=1) > 1).any():
            raise ValueError("InteractionLog: a slate has more than one chosen row")
        if (rewards[~self.chosen] != 0).any():
            raise ValueError("InteractionLog: a row that was not chosen has a nonzero reward")


@dataclass
class InteractionLog:
    """Logged events ``(user, action, reward, propensity)`` of one env.

    ``users`` holds the features of the user of each row (``users.ids`` are the user ids);
    ``propensities`` are the behaviour policy's probabilities of the logged actions (NaN when the
    policy did not report them); ``item_table`` holds the features of every item, so ``items``
    (the item features of each row) needs no env. A slate log also has ``slate_columns`` (see
    ``SlateColumns``); None for a log of single recommendations. ``times`` is the day of each
    event (datetime64[D]) where the env dates its events (HMFashion-v0), else None; ``select``
    takes the events of a date range.
    """

    users: Batch
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    env_id: str
    env_kwargs: dict[str, Any]
    seed: int | None
    user_schema: Schema
    item_schema: Schema
    item_table: Batch = field(repr=False)
    slate_columns: SlateColumns | None = field(default=None, repr=False)
    times: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.users)
        self.actions = check_actions(
            self.actions, len(self.item_table), n, "InteractionLog: actions"
        )
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.propensities = np.asarray(self.propensities, dtype=np.float64)
        for name in ("rewards", "propensities"):
            if getattr(self, name).shape != (n,):
                raise ValueError(
                    f"InteractionLog: {name} must have shape ({n},), "
                    f"got {getattr(self, name).shape}"
                )
        self.user_schema.validate(self.users, "InteractionLog users")
        self.item_schema.validate(self.item_table, "InteractionLog item_table")
        if not np.isfinite(self.rewards).all():
            raise ValueError("InteractionLog: rewards contain NaN or inf")
        if self.slate_columns is not None:
            self.slate_columns.check(self.rewards)
        if self.times is not None:
            self.times = np.asarray(self.times)
            if self.times.dtype.kind != "M" or self.times.shape != (n,):
                raise ValueError(
                    f"InteractionLog: times must be ({n},) dates (datetime64), got "
                    f"{self.times.dtype} of shape {self.times.shape}"
                )
            self.times = self.times.astype("datetime64[D]")
            if np.isnat(self.times).any():
                raise ValueError(
                    "InteractionLog: times has missing dates (NaT); a log without dates has "
                    "times=None"
                )

    @classmethod
    def from_env(
        cls,
        env: gym.Env,
        users: Batch,
        actions: np.ndarray,
        rewards: np.ndarray,
        propensities: np.ndarray,
        seed: int | None,
        slate_columns: SlateColumns | None = None,
        times: np.ndarray | None = None,
    ) -> InteractionLog:
        """A log of events in ``env`` (or a wrapper of it), recording the env's id, kwargs, schemas
        and item table so the log can rebuild and check against the env later."""
        base = env.unwrapped
        return cls(
            users=users,
            actions=actions,
            rewards=rewards,
            propensities=propensities,
            env_id=_env_id(env),
            env_kwargs=base.spec_kwargs,
            seed=seed,
            user_schema=base.user_schema,
            item_schema=base.item_schema,
            item_table=base.item_table(),
            slate_columns=slate_columns,
            times=times,
        )

    def check_env(self, env: gym.Env, allow_env_mismatch: bool = False) -> None:
        """Refuse ``env`` unless it is the env this log was collected in: the same user and item
        features, and the same id and kwargs (``allow_env_mismatch=True`` accepts another env
        with the same features, e.g. other vaccine ``clusters``): the one check of a log's env
        that every agent and exporter calls."""
        check_bool("allow_env_mismatch", allow_env_mismatch)  # "no" must not switch it off
        env_id, env_kwargs = env_identity(env)
        base = env.unwrapped
        self.check_features(
            f"the env {env_id} ({base.n_items} items)", base.user_schema, base.item_schema
        )
        log_kwargs = _comparable_kwargs(self.env_kwargs)
        if allow_env_mismatch or (env_id, env_kwargs) == (self.env_id, log_kwargs):
            return
        unset = "(not set)"
        differing = ", ".join(
            f"{key}={log_kwargs.get(key, unset)!r} in the log, "
            f"{env_kwargs.get(key, unset)!r} in the env"
            for key in sorted(log_kwargs.keys() | env_kwargs.keys())
            if log_kwargs.get(key, unset) != env_kwargs.get(key, unset)
        )
        raise ValueError(
            f"the log was collected in {self.env_id} {log_kwargs}, not in the env given, "
            f"{env_id} {env_kwargs} ("
            + (f"env id {self.env_id!r} vs {env_id!r}" if env_id != self.env_id else differing)
            + "); pass allow_env_mismatch=True to use it anyway"
        )

    def check_features(self, what: str, user_schema: Schema, item_schema: Schema) -> None:
        """Refuse ``what`` (an env or a model, in words) unless its user and item features are
        the log's, since a model trained on the log could not score its rows."""
        for side, mine, theirs in (
            ("user", self.user_schema, user_schema),
            ("item", self.item_schema, item_schema),
        ):
            if mine != theirs:
                raise ValueError(
                    f"the log of {self.env_id} ({self.n_items} items) does not fit {what}: "
                    f"{side} features differ ({_schema_difference(mine, theirs)})"
                )

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def n_items(self) -> int:
        return len(self.item_table)

    @property
    def items(self) -> Batch:
        """Item features of each row (row ``i`` = features of item ``actions[i]``)."""
        return self.item_table[self.actions]

    def select(
        self,
        rows: np.ndarray | None = None,
        *,
        before: str | np.datetime64 | None = None,
        since: str | np.datetime64 | None = None,
    ) -> InteractionLog:
        """The log of the events ``rows`` (a boolean mask or indices), and of those only the
        days ``since <= day < before`` (a dated log's split: ``log.select(before="2020-09-16")``).
        Everything else (env, seed, schemas, item table) is kept. Slate logs are refused (a
        slate's rows belong together)."""
        if self.slate_columns is not None:
            raise ValueError(
                "select takes events of a log of single recommendations; this is a slate log, "
                "whose rows belong to slates"
            )
        rows = np.arange(len(self)) if rows is None else self._row_indices(rows)
        for name, day in (("before", before), ("since", since)):
            if day is None:
                continue
            if self.times is None:
                raise ValueError(
                    f"select({name}={day!r}) needs a dated log; this log of {self.env_id} has no "
                    "dates (times=None): only logs of HMFashion-v0 are dated"
                )
            try:
                day = np.datetime64(day, "D")
            except ValueError:
                raise ValueError(
                    f"{name} must be a date such as '2020-09-16', got {day!r}"
                ) from None
            days = self.times[rows]
            rows = rows[days < day if name == "before" else days >= day]
        return replace(
            self,
            users=self.users[rows],
            actions=self.actions[rows],
            rewards=self.rewards[rows],
            propensities=self.propensities[rows],
            times=None if self.times is None else self.times[rows],
        )

    def _row_indices(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` (a boolean mask or indices, negative ones from the end) as checked indices."""
        rows = np.asarray(rows)
        if rows.size == 0 and rows.ndim == 1:
            return np.zeros(0, dtype=np.int64)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise ValueError(f"a row mask must have shape ({len(self)},), got {rows.shape}")
            return np.flatnonzero(rows)
        if rows.dtype.kind not in "iu" or rows.ndim != 1:
            raise ValueError(
                f"rows must be a boolean mask or 1-d integer indices, got {rows.dtype} of shape "
                f"{rows.shape}"
            )
        outside = (rows >= len(self)) | (rows < -len(self))
        if outside.any():
            raise ValueError(
                f"row {rows[outside][0]} is out of range for a log of {len(self)} events"
            )
        if len(rows) == len(self) > 2 and np.isin(rows, (0, 1)).all():
            warnings.warn(
                "select got integers that are all 0 or 1, as many as the log's events: they are "
                "read as row indices (rows 0 and 1 again and again); for a mask pass booleans "
                "(rows.astype(bool))",
                stacklevel=3,
            )
        return rows

    def _columns(self, with_items: bool) -> dict[str, np.ndarray]:
        """The table columns: ``user.<feature>``, optionally ``item.<feature>``, then the event."""
        sides = [("user", self.user_schema, self.users)]
        if with_items:
            sides.append(("item", self.item_schema, self.items))
        columns: dict[str, np.ndarray] = {}
        for side, schema, batch in sides:
            for j, feature in enumerate(schema.numeric):
                columns[f"{side}.{feature.name}"] = batch.numeric[:, j]
            for j, feature in enumerate(schema.categorical):
                columns[f"{side}.{feature.name}"] = batch.categorical[:, j]
        columns.update(
            action=self.actions,
            reward=self.rewards,
            propensity=self.propensities,
            user_id=self.users.ids,
        )
        if self.times is not None:
            columns["time"] = self.times
        if self.slate_columns is not None:
            columns.update(
                slate_id=self.slate_columns.slate_ids,
                position=self.slate_columns.positions,
                chosen=self.slate_columns.chosen,
                slate_propensity=self.slate_columns.slate_propensities,
            )
        return columns

    def to_pandas(self) -> pd.DataFrame:
        """One row per event: ``user.<feature>``, ``item.<feature>`` (categorical features as
        codes; labels are in the schemas), ``action``, ``reward``, ``propensity``, ``user_id``,
        ``time`` for a dated log, and for a slate log ``slate_id``, ``position``, ``chosen``,
        ``slate_propensity``."""
        return pd.DataFrame(self._columns(with_items=True))

    # -- storage ----------------------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": FORMAT_VERSION if self.times is None else _DATED_FORMAT_VERSION,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "seed": self.seed,
            "user_schema": self.user_schema.to_dict(),
            "item_schema": self.item_schema.to_dict(),
            "item_table": {
                "numeric": self.item_table.numeric.tolist(),
                "categorical": self.item_table.categorical.tolist(),
                "ids": self.item_table.ids.tolist(),
            },
        }

    def content_digest(self) -> str:
        """SHA-256 of everything a file holds: the metadata's JSON text and every column (name,
        dtype, shape, bytes). Equal logs give equal digests, whatever file they came from: the
        file's checksum, and the fingerprint that ties a training checkpoint to its log."""
        digest = hashlib.sha256(_to_json(self._metadata()).encode())
        for name, column in self._columns(with_items=False).items():
            column = np.ascontiguousarray(column)
            digest.update(f"\n{name} {column.dtype.str} {column.shape}\n".encode())
            digest.update(column.tobytes())
        return digest.hexdigest()

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the log as parquet; refuses to replace an existing file unless ``overwrite``.

        The file is written under a temporary name and renamed, so an interrupted save never
        leaves a half-written file under ``path``. The same log always gives the same bytes.
        Item features are stored once (the item table, in the metadata) rather than per row: they
        are a function of ``action``, and per-row copies of e.g. 384-d message embeddings would
        make the file 30 times larger; ``load(path).to_pandas()`` has them per row again. Pages
        carry CRC checksums and the metadata the content digest, which ``load`` checks.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        metadata = {**self._metadata(), _HASH_KEY: self.content_digest()}
        table = pa.table(self._columns(with_items=False)).replace_schema_metadata(
            {METADATA_KEY: _to_json(metadata).encode()}
        )
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, write_page_checksum=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> InteractionLog:
        """Read a log written by ``save``: exactly the log that was saved, or an error naming the
        file (another kind of file, another format version, or a damaged file, found by the
        page checksums and the content digest). Files written before the digest existed
        (format version 1) load without that check."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(
                f"{path} is a folder; give the path of an interaction log file (parquet)"
            )
        if not path.is_file():
            raise FileNotFoundError(f"interaction log {path} does not exist")
        try:
            table = pq.read_table(path, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{path} is not a readable parquet file (damaged?): {err}") from err
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError(
                f"{path} is a parquet file but not a recsim-ft interaction log "
                f"(no {METADATA_KEY.decode()!r} metadata)"
            )
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: the recsim-ft metadata is corrupted ({err})") from err
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: the recsim-ft metadata is corrupted (not a JSON object)")
        if meta.get("format") != _FORMAT or meta.get("version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"{path}: unsupported log format {meta.get('format')!r} "
                f"version {meta.get('version')!r} "
                f"(this recsim-ft reads {_FORMAT!r} versions {_READABLE_VERSIONS})"
            )
        stored_digest = meta.get(_HASH_KEY)
        if meta["version"] >= 2 and not isinstance(stored_digest, str):
            raise ValueError(f"{path}: the log's content digest is missing (a damaged file)")
        try:
            log = cls._from_table(table, meta)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
            raise ValueError(f"{path}: not a valid interaction log (damaged?): {err}") from err
        if stored_digest is not None and log.content_digest() != stored_digest:
            raise ValueError(
                f"{path}: the content differs from what was saved (its content digest does not "
                "match): the file is damaged"
            )
        return log

    @classmethod
    def _from_table(cls, table: pa.Table, meta: dict[str, Any]) -> InteractionLog:
        """The log of a parquet table and its recsim-ft metadata; a ValueError (or another
        error of malformed content) for anything inconsistent."""
        user_schema = Schema.from_dict(meta["user_schema"])
        item_schema = Schema.from_dict(meta["item_schema"])
        needed = [f"user.{f.name}" for f in user_schema.features] + [
            "action",
            "reward",
            "propensity",
            "user_id",
        ]
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise ValueError(f"missing columns {missing}")

        def column(name: str, dtype: type) -> np.ndarray:
            values = table.column(name)
            if values.null_count:
                raise ValueError(f"column {name!r} has {values.null_count} missing values")
            try:
                return values.to_numpy().astype(dtype, casting="same_kind")
            except TypeError as err:
                raise ValueError(
                    f"column {name!r} has type {values.type}, expected {np.dtype(dtype)}"
                ) from err

        def features(schema: Schema, kind: str, dtype: type) -> np.ndarray:
            cols = [column(f"user.{f.name}", dtype) for f in getattr(schema, kind)]
            return np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0), dtype)

        users = Batch(
            features(user_schema, "numeric", np.float32),
            features(user_schema, "categorical", np.int64),
            column("user_id", np.int64),
        )
        items = meta["item_table"]
        n_items = len(items["ids"])
        item_table = Batch(
            np.asarray(items["numeric"], np.float32).reshape(n_items, item_schema.n_numeric),
            np.asarray(items["categorical"], np.int64).reshape(n_items, item_schema.n_categorical),
            np.asarray(items["ids"], np.int64),
        )
        times = None
        if "time" in table.column_names:
            values = table.column("time")
            if not pa.types.is_date(values.type):
                raise ValueError(f"column 'time' has type {values.type}, expected dates")
            times = values.to_numpy().astype("datetime64[D]")
        slate_names = {"slate_id": np.int64, "position": np.int64, "chosen": np.bool_}
        slate_names["slate_propensity"] = np.float64
        present = [c for c in slate_names if c in table.column_names]
        if present and len(present) < len(slate_names):
            missing = [c for c in slate_names if c not in present]
            raise ValueError(f"a slate log missing columns {missing}")
        slate_columns = (
            SlateColumns(*(column(c, dtype) for c, dtype in slate_names.items()))
            if present
            else None
        )
        return cls(
            users,
            column("action", np.int64),
            column("reward", np.float32),
            column("propensity", np.float64),
            meta["env_id"],
            meta["env_kwargs"],
            meta["seed"],
            user_schema,
            item_schema,
            item_table,
            slate_columns,
            times,
        )


def check_propensities(propensities: np.ndarray, name: str) -> None:
    """Raise a ValueError naming the first bad propensity unless all lie in (0, 1]."""
    problems = {
        "NaN": np.isnan(propensities),
        "zero or negative": propensities <= 0,
        "above 1": propensities > 1,
    }
    for what, mask in problems.items():
        if mask.any():
            first = tuple(int(i) for i in np.argwhere(mask)[0])
            where = f"row {first[0]}" + (f", position {first[1]}" if len(first) > 1 else "")
            raise ValueError(
                f"{name}: {int(mask.sum())} propensities are {what} "
                f"(first: {where}, value {float(propensities[first])!r}); off-policy estimates "
                "need the behaviour policy's probability of every logged action, in (0, 1] "
                "(collect with a policy that returns (actions, propensities))"
            )
