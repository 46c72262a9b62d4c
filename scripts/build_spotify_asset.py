"""Build the compact Spotify asset that ships inside the package from the raw shared CSVs.

The raw data (``../shared/data/spotify``, MIT, sukiboo/policy_entropy) are twenty genre
playlists plus the "Top 50 - Global" playlist, one row per track with ten audio features. The
environment needs only numbers derived from them, so we ship:

- ``spotify.json``: the genre matrix G (20 x 10, mean audio features of each genre playlist,
  genres in alphabetical order), the Top-50 matrix S (50 x 10, playlist order), genre names,
  audio-feature names, and the id, title and artist of each Top-50 track;
- ``spotify_LICENSE.txt``: the source's MIT licence, copied verbatim;
- ``spotify_PROVENANCE.md``: where the numbers come from and how they were derived, with the
  SHA-256 of every source file read.

G is recomputed from the playlists (``spotify_features.csv`` states the same means; the build
refuses to continue if the two disagree), so the asset follows the README's definition rather
than a copy of a derived file.

Usage (from the repo root)::

    python scripts/build_spotify_asset.py [--src ../shared/data/spotify] [--out recsim_ft/assets]
        [--overwrite]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO_ROOT / ".." / "shared" / "data" / "spotify"
DEFAULT_OUT = REPO_ROOT / "recsim_ft" / "assets"

AUDIO_FEATURES = (
    "acousticness",
    "danceability",
    "energy",
    "instrumentalness",
    "liveness",
    "loudness",
    "mode",
    "speechiness",
    "tempo",
    "valence",
)
ASSET_NAMES = ("spotify.json", "spotify_LICENSE.txt", "spotify_PROVENANCE.md")
# spotify_features.csv states the genre means to ~1e-16; anything larger means the files disagree
MEANS_TOLERANCE = 1e-9


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read ``path`` and check it has ``columns`` without missing values (errors name both)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing Spotify source file: {path}")
    frame = pd.read_csv(path, index_col=0)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    for column in columns:
        if frame[column].isna().any():
            raise ValueError(f"{path}: column {column!r} has missing values")
    return frame


def _playlist(src: Path, name: str) -> pd.DataFrame:
    frame = _read_csv(src / "playlists" / f"{name}.csv", ("id", *AUDIO_FEATURES))
    for column in AUDIO_FEATURES:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(
                f"{src / 'playlists' / f'{name}.csv'}: column {column!r} is not numeric"
            )
    return frame


def build_asset(src: Path) -> dict:
    """The asset's content (plain JSON types) derived from the raw files in ``src``."""
    src = Path(src)
    stated = _read_csv(src / "spotify_features.csv", ())
    genres = sorted(_read_csv(src / "spotify_genres.csv", ("genre",))["genre"].astype(str))
    if sorted(stated.index.astype(str)) != genres:
        raise ValueError(f"{src / 'spotify_features.csv'}: genres differ from spotify_genres.csv")
    genre_matrix = np.stack(
        [_playlist(src, g)[list(AUDIO_FEATURES)].mean().to_numpy() for g in genres]
    )
    gap = np.abs(genre_matrix - stated.loc[genres].to_numpy(dtype=np.float64)).max()
    if gap > MEANS_TOLERANCE:
        raise ValueError(
            f"{src / 'spotify_features.csv'} differs from the playlist means by {gap:.3g}; "
            "the README defines G as the means, check the source files"
        )

    action_playlist = _read_csv(src / "spotify_actions.csv", ("genre",))["genre"].astype(str)
    if list(action_playlist) != ["top50"]:
        raise ValueError(
            f"{src / 'spotify_actions.csv'}: expected the single action playlist 'top50'"
        )
    top50 = _playlist(src, "top50")
    tracks = _read_csv(src / "spotify_top50.csv", ("id", "name", "artist"))
    if list(tracks["id"]) != list(top50["id"]):
        raise ValueError(f"{src / 'spotify_top50.csv'}: track ids differ from playlists/top50.csv")

    return {
        "genres": genres,
        "audio_features": list(AUDIO_FEATURES),
        "genre_matrix": genre_matrix.tolist(),
        "top50_matrix": top50[list(AUDIO_FEATURES)].to_numpy(dtype=np.float64).tolist(),
        "track_ids": tracks["id"].astype(str).tolist(),
        "titles": tracks["name"].astype(str).tolist(),
        "artists": tracks["artist"].astype(str).tolist(),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance_note(src: Path, asset: dict) -> str:
    files = [
        "README.md",
        "LICENSE",
        "spotify_features.csv",
        "spotify_genres.csv",
        "spotify_actions.csv",
        "spotify_top50.csv",
    ]
    files += [f"playlists/{g}.csv" for g in asset["genres"]] + ["playlists/top50.csv"]
    digests = "\n".join(f"| `{f}` | `{_sha256(src / f)}` |" for f in files)
    return f"""# Provenance of `spotify.json`

Source: public repository `sukiboo/policy_entropy`, directory `environments/spotify/`
(data of "Analyzing Policy Entropy of Reinforcement Learning Agents for Personalization Tasks",
Dereventsov, Starnes, Webster, 2022), MIT licence, copyright (c) 2022 Anton Dereventsov; the
licence is copied verbatim in `spotify_LICENSE.txt`.

Derived by `scripts/build_spotify_asset.py` on {dt.date.today().isoformat()}:
- `genre_matrix` (G, 20 x 10): mean of the ten audio-feature columns of each genre playlist
  `playlists/<genre>.csv`, genres in alphabetical order. It equals `spotify_features.csv`
  (checked at build time, max difference <= {MEANS_TOLERANCE:g}).
- `top50_matrix` (S, 50 x 10): the audio features of `playlists/top50.csv` in playlist order.
- `track_ids`, `titles`, `artists`: `spotify_top50.csv` (same ids and order as the playlist).
- `genres`, `audio_features`: the row and column names. Nothing else (no track lists of the
  genre playlists) is shipped.

Source files read (SHA-256):

| file | sha256 |
| --- | --- |
{digests}
"""


def asset_json(asset: dict) -> str:
    """JSON with one key, or one matrix row, per line (readable diffs of the shipped numbers)."""

    def value(v: list) -> str:
        if v and isinstance(v[0], list):
            return "[\n  " + ",\n  ".join(json.dumps(row) for row in v) + "\n ]"
        return json.dumps(v, ensure_ascii=False)

    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in asset.items()) + "\n}\n"


def write_asset(src: Path, out: Path, overwrite: bool = False) -> list[Path]:
    """Write the three asset files into ``out``; refuses to replace existing ones unless
    ``overwrite``."""
    src, out = Path(src), Path(out)
    targets = [out / name for name in ASSET_NAMES]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} already exist; pass --overwrite to replace them")
    asset = build_asset(src)
    licence = src / "LICENSE"
    if not licence.is_file():
        raise FileNotFoundError(f"missing Spotify source file: {licence}")
    out.mkdir(parents=True, exist_ok=True)
    targets[0].write_text(asset_json(asset), encoding="utf-8")
    shutil.copyfile(licence, targets[1])
    targets[2].write_text(provenance_note(src, asset), encoding="utf-8")
    return targets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="raw Spotify data directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="asset directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace existing asset files")
    args = parser.parse_args(argv)
    for path in write_asset(args.src, args.out, overwrite=args.overwrite):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
