"""Model files: a single safetensors file whose header carries the format, version and JSON
metadata (config and schemas), so a model file is self-describing and checked on load."""

from __future__ import annotations

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
VERSION = 1
#: The model file's name in a run directory (``recsim-ft train --out``, every run of a sweep).
MODEL_FILE = "model.safetensors"


def write_model_file(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write ``tensors`` and JSON ``meta`` as a model file; refuse to replace an existing file
    unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    header = {"format": FORMAT, "version": str(VERSION), "meta": json.dumps(meta)}
    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata=header,
        )
    return path


def read_model_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a file written by :func:`write_model_file` (``path``, or the
    ``MODEL_FILE`` of the run directory ``path``), with clear errors for a missing file, another
    kind of file, another format version or a damaged file."""
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
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise ValueError(
                    f"{path} is not a recsim-ft two-tower model "
                    f"(format {header.get('format')!r}, expected {FORMAT!r})"
                )
            if header.get("version") != str(VERSION):
                raise ValueError(
                    f"{path} is a version {header.get('version')} model file; "
                    f"this recsim-ft reads version {VERSION}"
                )
            tensors = {k: f.get_tensor(k).to(map_location) for k in f.keys()}
        meta = json.loads(header["meta"])
    except (SafetensorError, json.JSONDecodeError, KeyError, OSError) as err:
        raise ValueError(
            f"{path} is not a readable recsim-ft model file (damaged or another "
            f"kind of file): {err}"
        ) from err
    return tensors, meta
