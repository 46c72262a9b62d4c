"""Serve a trained model without recsim-ft: the user tower as an ONNX graph, the item side as
plain arrays.

A service then answers a user in two steps: run ``user_tower.onnx`` on the user's features
(``numeric`` float32 (n, n_numeric), ``categorical`` int64 (n, n_categorical) codes, as the
model's user schema orders them) to get ``user_embedding`` (n, d), and rank ``items.npy`` by
``embedding . items[j] + item_prior[j]`` (exactly, or with a FAISS index of the ``retrieval``
extra). The ONNX export needs the ``onnx`` extra (onnx, onnxscript; onnxruntime to check it).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recsim_ft.checks import check_int
from recsim_ft.fileio import atomic_directory, atomic_path
from recsim_ft.models import FeatureTensors, TwoTower
from recsim_ft.retrieval.catalogue import (
    EXPORT_MANIFEST,
    PRIOR_FILE,
    USER_TOWER,
    VECTORS_FILE,
    ItemEmbeddings,
    embed_rows,
    save_array,
)
from recsim_ft.retrieval.catalogue import MANIFEST_FILE as ITEMS_MANIFEST
from recsim_ft.schema import Batch

#: The files :func:`export_model` writes besides those of :meth:`ItemEmbeddings.save`.
USER_TOWER_FILE, USERS_FILE, USER_IDS_FILE, MANIFEST_FILE = (
    USER_TOWER,
    "users.npy",
    "user_ids.npy",
    EXPORT_MANIFEST,
)
#: Every file an export may write (what a folder replaced by an export may hold).
EXPORT_FILES = (
    VECTORS_FILE,
    PRIOR_FILE,
    ITEMS_MANIFEST,
    USERS_FILE,
    USER_IDS_FILE,
    USER_TOWER_FILE,
    MANIFEST_FILE,
)
#: Largest difference allowed between the ONNX graph's embeddings and the model's (float32:
#: both compute the same ops, in another order).
ONNX_TOLERANCE = 1e-4


class _UserTower(nn.Module):
    """The user tower as a function of two plain tensors (what an ONNX graph takes)."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.tower = model.user_tower

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        return self.tower.embed(FeatureTensors(numeric, categorical))


@contextmanager
def _exporter_quiet() -> Iterator[None]:
    """Silence what torch's ONNX exporter and onnxscript log and warn while they work (missing
    torchvision ops, deprecations of their own internals): not the user's business. Errors
    still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxscript  # noqa: F401 (torch.onnx's exporter needs it)
    except ImportError as err:
        raise ImportError(
            "exporting the user tower needs onnx and onnxscript: pip install 'recsim-ft[onnx]'"
        ) from err
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    return onnx, onnxruntime


def sample_users(model: TwoTower, n: int, seed: int = 0) -> Batch:
    """``n`` random users of the model's user schema (numeric features uniform within their
    bounds, or over a width of 2 beside an infinite one; every categorical code possible), to
    check an export on."""
    schema, rng = model.user_schema, np.random.default_rng(seed)
    numeric = [f for f in schema.features if f.kind == "numeric"]
    low = np.array([f.low for f in numeric], np.float64)
    high = np.array([f.high for f in numeric], np.float64)
    low = np.where(np.isfinite(low), low, np.where(np.isfinite(high), high - 2, -1.0))
    high = np.where(np.isfinite(high), high, low + 2)
    return Batch(
        (low + (high - low) * rng.random((n, len(numeric)))).astype(np.float32),
        np.stack([rng.integers(0, c, n) for c in schema.cardinalities], 1)
        if schema.n_categorical
        else np.zeros((n, 0), np.int64),
        np.arange(n),
    )


def export_user_tower(
    model: TwoTower,
    path: str | os.PathLike,
    overwrite: bool = False,
    check_users: Batch | None = None,
) -> dict[str, Any]:
    """Write the user tower as an ONNX graph (inputs ``numeric``, ``categorical``, any number of
    rows; output ``user_embedding``) and, where onnxruntime is installed, check it: its outputs for
    ``check_users`` (default: 256 users of :func:`sample_users`) within :data:`ONNX_TOLERANCE`
    of the model's, else a RuntimeError. Returns what was checked (``max_abs_difference``, or
    None without onnxruntime). The graph runs the Mamba blocks' plain ops (the step-by-step
    scan, unrolled over the user's tokens), the same function as the C kernels. It does not
    validate its input: out-of-range categorical codes fail in the runtime, NaN gives NaN.
    """
    onnx, onnxruntime = _onnx_modules()
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    module = _UserTower(model).eval()
    example = FeatureTensors.from_batch(sample_users(model, 2))
    rows = torch.export.Dim("users")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _exporter_quiet():
            program = torch.onnx.export(
                module,
                tuple(t.to(model.device) for t in example),
                dynamo=True,
                input_names=["numeric", "categorical"],
                output_names=["user_embedding"],
                dynamic_shapes={"numeric": {0: rows}, "categorical": {0: rows}},
                verbose=False,
            )
    finally:
        model.train(was_training)
    with atomic_path(path) as tmp:
        onnx.save(program.model_proto, str(tmp))
    report: dict[str, Any] = {"max_abs_difference": None, "checked_users": 0}
    if onnxruntime is not None:
        users = check_users if check_users is not None else sample_users(model, 256)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(
            None,
            {
                "numeric": np.asarray(users.numeric, np.float32),
                "categorical": np.asarray(users.categorical, np.int64),
            },
        )[0]
        difference = float(np.abs(got - embed_rows(model, users, "users")).max())
        if not difference <= ONNX_TOLERANCE:
            raise RuntimeError(
                f"{path}: the ONNX graph's embeddings differ from the model's by {difference:.3g} "
                f"(> {ONNX_TOLERANCE}): do not serve this graph"
            )
        report = {"max_abs_difference": difference, "checked_users": len(users.ids)}
    return report


def export_model(
    model: TwoTower,
    item_table: Batch,
    directory: str | os.PathLike,
    users: Batch | None = None,
    onnx: bool = True,
    overwrite: bool = False,
    batch_rows: int = 4096,
) -> dict[str, Any]:
    """Everything a service needs, into ``directory``: the item embeddings and prior
    (:meth:`ItemEmbeddings.save`), ``users``' embeddings and ids where given (``users.npy``,
    ``user_ids.npy``), the ONNX user tower where ``onnx`` (:func:`export_user_tower`), and
    ``export.json`` saying what each file is. Returns the manifest.

    An export is all of one model or nothing: it is written into a fresh folder that then
    replaces ``directory`` (only with ``overwrite``, and only a folder that holds nothing but
    an export's files: a service's own files beside it are never deleted), so a failed export
    leaves ``directory`` as it was, and files of an earlier export that this one does not write
    are gone with it."""
    check_int("batch_rows", batch_rows, low=1)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file; an export is written to a folder")
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    foreign = [name for name in present if name not in EXPORT_FILES]
    if foreign:
        raise FileExistsError(
            f"{directory} holds files an export does not write ({', '.join(foreign)}); "
            "export to a folder of its own"
        )
    if present and not overwrite:
        raise FileExistsError(
            f"{directory} already holds {', '.join(present)}; pass overwrite=True (--overwrite) "
            "to replace them"
        )
    with atomic_directory(directory, replace=True) as folder:
        return _write_export(model, item_table, folder, users, onnx, batch_rows)


def _write_export(
    model: TwoTower,
    item_table: Batch,
    directory: Path,
    users: Batch | None,
    onnx: bool,
    batch_rows: int,
) -> dict[str, Any]:
    """What :func:`export_model` writes, into the empty folder ``directory``."""
    items = ItemEmbeddings.from_model(model, item_table, batch_rows, progress=None)
    items.save(directory)
    manifest: dict[str, Any] = {
        "embedder": model.config.embedder,
        "dim": items.dim,
        "n_items": items.n_items,
        "score": "user_embedding . items.npy[j] + item_prior.npy[j]",
        "user_features": {
            "numeric": [f.name for f in model.user_schema.features if f.kind == "numeric"],
            "categorical": {
                f.name: list(f.categories)
                for f in model.user_schema.features
                if f.kind == "categorical"
            },
        },
    }
    if users is not None:
        for name, array in (
            (USERS_FILE, embed_rows(model, users, "users", batch_rows, progress=None)),
            (USER_IDS_FILE, np.asarray(users.ids, np.int64)),
        ):
            save_array(directory / name, array)
        manifest["n_users"] = len(users.ids)
    if onnx:
        manifest["user_tower_check"] = export_user_tower(model, directory / USER_TOWER_FILE)
    with atomic_path(directory / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
