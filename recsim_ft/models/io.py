"""Model files: a single safetensors file whose header carries the format, version and JSON
metadata (config and schemas), so a model file is self-describing and checked on load.

The header holds one metadata entry, ``recsim_ft``: a JSON object with sorted keys (the
safetensors writer orders several entries at random, so one entry makes equal models give equal
bytes) that includes a SHA-256 of the tensors and the metadata, checked on load, so a file
loads exactly as written or fails naming it. Files written before (version 1: entries
``format``, ``version``, ``meta``, no digest) still load, without that check.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from recsim_ft._deprecation import moved_names
from recsim_ft.fileio import atomic_path

#: The functions were named ``*_checkpoint`` before version 0.2 ("checkpoint" now means only the
#: trainer's resume state).
__getattr__ = moved_names(
    __name__,
    {
        "write_checkpoint": f"{__name__}.write_model_file",
        "read_checkpoint": f"{__name__}.read_model_file",
    },
)

FORMAT = "recsim-ft.two-tower"
VERSION = 2
#: The safetensors metadata entry that holds everything recsim-ft writes (version 2 on).
HEADER_KEY = "recsim_ft"
#: The model file's name in a run directory (``recsim-ft train --out``, every run of a sweep).
MODEL_FILE = "model.safetensors"


def content_digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata's JSON text and every tensor (name, dtype, shape, bytes), in name
    order: equal content gives an equal digest."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_model_file(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write ``tensors`` and JSON ``meta`` as a model file (equal content, equal bytes); refuse
    to replace an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "meta": meta,
        "sha256": content_digest(tensors, meta),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
    return path


def read_model_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a file written by :func:`write_model_file` (``path``, or the
    ``MODEL_FILE`` of the run directory ``path``), exactly as written, with clear errors for a
    missing file, another kind of file, another format version or a damaged file (one whose
    content no longer matches its digest)."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"no model file in {path} (a run directory holds one as {MODEL_FILE} once a "
                "two-tower run has finished)"
            )
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = _header(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable recsim-ft model file (damaged or another "
            f"kind of file): {err}"
        ) from err
    if header.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a recsim-ft two-tower model "
            f"(format {header.get('format')!r}, expected {FORMAT!r})"
        )
    version, meta = header.get("version"), header.get("meta")
    if version not in (1, VERSION):
        raise ValueError(
            f"{path} is a version {version!r} model file; this recsim-ft reads versions 1 to "
            f"{VERSION}"
        )
    if not isinstance(meta, dict) or (
        version != 1 and header.get("sha256") != content_digest(tensors, meta)
    ):
        raise ValueError(
            f"{path}: the content differs from what was saved (its content digest does not "
            "match): the file is damaged"
        )
    return {k: v.to(map_location) for k, v in tensors.items()}, meta


def _header(entries: dict[str, str]) -> dict[str, Any]:
    """The recsim-ft header of a model file's metadata entries: version 2 (one JSON entry) or
    version 1 (entries ``format``, ``version`` and the JSON ``meta``)."""
    if HEADER_KEY in entries:
        header = json.loads(entries[HEADER_KEY])
        return header if isinstance(header, dict) else {}
    return {
        "format": entries.get("format"),
        "version": 1 if entries.get("version") == "1" else entries.get("version"),
        "meta": json.loads(entries["meta"]) if "meta" in entries else None,
    }
