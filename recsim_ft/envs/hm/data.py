"""Reading the H&M Kaggle files (or equivalent in-memory frames) into the compact arrays that
``HMFashion-v0`` needs, in bounded memory, with an on-disk cache of the processed result.

The full ``transactions_train.csv`` has 31.8M rows (3.5 GB). It is streamed in blocks with
pyarrow, reading only ``t_dat``, ``customer_id`` and ``article_id``; each block is turned into
three int32 arrays at once (the article's row in articles.csv, the customer's row in
customers.csv, the day), so the whole file costs 12 bytes a row and no Python objects. Only then
are the ``n_items`` most purchased articles chosen (or every article) and every other row
dropped; each distinct (customer, item) purchase keeps the day it was first bought.

Every problem with the input (missing file or column, wrong type, empty or truncated file,
duplicate ids) raises :class:`HMDataError`, a ``ValueError`` naming the file and the column.

Transactions that name a customer missing from the customers file, or an article missing from the
articles file, are what any sample or subset of the Kaggle files holds. ``unknown_ids="drop"``
(the default) drops those rows, with a warning that counts the rows, customers and articles
dropped (also kept in :class:`HMData`); ``unknown_ids="error"`` refuses such files, naming the
first unknown ids and their counts.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsim_ft.checks import check_choice, check_int, check_str
from recsim_ft.schema import Batch, Feature, Schema

#: Kaggle file stems, by table
KAGGLE_FILES = {
    "customers": "customers",
    "articles": "articles",
    "transactions": "transactions_train",
}
#: accepted file formats, in the order they are looked for
SUFFIXES = (".parquet", ".csv", ".csv.gz")
#: the paper's categorical user features (age is the numeric one)
USER_CATEGORICAL = ("FN", "Active", "club_member_status", "fashion_news_frequency")
#: label of the category that holds missing values of a categorical column
MISSING = "missing"
#: the columns of articles.csv, in the Kaggle file's order
ARTICLE_COLUMNS = (
    "article_id",
    "product_code",
    "prod_name",
    "product_type_no",
    "product_type_name",
    "product_group_name",
    "graphical_appearance_no",
    "graphical_appearance_name",
    "colour_group_code",
    "colour_group_name",
    "perceived_colour_value_id",
    "perceived_colour_value_name",
    "perceived_colour_master_id",
    "perceived_colour_master_name",
    "department_no",
    "department_name",
    "index_code",
    "index_name",
    "index_group_no",
    "index_group_name",
    "section_no",
    "section_name",
    "garment_group_no",
    "garment_group_name",
    "detail_desc",
)
#: the article attributes an env can use as categorical item features: every column of
#: articles.csv but the free-text description; ``article_id`` is the article itself (one
#: category per article: what tells apart articles whose other attributes agree, such as the
#: colours of one prod_name, as a tabular model's item index does)
ITEM_FEATURES = tuple(c for c in ARTICLE_COLUMNS if c != "detail_desc")
#: bump when the processed format changes, so old caches are not read
CACHE_VERSION = 4  # 4: the first day of each purchase
#: what to do with transactions naming a customer or article missing from its file
UNKNOWN_IDS = ("drop", "error")
#: how many unknown ids an error message shows
_SHOWN_IDS = 5

_BLOCK_BYTES = (
    16 << 20
)  # the reader keeps several blocks in flight: larger blocks cost memory, not speed
_PARQUET_BATCH_ROWS = 1 << 18

#: a table is a Kaggle file or an in-memory frame with the same columns
TableSource = Path | pd.DataFrame


class HMDataError(ValueError):
    """Bad H&M input: the message names the file (or frame) and the column."""


class MissingColumnsError(HMDataError):
    """A table lacks columns; ``missing`` names them all."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass
class HMData:
    """The processed H&M data set.

    Customers are indexed by their row in customers.csv (the env's user id); items are the
    ``n_items`` most purchased articles, most purchased first (ties: lower article id first).
    """

    #: float32 (n_customers,), NaN where missing
    age: np.ndarray
    #: int64 (n_customers, 4) codes of ``USER_CATEGORICAL``; code i means ``user_categories[f][i]``
    user_codes: np.ndarray
    user_categories: dict[str, tuple[str, ...]]
    #: int64 (n_items,) Kaggle article ids of the items
    article_ids: np.ndarray
    #: int64 (n_items,) transaction rows of each item (repeat purchases count)
    purchase_counts: np.ndarray
    #: the articles.csv columns that are the item features
    item_features: tuple[str, ...]
    #: int64 (n_items, len(item_features)) codes; code i of feature j is item_categories[j][i]
    item_codes: np.ndarray
    item_categories: tuple[tuple[str, ...], ...]
    #: (n_items,) the items' ``prod_name`` (what a person calls them)
    item_names: tuple[str, ...]
    #: int64 (n_pairs, 2) distinct (customer, item) purchases, sorted
    purchases: np.ndarray
    #: datetime64[D] (n_pairs,) the day each purchase was first made (``t_dat``)
    purchase_days: np.ndarray
    #: transaction rows used (read, minus those dropped for unknown ids)
    n_transactions: int
    #: articles in the articles file (the whole catalogue)
    n_articles: int
    #: transaction rows dropped because they name an unknown customer or article
    dropped_transactions: int = 0
    #: distinct customer ids of the transactions missing from the customers file
    unknown_customers: int = 0
    #: distinct article ids of the transactions missing from the articles file
    unknown_articles: int = 0

    @property
    def n_customers(self) -> int:
        return len(self.age)

    @property
    def n_items(self) -> int:
        return len(self.article_ids)


# -- finding and reading tables ------------------------------------------------------------------
def find_kaggle_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """Paths of customers, articles and transactions_train in ``data_dir``
    (.parquet/.csv/.csv.gz)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise HMDataError(f"H&M data_dir {str(data_dir)!r} is not a directory")
    found = {}
    for table, stem in KAGGLE_FILES.items():
        candidates = [data_dir / f"{stem}{suffix}" for suffix in SUFFIXES]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            names = ", ".join(p.name for p in candidates)
            raise HMDataError(
                f"H&M data_dir {str(data_dir)!r} has no {table} file (looked for {names})"
            )
        found[table] = existing[0]
    return found


def _source_name(source: TableSource, table: str) -> str:
    return str(source) if isinstance(source, Path) else f"{table} frame"


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise HMDataError(f"cannot read {path}: {e}") from e
    if not header:
        raise HMDataError(f"{path} is empty (no header row)")
    return header


def _check_columns(name: str, present: list[str], columns: dict[str, pa.DataType]) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        listed = ", ".join(repr(c) for c in missing)
        raise MissingColumnsError(
            f"{name} has no column{'s' if len(missing) > 1 else ''} {listed} (columns: {present})",
            missing,
        )


def _cast(batch: pa.RecordBatch, name: str, columns: dict[str, pa.DataType]) -> pa.RecordBatch:
    arrays = []
    for col, dtype in columns.items():
        values = batch.column(col)
        try:
            arrays.append(values.cast(dtype))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise HMDataError(
                f"{name}, column {col!r}: cannot read {values.type} values as {dtype} ({e})"
            ) from e
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def read_batches(
    source: TableSource, table: str, columns: dict[str, pa.DataType]
) -> Iterator[pa.RecordBatch]:
    """Stream ``columns`` (name -> pyarrow type) of a Kaggle file or frame in record batches."""
    name = _source_name(source, table)
    if isinstance(source, pd.DataFrame):
        _check_columns(name, [str(c) for c in source.columns], columns)
        frame = pa.Table.from_pandas(source[list(columns)], preserve_index=False)
        for batch in frame.to_batches(max_chunksize=_PARQUET_BATCH_ROWS):
            yield _cast(batch, name, columns)
        return
    if source.name.endswith(".parquet"):
        try:
            parquet = pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as e:
            raise HMDataError(
                f"cannot read {source}: not a valid parquet file, empty or truncated? ({e})"
            ) from e
        _check_columns(name, parquet.schema_arrow.names, columns)
        try:
            for batch in parquet.iter_batches(
                batch_size=_PARQUET_BATCH_ROWS, columns=list(columns)
            ):
                yield _cast(batch, name, columns)
        except (pa.ArrowInvalid, OSError) as e:
            raise HMDataError(
                f"cannot read {source}: corrupt or truncated parquet data ({e})"
            ) from e
        return
    header = _csv_header(source)
    _check_columns(name, header, columns)
    convert = pacsv.ConvertOptions(
        include_columns=list(columns), column_types=columns, strings_can_be_null=True
    )
    try:
        reader = pacsv.open_csv(
            source, read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES), convert_options=convert
        )
        yield from reader
    except pa.ArrowInvalid as e:
        message = str(e)
        column = re.search(r"column #(\d+)", message)
        where = (
            f", column {header[int(column.group(1))]!r}"
            if column and int(column.group(1)) < len(header)
            else ""
        )
        raise HMDataError(
            f"{source}{where}: {message} (wrong column type, or a truncated file?)"
        ) from e


def read_table(source: TableSource, table: str, columns: dict[str, pa.DataType]) -> pa.Table:
    """All rows of ``columns`` of a (small) table; an empty table is an error."""
    batches = list(read_batches(source, table, columns))
    result = pa.Table.from_batches(batches, schema=pa.schema(columns.items()))
    if result.num_rows == 0:
        raise HMDataError(f"{_source_name(source, table)} has no rows")
    return result


# -- processing ----------------------------------------------------------------------------------
def _check_ids(ids: pa.ChunkedArray, name: str, column: str) -> None:
    if ids.null_count:
        raise HMDataError(f"{name}, column {column!r}: {ids.null_count} missing ids")
    if pc.count_distinct(ids).as_py() != len(ids):
        values = ids.to_pandas()
        example = values[values.duplicated()].tolist()[0]
        raise HMDataError(f"{name}, column {column!r}: duplicate id {example!r}")


def _category_label(value: str) -> str:
    """Numeric-looking labels are written one way, so ``1.0`` (CSV) and ``1`` (parquet) agree."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def encode_categorical(values: pa.ChunkedArray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes and labels of a string column: ``MISSING`` first, then the sorted labels seen.

    >>> codes, labels = encode_categorical(pa.chunked_array([["b", None, "a", "1.0"]]))
    >>> codes.tolist(), labels
    ([3, 0, 2, 1], ('missing', '1', 'a', 'b'))
    """
    labels = [_category_label(v) for v in pc.unique(values.drop_null()).to_pylist()]
    categories = (MISSING, *sorted(set(labels) - {MISSING}))
    position = {label: i for i, label in enumerate(categories)}
    uniques = pc.unique(values.drop_null())
    lookup = pa.array([position[_category_label(v)] for v in uniques.to_pylist()], pa.int64())
    index = pc.index_in(values, value_set=uniques)
    codes = pc.fill_null(pc.take(lookup, index), 0)
    return codes.to_numpy().astype(np.int64), categories


def _read_customers(
    source: TableSource,
) -> tuple[pd.Index, np.ndarray, np.ndarray, dict[str, tuple[str, ...]]]:
    name = _source_name(source, "customers")
    columns = {
        "customer_id": pa.string(),
        "age": pa.float32(),
        **dict.fromkeys(USER_CATEGORICAL, pa.string()),
    }
    table = read_table(source, "customers", columns)
    _check_ids(table["customer_id"], name, "customer_id")
    codes, categories = [], {}
    for feature in USER_CATEGORICAL:
        feature_codes, categories[feature] = encode_categorical(table[feature])
        codes.append(feature_codes)
    age = table["age"].to_numpy().astype(np.float32)
    if np.isinf(age).any():
        raise HMDataError(f"{name}, column 'age': infinite values")
    customer_index = pd.Index(table["customer_id"].to_pandas())
    return customer_index, age, np.stack(codes, axis=1), categories


def check_n_items(n_items: int | str | None) -> int | None:
    """``n_items`` checked: a positive count, or None for the whole catalogue (also spelled
    ``"all"``)."""
    if n_items is None or (isinstance(n_items, str) and n_items == "all"):
        return None
    if isinstance(n_items, str):
        raise ValueError(f"n_items must be a positive integer or 'all', got {n_items!r}")
    return check_int("n_items", n_items, low=1)


def check_item_features(
    item_features: str | Sequence[str], argument: str = "item_features"
) -> tuple[str, ...]:
    """``item_features`` as a tuple of distinct names of ``ITEM_FEATURES`` (one name: a tuple of
    one), or an error naming ``argument``, the unknown name and the known ones."""
    names = (item_features,) if isinstance(item_features, str) else item_features
    try:
        names = tuple(check_str(argument, name) for name in names)
    except TypeError:
        raise ValueError(
            f"{argument} must be a column name or a list of them, got {item_features!r}"
        ) from None
    if not names:
        raise ValueError(f"{argument} lists no column; choose from {ITEM_FEATURES}")
    for name in names:
        if name not in ITEM_FEATURES:
            raise ValueError(
                f"{argument}: {name!r} is not an article attribute of articles.csv; "
                f"choose from {ITEM_FEATURES}"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{argument} names {repeated} more than once")
    return names


def _read_articles(
    source: TableSource, item_features: tuple[str, ...]
) -> tuple[pd.Index, pa.Table]:
    """The article ids and the ``prod_name`` and ``item_features`` columns (as text)."""
    name = _source_name(source, "articles")
    wanted = dict.fromkeys(("prod_name", *item_features), pa.string())
    wanted.pop("article_id", None)  # read once, as the ids
    try:
        table = read_table(source, "articles", {"article_id": pa.int64(), **wanted})
    except MissingColumnsError as err:
        asked = [c for c in err.missing if c in item_features]
        if not asked:
            raise
        raise MissingColumnsError(
            f"{err}; item_features names {asked}: columns the articles file must hold",
            err.missing,
        ) from None
    _check_ids(table["article_id"], name, "article_id")
    return pd.Index(table["article_id"].to_numpy()), table


@dataclass
class _UnknownIds:
    """Transaction rows naming ids missing from the customers or articles file."""

    rows: int
    #: distinct unknown ids per column, in order of first appearance
    ids: dict[str, pa.Array]

    def describe(self, files: dict[str, str]) -> str:
        """``"3 rows name 2 customers missing from customers.csv (first: 'c9', 'c8')"``, ..."""
        parts = [
            f"{_count(len(ids), table[:-1])} missing from {files[table]} (first: "
            + ", ".join(repr(v) for v in ids[:_SHOWN_IDS].to_pylist())
            + (", ..." if len(ids) > _SHOWN_IDS else "")
            + ")"
            for table, ids in (
                ("customers", self.ids["customer_id"]),
                ("articles", self.ids["article_id"]),
            )
            if len(ids)
        ]
        return f"{_count(self.rows, 'row')} name " + " and ".join(parts)


def _count(n: int, noun: str) -> str:
    """``"1 row"``, ``"2,000 rows"``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _encode_transactions(
    source: TableSource, customer_index: pd.Index, article_index: pd.Index
) -> tuple[np.ndarray, np.ndarray, np.ndarray, _UnknownIds]:
    """(customer row, article row, day) int32 of every transaction naming a known customer and
    article (the day as days since 1970-01-01), streamed block by block, and the rows and ids
    left out."""
    name = _source_name(source, "transactions")
    rows: dict[str, list[np.ndarray]] = {"customer_id": [], "article_id": [], "t_dat": []}
    unknown: dict[str, list[pa.Array]] = {"customer_id": [], "article_id": []}
    n_read = 0
    for batch in read_batches(
        source,
        "transactions",
        {"t_dat": pa.date32(), "customer_id": pa.string(), "article_id": pa.int64()},
    ):
        for column in rows:
            if batch.column(column).null_count:
                raise HMDataError(f"{name}, column {column!r}: missing values")
        found = {}
        for column, index in (("customer_id", customer_index), ("article_id", article_index)):
            values = batch.column(column)
            found[column] = index.get_indexer(values.to_pandas())
            missing = found[column] < 0
            if missing.any():
                unknown[column].append(pc.unique(values.filter(pa.array(missing))))
        found["t_dat"] = batch.column("t_dat").cast(pa.int32()).to_numpy()
        known = (found["customer_id"] >= 0) & (found["article_id"] >= 0)
        for column, values in found.items():
            rows[column].append(values[known].astype(np.int32))
        n_read += batch.num_rows
    if n_read == 0:
        raise HMDataError(f"{name} has no rows")
    customers, articles, days = (
        np.concatenate(rows[c]) for c in ("customer_id", "article_id", "t_dat")
    )
    ids = {
        column: pc.unique(pa.concat_arrays(arrays)) if arrays else pa.array([], pa.string())
        for column, arrays in unknown.items()
    }
    return customers, articles, days, _UnknownIds(n_read - len(customers), ids)


def _refuse_unknown_ids(
    unknown: _UnknownIds, sources: dict[str, TableSource], unknown_ids: str, n_known: int
) -> None:
    """Raise for transactions naming a customer or article missing from its file when
    ``unknown_ids`` is ``"error"``, or when no transaction is left (``n_known`` rows)."""
    if not unknown.rows:
        return
    transactions = _source_name(sources["transactions"], "transactions")
    files = {t: _source_name(sources[t], t) for t in ("customers", "articles")}
    if unknown_ids == "error":
        raise HMDataError(
            f"{transactions}: {unknown.describe(files)}; pass unknown_ids='drop' to drop those rows"
        )
    if n_known == 0:
        raise HMDataError(
            f"{transactions}: no transaction names a known customer and article "
            f"({unknown.describe(files)})"
        )


@dataclass(frozen=True)
class Transactions:
    """Every transaction of the Kaggle files that names a known customer and article, one
    entry per row of transactions_train (repeat purchases kept), as int32 arrays: the
    customer's row in customers.csv, the article's row in articles.csv, and the day (days since
    1970-01-01), in file order."""

    customers: np.ndarray
    articles: np.ndarray
    days: np.ndarray
    #: customer_id of each row of customers.csv
    customer_ids: pd.Index
    #: article_id (int64) of each row of articles.csv
    article_ids: np.ndarray
    #: transaction rows dropped for naming an unknown customer or article
    dropped: int = 0

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @property
    def n_articles(self) -> int:
        return len(self.article_ids)

    def where(self, mask: np.ndarray) -> Transactions:
        """The transactions where ``mask`` is true (same customers and articles)."""
        return Transactions(
            self.customers[mask],
            self.articles[mask],
            self.days[mask],
            self.customer_ids,
            self.article_ids,
            self.dropped,
        )


def read_transactions(
    sources: str | os.PathLike | dict[str, TableSource], unknown_ids: str = "drop"
) -> Transactions:
    """Every transaction of the Kaggle files in a folder (or of the three tables, as
    :func:`process` takes them), streamed in bounded memory (12 bytes a row); ``unknown_ids``
    as in :func:`process` (dropped rows are counted in ``dropped``, with a warning)."""
    check_choice("unknown_ids", unknown_ids, UNKNOWN_IDS)
    if not isinstance(sources, dict):
        sources = find_kaggle_files(sources)
    customer_index = _read_customers(sources["customers"])[0]
    article_index = _read_articles(sources["articles"], ())[0]
    customers, articles, days, unknown = _encode_transactions(
        sources["transactions"], customer_index, article_index
    )
    _refuse_unknown_ids(unknown, sources, unknown_ids, len(customers))
    if unknown.rows:
        files = {t: _source_name(sources[t], t) for t in ("customers", "articles")}
        name = _source_name(sources["transactions"], "transactions")
        warnings.warn(f"{name}: dropped {unknown.describe(files)}", stacklevel=2)
    return Transactions(
        customers, articles, days, customer_index, article_index.to_numpy(), unknown.rows
    )


def user_side(
    age: np.ndarray, user_categories: dict[str, tuple[str, ...]]
) -> tuple[np.ndarray, Schema, float]:
    """The customers' ages with the missing ones imputed by the median of the others (0 when
    none is known), the user schema (age numeric, ``USER_CATEGORICAL``), and that median."""
    missing = np.isnan(age)
    median = float(np.median(age[~missing])) if (~missing).any() else 0.0
    age = np.where(missing, median, age).astype(np.float32)
    schema = Schema(
        (
            Feature(
                "age",
                "numeric",
                low=min(0.0, float(age.min(initial=0.0))),
                high=max(120.0, float(age.max(initial=0.0))),
            ),
            *(Feature(f, "categorical", user_categories[f]) for f in USER_CATEGORICAL),
        )
    )
    return age, schema, median


def article_schema(
    item_features: Sequence[str], item_categories: Sequence[tuple[str, ...]]
) -> Schema:
    """The item schema of articles described by ``item_features`` (categorical each)."""
    return Schema(
        tuple(
            Feature(name, "categorical", categories)
            for name, categories in zip(item_features, item_categories, strict=True)
        )
    )


#: the article attributes a model of the whole catalogue reads by default: every attribute
#: column but the numbers that repeat a name beside them (``product_type_no`` ...)
CATALOGUE_ITEM_FEATURES = (
    "product_code",
    "prod_name",
    "product_type_name",
    "product_group_name",
    "graphical_appearance_name",
    "colour_group_name",
    "perceived_colour_value_name",
    "perceived_colour_master_name",
    "department_name",
    "index_name",
    "index_group_name",
    "section_name",
    "garment_group_name",
)


@dataclass(frozen=True)
class CatalogueFeatures:
    """Every customer's and every article's features, in the files' row order: row ``i`` of
    ``users`` is customer row ``i`` of customers.csv and row ``j`` of ``items`` article row
    ``j`` of articles.csv, the rows :class:`Transactions` names (so a model of them ranks the
    whole catalogue, as the competition asks)."""

    users: Batch
    user_schema: Schema
    items: Batch
    item_schema: Schema
    #: int64 article_id of each row of articles.csv
    article_ids: np.ndarray
    #: int64 code of each article's ``product_code`` (one product: its colours and sizes)
    product_codes: np.ndarray


def read_features(
    sources: str | os.PathLike | dict[str, TableSource],
    item_features: str | Sequence[str] = CATALOGUE_ITEM_FEATURES,
) -> CatalogueFeatures:
    """The features of every customer and article of the Kaggle files in a folder (or of the
    tables, as :func:`process` takes them): a customer's age (missing ones: the median) and
    ``USER_CATEGORICAL``, an article's ``item_features`` (a missing value is ``"missing"``)."""
    item_features = check_item_features(item_features)
    if not isinstance(sources, dict):
        sources = find_kaggle_files(sources)
    _, age, user_codes, user_categories = _read_customers(sources["customers"])
    columns = tuple(dict.fromkeys((*item_features, "product_code")))
    article_index, attributes = _read_articles(sources["articles"], columns)
    age, users_schema = user_side(age, user_categories)[:2]
    encoded = [encode_categorical(attributes[feature]) for feature in item_features]
    n_articles = len(article_index)
    return CatalogueFeatures(
        users=Batch(age[:, None], user_codes, np.arange(len(age))),
        user_schema=users_schema,
        items=Batch(
            np.zeros((n_articles, 0), np.float32),
            np.stack([codes for codes, _ in encoded], axis=1),
            np.arange(n_articles),
        ),
        item_schema=article_schema(item_features, [categories for _, categories in encoded]),
        article_ids=article_index.to_numpy().astype(np.int64),
        product_codes=encode_categorical(attributes["product_code"])[0],
    )


def _first_purchases(keys: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys``, sorted, and the earliest of the ``days`` of each: one sort of
    ``key * span + day`` (numpy 2.4's hash-based ``np.unique`` took 4.5 s on 3.2M int64 where
    the sort takes 0.36 s; the full H&M data has 10x as many)."""
    if len(keys) == 0:
        return keys, days
    first = int(days.min())
    span = int(days.max()) - first + 1
    if int(keys.max()) >= np.iinfo(np.int64).max // span:
        raise HMDataError(
            f"transactions span {span:,} days over {int(keys.max()):,} purchase keys: too many "
            "to sort as one int64; ask for fewer items"
        )
    ordered = np.sort(keys * span + (days - first))
    distinct = np.concatenate(([True], ordered[1:] // span != ordered[:-1] // span))
    ordered = ordered[distinct]
    return ordered // span, ordered % span + first


def process(
    sources: dict[str, TableSource],
    n_items: int | None = 100,
    item_features: str | Sequence[str] = ("prod_name",),
    unknown_ids: str = "drop",
) -> HMData:
    """Build :class:`HMData` from the three tables (Kaggle files or frames with their columns).

    ``n_items``: the items are the ``n_items`` most purchased articles; ``None`` (or ``"all"``)
    is every article of the articles file, never-bought ones last (by id), as are any beyond
    the bought ones when ``n_items`` asks for more. ``item_features``: the article attributes
    that describe an item (``ITEM_FEATURES``); a missing value is category ``"missing"``.
    ``unknown_ids``: ``"drop"`` the transactions naming a customer or article missing from its
    file (with a warning counting them), or refuse them with an ``"error"``.
    """

    n_items = check_n_items(n_items)
    item_features = check_item_features(item_features)
    check_choice("unknown_ids", unknown_ids, UNKNOWN_IDS)
    customer_index, age, user_codes, user_categories = _read_customers(sources["customers"])
    article_index, attributes = _read_articles(sources["articles"], item_features)
    customer_rows, article_rows, days, unknown = _encode_transactions(
        sources["transactions"], customer_index, article_index
    )
    _refuse_unknown_ids(unknown, sources, unknown_ids, len(customer_rows))
    del customer_index
    article_ids = article_index.to_numpy()

    counts = np.bincount(article_rows, minlength=len(article_ids))
    if n_items is None:
        n_items = len(article_ids)
    elif n_items > len(article_ids):
        raise HMDataError(
            f"n_items={n_items:,} but {_source_name(sources['articles'], 'articles')} lists "
            f"{len(article_ids):,} articles; ask for at most that many, or n_items=None for "
            "all of them"
        )
    top = np.lexsort((article_ids, -counts))[:n_items]  # most bought first, ties: lower id
    item_of_article = np.full(len(article_ids), -1, np.int32)
    item_of_article[top] = np.arange(n_items)
    items = item_of_article[article_rows]
    kept = items >= 0
    keys, first_days = _first_purchases(
        customer_rows[kept].astype(np.int64) * n_items + items[kept], days[kept]
    )
    purchases = np.stack([keys // n_items, keys % n_items], axis=1)

    attributes = attributes.take(pa.array(top))
    encoded = [encode_categorical(attributes[feature]) for feature in item_features]
    data = HMData(
        age=age,
        user_codes=user_codes,
        user_categories=user_categories,
        article_ids=article_ids[top].astype(np.int64),
        purchase_counts=counts[top].astype(np.int64),
        item_features=item_features,
        item_codes=np.stack([codes for codes, _ in encoded], axis=1),
        item_categories=tuple(categories for _, categories in encoded),
        item_names=tuple(attributes["prod_name"].fill_null(MISSING).to_pylist()),
        purchases=purchases,
        purchase_days=first_days.astype("datetime64[D]"),
        n_transactions=len(article_rows),
        n_articles=len(article_ids),
        dropped_transactions=unknown.rows,
        unknown_customers=len(unknown.ids["customer_id"]),
        unknown_articles=len(unknown.ids["article_id"]),
    )
    _warn_dropped(data, _source_name(sources["transactions"], "transactions"))
    return data


def _warn_dropped(data: HMData, transactions: str) -> None:
    """Say how many transaction rows ``unknown_ids="drop"`` dropped, if any."""
    if data.dropped_transactions:
        warnings.warn(
            f"{transactions}: dropped {data.dropped_transactions:,} of "
            f"{data.n_transactions + data.dropped_transactions:,} transaction rows naming "
            f"{_count(data.unknown_customers, 'customer')} missing from the customers file and "
            f"{_count(data.unknown_articles, 'article')} missing from the articles file "
            "(unknown_ids='drop'; pass unknown_ids='error' to refuse such files)",
            stacklevel=3,
        )


# -- cache ---------------------------------------------------------------------------------------
def cache_key(
    files: dict[str, Path],
    n_items: int | None,
    item_features: tuple[str, ...],
    unknown_ids: str = "drop",
) -> str:
    """Hash of the processing parameters and the source files' names, sizes and mtimes."""
    stats = {
        table: [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for table, p in sorted(files.items())
    }
    count = None if n_items is None else int(n_items)
    text = json.dumps([CACHE_VERSION, count, list(item_features), unknown_ids, stats])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_processed(data: HMData, directory: Path) -> None:
    """Write ``data`` as parquet files into a fresh ``directory`` (atomically: a temporary
    directory, then a rename; made by ``mkdir``, so it has the umask's usual mode)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process with the same id
    tmp.mkdir()
    try:
        users = {
            "age": data.age,
            **{f: data.user_codes[:, j] for j, f in enumerate(USER_CATEGORICAL)},
        }
        pq.write_table(pa.table(users), tmp / "users.parquet")
        items = {
            "article_id": data.article_ids,
            "purchase_count": data.purchase_counts,
            "name": data.item_names,
            **{f"code.{f}": data.item_codes[:, j] for j, f in enumerate(data.item_features)},
        }
        pq.write_table(pa.table(items), tmp / "items.parquet")
        pq.write_table(
            pa.table(
                {
                    "customer": data.purchases[:, 0],
                    "item": data.purchases[:, 1],
                    "first_day": data.purchase_days,
                }
            ),
            tmp / "purchases.parquet",
        )
        meta = {
            "user_categories": data.user_categories,
            "item_features": data.item_features,
            "item_categories": data.item_categories,
            "n_transactions": data.n_transactions,
            "n_articles": data.n_articles,
            "dropped_transactions": data.dropped_transactions,
            "unknown_customers": data.unknown_customers,
            "unknown_articles": data.unknown_articles,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_processed(directory: Path) -> HMData:
    users = pq.read_table(directory / "users.parquet")
    items = pq.read_table(directory / "items.parquet")
    purchases = pq.read_table(directory / "purchases.parquet")
    meta = json.loads((directory / "meta.json").read_text())
    return HMData(
        age=users["age"].to_numpy().astype(np.float32),
        user_codes=np.stack([users[f].to_numpy() for f in USER_CATEGORICAL], axis=1).astype(
            np.int64
        ),
        user_categories={f: tuple(c) for f, c in meta["user_categories"].items()},
        article_ids=items["article_id"].to_numpy(),
        purchase_counts=items["purchase_count"].to_numpy(),
        item_features=tuple(meta["item_features"]),
        item_codes=np.stack(
            [items[f"code.{f}"].to_numpy() for f in meta["item_features"]], axis=1
        ).astype(np.int64),
        item_categories=tuple(tuple(c) for c in meta["item_categories"]),
        item_names=tuple(items["name"].to_pylist()),
        purchases=np.stack(
            [purchases["customer"].to_numpy(), purchases["item"].to_numpy()], axis=1
        ),
        purchase_days=purchases["first_day"].to_numpy().astype("datetime64[D]"),
        n_transactions=int(meta["n_transactions"]),
        n_articles=int(meta["n_articles"]),
        dropped_transactions=int(meta["dropped_transactions"]),
        unknown_customers=int(meta["unknown_customers"]),
        unknown_articles=int(meta["unknown_articles"]),
    )


def load_kaggle(
    data_dir: str | os.PathLike,
    n_items: int | None = 100,
    item_features: str | Sequence[str] = ("prod_name",),
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    unknown_ids: str = "drop",
) -> HMData:
    """Process the Kaggle files in ``data_dir``, reusing a cached result when the files are
    unchanged.

    The cache lives in ``cache_dir`` (default: ``data_dir/.recsim_ft_cache``), one folder per
    parameters-and-files key; if that folder cannot be written, the data is processed without
    a cache and a warning says why. ``unknown_ids`` as in :func:`process` (a cached result
    that dropped rows warns again).
    """
    files = find_kaggle_files(data_dir)
    n_items = check_n_items(n_items)
    item_features = check_item_features(item_features)
    if not cache:
        return process(files, n_items, item_features, unknown_ids)
    check_choice("unknown_ids", unknown_ids, UNKNOWN_IDS)
    root = Path(cache_dir) if cache_dir is not None else Path(data_dir) / ".recsim_ft_cache"
    directory = root / f"hm-{cache_key(files, n_items, item_features, unknown_ids)}"
    if directory.is_dir():
        try:
            data = load_processed(directory)
            _warn_dropped(data, str(files["transactions"]))
            return data
        except (OSError, KeyError, ValueError, pa.ArrowInvalid) as e:
            warnings.warn(
                f"ignoring unreadable H&M cache {directory} ({e}); processing the files again",
                stacklevel=2,
            )
    data = process(files, n_items, item_features, unknown_ids)
    try:
        if not directory.exists():
            save_processed(data, directory)
    except OSError as e:
        warnings.warn(
            f"could not write the H&M cache to {root} ({e}); pass cache_dir= to cache elsewhere",
            stacklevel=2,
        )
    return data
