"""Saved files: a log or model file loads exactly as written or fails naming the file (bit flips
anywhere in it), files written before the checksums still load, equal models give equal bytes,
and every file gets the umask's usual mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.data import InteractionLog, collect
from recsim_ft.data.log import METADATA_KEY
from recsim_ft.envs.hm.data import process, save_processed
from recsim_ft.envs.hm.synthetic import generate_frames
from recsim_ft.experiments.rundir import write_atomic
from recsim_ft.models import TwoTower
from recsim_ft.models.io import FORMAT, read_model_file, write_model_file

#: bit flips per file: spread over the whole file by a seeded generator
FLIPS = 400


@pytest.fixture(scope="module")
def log() -> InteractionLog:
    """A log with numeric and categorical user features and an item table."""
    env = gym.make("VaccineMessaging-v0", n_users=300, clusters=3, messages=6)
    return collect(env, n=100, seed=0)


@pytest.fixture(scope="module")
def model() -> TwoTower:
    return TwoTower.from_env(gym.make("Spotify-v0"), "mlp", "quick", seed=0)


def assert_same_log(loaded: InteractionLog, saved: InteractionLog) -> None:
    """Every field equal, arrays bit for bit."""
    for name in ("actions", "rewards", "propensities"):
        a, b = getattr(loaded, name), getattr(saved, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    for batch in ("users", "item_table"):
        for part in ("numeric", "categorical", "ids"):
            a, b = getattr(getattr(loaded, batch), part), getattr(getattr(saved, batch), part)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert (loaded.env_id, loaded.env_kwargs, loaded.seed) == (
        saved.env_id,
        saved.env_kwargs,
        saved.seed,
    )
    assert (loaded.user_schema, loaded.item_schema) == (saved.user_schema, saved.item_schema)


def assert_same_tensors(loaded: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == saved.keys()
    for name, tensor in saved.items():
        other = loaded[name]
        assert other.dtype == tensor.dtype and other.shape == tensor.shape, name
        assert other.numpy().tobytes() == tensor.numpy().tobytes(), name


def flipped_copies(path: Path, out: Path, seed: int):
    """``FLIPS`` copies of ``path`` with one bit flipped each, at seeded random positions (half of
    them in the first 10% of the file, where the headers are), written to ``out`` in turn."""
    data = path.read_bytes()
    rng = np.random.default_rng(seed)
    head = max(len(data) // 10, 1)
    positions = np.concatenate(
        [rng.integers(0, head, FLIPS // 2), rng.integers(0, len(data), FLIPS - FLIPS // 2)]
    )
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 1 << int(rng.integers(8))
        out.write_bytes(bytes(damaged))
        yield int(position)


# -- logs ------------------------------------------------------------------------------------------
def test_a_log_loads_exactly_as_saved(log, tmp_path):
    assert_same_log(InteractionLog.load(log.save(tmp_path / "log.parquet")), log)
    assert pq.ParquetFile(tmp_path / "log.parquet").metadata.num_rows == len(log)


def test_a_damaged_log_fails_naming_the_file_or_loads_identical_data(log, tmp_path):
    saved = log.save(tmp_path / "log.parquet")
    damaged = tmp_path / "damaged.parquet"
    refused = 0
    for position in flipped_copies(saved, damaged, seed=0):
        try:
            loaded = InteractionLog.load(damaged)
        except ValueError as err:
            assert str(damaged) in str(err), (position, err)
            refused += 1
            continue
        assert_same_log(loaded, log)
    assert refused > FLIPS // 2  # most flips are caught, not harmless


def test_a_log_written_before_the_checksums_loads_without_them(log, tmp_path):
    """Version 1 files: the same columns, metadata without the digest, pages without CRCs."""
    meta = {**log._metadata(), "version": 1}
    table = pa.table(log._columns(with_items=False)).replace_schema_metadata(
        {METADATA_KEY: json.dumps(meta).encode()}
    )
    pq.write_table(table, tmp_path / "old.parquet")
    assert_same_log(InteractionLog.load(tmp_path / "old.parquet"), log)


def test_log_metadata_that_is_not_utf8_names_the_file(log, tmp_path):
    table = pa.table(log._columns(with_items=False)).replace_schema_metadata(
        {METADATA_KEY: b'{"format": "\xff\xfe"}'}
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet: the recsim-ft metadata is corrupted"):
        InteractionLog.load(tmp_path / "bad.parquet")


def test_the_same_log_gives_the_same_bytes(log, tmp_path):
    first = log.save(tmp_path / "a.parquet").read_bytes()
    assert InteractionLog.load(tmp_path / "a.parquet").save(
        tmp_path / "b.parquet"
    ).read_bytes() == (first)


# -- model files -----------------------------------------------------------------------------------
def test_a_damaged_model_file_fails_naming_the_file_or_loads_identical_tensors(model, tmp_path):
    saved = model.save(tmp_path / "model.safetensors")
    tensors, meta = read_model_file(saved)
    damaged = tmp_path / "damaged.safetensors"
    refused = 0
    for position in flipped_copies(saved, damaged, seed=1):
        try:
            loaded, loaded_meta = read_model_file(damaged)
        except ValueError as err:
            assert str(damaged) in str(err), (position, err)
            refused += 1
            continue
        assert_same_tensors(loaded, tensors)
        assert loaded_meta == meta
    assert refused > FLIPS // 2


def test_equal_models_give_byte_identical_files(model, tmp_path):
    """The header's metadata is one JSON entry with sorted keys: safetensors writes several
    entries in a random order."""
    twin = TwoTower.from_env(gym.make("Spotify-v0"), "mlp", "quick", seed=0)
    files = [m.save(tmp_path / f"{i}.safetensors") for i, m in enumerate((model, model, twin))]
    files += [TwoTower.load(files[0]).save(tmp_path / "reloaded.safetensors")]
    contents = {f.read_bytes() for f in files}
    assert len(contents) == 1


def test_a_model_file_written_before_the_digest_still_loads(model, tmp_path):
    """Version 1: three metadata entries (format, version, meta), no digest."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {
        "config": json.loads(json.dumps(vars(model.config))),
        "user_schema": model.user_schema.to_dict(),
        "item_schema": model.item_schema.to_dict(),
    }
    header = {"format": FORMAT, "version": "1", "meta": json.dumps(meta)}
    save_file(state, str(tmp_path / "old.safetensors"), metadata=header)
    loaded = TwoTower.load(tmp_path / "old.safetensors")
    assert_same_tensors(loaded.state_dict(), state)
    assert loaded.config == model.config


def test_a_model_file_with_other_tensors_than_its_digest_is_refused(tmp_path):
    path = write_model_file(tmp_path / "m.safetensors", {"w": torch.ones(3)}, {"a": 1})
    data = path.read_bytes()
    one = torch.ones(1).numpy().tobytes()
    path.write_bytes(data[: -len(one)] + torch.full((1,), 2.0).numpy().tobytes())
    with pytest.raises(ValueError, match=r"m.safetensors: the content differs from what was saved"):
        read_model_file(path)


# -- file modes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_the_umask_mode(log, model, tmp_path, umask):
    old = os.umask(umask)
    try:
        files = [
            log.save(tmp_path / "log.parquet"),
            model.save(tmp_path / "model.safetensors"),
        ]
        write_atomic(tmp_path / "run" / "config.json", "{}")
        files.append(tmp_path / "run" / "config.json")
        cache = tmp_path / "cache" / "hm-key"  # the processed H&M files: a directory
        save_processed(process(generate_frames(300, 0), n_items=5), cache)
        files += sorted(cache.iterdir())
    finally:
        os.umask(old)
    for path in files:
        assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask), path
    assert oct(cache.stat().st_mode & 0o777) == oct(0o777 & ~umask)
