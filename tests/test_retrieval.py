"""Retrieval over the whole catalogue and export for serving (``recsim_ft.retrieval``): exact
top-k against the model's own ranking, the FAISS index against exact, the ONNX user tower
against the model, and the ``export`` command."""

from __future__ import annotations

import importlib
import importlib.util
import json

import numpy as np
import pytest
import torch

from recsim_ft.cli import main
from recsim_ft.metrics import top_k
from recsim_ft.models import TwoTower
from recsim_ft.retrieval import (
    ApproximateIndex,
    ItemEmbeddings,
    embed_rows,
    export_model,
    export_user_tower,
    recall_at_k,
    sample_users,
)
from recsim_ft.schema import Batch, Feature, Schema

USERS = Schema(
    (
        Feature("age", "numeric", low=16, high=99),
        Feature("x", "numeric"),
        Feature("club", "categorical", ("a", "b", "c")),
        Feature("news", "categorical", ("none", "weekly")),
    )
)
needs_faiss = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="the retrieval extra (faiss-cpu)"
)
needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the onnx extra",
)


def runtime():
    return importlib.import_module("onnxruntime")


ITEMS = Schema((Feature("article", "categorical", tuple(f"a{i}" for i in range(300))),))


def model(embedder: str, prior: bool = False) -> TwoTower:
    m = TwoTower.from_schemas(USERS, ITEMS, embedder, "quick", seed=3)
    if prior:
        m.set_item_prior(torch.linspace(-2, 2, 300))
    return m


def item_table() -> Batch:
    return Batch(np.zeros((300, 0), np.float32), np.arange(300)[:, None], np.arange(300))


def random_items(n: int, d: int, seed: int = 0, prior_scale: float = 0.0) -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    return ItemEmbeddings(rng.normal(size=(n, d)), prior_scale * rng.normal(size=n))


@pytest.mark.parametrize("prior", [False, True])
def test_exact_top_k_is_the_models_own_ranking(prior):
    m = model("mamba", prior)
    users = sample_users(m, 50, seed=1)
    items = ItemEmbeddings.from_model(m, item_table(), batch_rows=64)
    with torch.no_grad():
        scores = m.score_all(users, item_table()).numpy()
    for block in (1, 300, 301, 10**9):  # one user per block, one per block exactly, more, all
        ids, got = items.top_k(embed_rows(m, users, batch_rows=7), 10, block_scores=block)
        np.testing.assert_array_equal(ids, top_k(scores, 10))
        np.testing.assert_allclose(got, np.take_along_axis(scores, ids, 1), rtol=1e-5, atol=1e-5)
    assert np.abs(items.prior).max() == (2.0 if prior else 0.0)


def test_exact_top_k_keeps_equal_scores_in_index_order():
    items = ItemEmbeddings(np.ones((6, 2)), np.array([0, 1, 1, 0, 1, 0]))
    ids, scores = items.top_k(np.array([[1.0, 0.0], [0.0, 0.0]]), 4)
    assert ids.tolist() == [[1, 2, 4, 0], [1, 2, 4, 0]]
    assert scores.tolist() == [[2.0, 2.0, 2.0, 1.0], [1.0, 1.0, 1.0, 0.0]]
    # items of equal features share their embedding: ties at the cut in most rows
    rng = np.random.default_rng(4)
    tied = ItemEmbeddings(rng.normal(size=(7, 3))[rng.integers(0, 7, 500)], np.zeros(500))
    queries = rng.normal(size=(60, 3)).astype(np.float32)
    expected = top_k(queries @ tied.vectors.T, 10)
    for block in (500, 7_000, 10**9):
        np.testing.assert_array_equal(tied.top_k(queries, 10, block_scores=block)[0], expected)


def test_bad_input_is_refused_naming_it():
    items = random_items(20, 4)
    with pytest.raises(ValueError, match=r"shape \(n, 4\), got shape \(3, 5\)"):
        items.top_k(np.zeros((3, 5)), 2)
    with pytest.raises(ValueError, match="query row 1 is not finite"):
        items.top_k(np.array([[0, 0, 0, 0], [0, np.nan, 0, 0]]), 2)
    with pytest.raises(ValueError, match="k must be an integer in"):
        items.top_k(np.zeros((1, 4)), 21)
    with pytest.raises(ValueError, match="not finite at item 2"):
        ItemEmbeddings(np.ones((3, 2)), np.array([0, 0, np.inf]))
    with pytest.raises(ValueError, match="one value per item"):
        ItemEmbeddings(np.ones((3, 2)), np.zeros(2))
    m = model("mlp", prior=True)
    with pytest.raises(ValueError, match="prior has 300 items, the catalogue 10"):
        ItemEmbeddings.from_model(m, item_table()[:10])


def test_item_embeddings_save_load_and_never_overwrite(tmp_path):
    items = random_items(30, 3, prior_scale=1.0)
    items.save(tmp_path / "e")
    back = ItemEmbeddings.load(tmp_path / "e")
    np.testing.assert_array_equal(back.vectors, items.vectors)
    np.testing.assert_array_equal(back.prior, items.prior)
    manifest = json.loads((tmp_path / "e" / "items.json").read_text())
    assert manifest["n_items"] == 30 and manifest["dim"] == 3
    before = (tmp_path / "e" / "items.npy").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        random_items(30, 3, seed=1).save(tmp_path / "e")
    assert (tmp_path / "e" / "items.npy").read_bytes() == before
    (tmp_path / "e" / "item_prior.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="damaged"):
        ItemEmbeddings.load(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="no items.npy"):
        ItemEmbeddings.load(tmp_path)
    # a model's export: items saved alone over it would be served with another user tower
    (tmp_path / "e" / "user_tower.onnx").write_bytes(b"a tower")
    with pytest.raises(FileExistsError, match="holds a model's export.*export_model"):
        items.save(tmp_path / "e", overwrite=True)
    with pytest.raises(FileExistsError, match="is a file"):
        items.save(tmp_path / "e" / "user_tower.onnx")


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 1]])) == 1.0
    assert recall_at_k(np.array([[1, -1], [5, 6]]), np.array([[1, 2], [7, 8]])) == 0.25
    with pytest.raises(ValueError, match="one shape"):
        recall_at_k(np.zeros((2, 3), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="found must be integer item ids, got dtype float64"):
        recall_at_k(np.array([[1.5, 2.0]]), np.array([[1, 2]]))  # 1.5 would count as a miss


@needs_faiss
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_ranks_what_the_model_ranks_prior_included(kind):
    # the prior is as large as the inner products: an index that dropped it would miss half
    items = random_items(2_000, 8, prior_scale=3.0)
    queries = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float32)
    exhaustive = {"ivf": {"n_lists": 16, "n_probe": 16}, "hnsw": {"ef_search": 2_000}}
    index = ApproximateIndex(items, kind, **exhaustive.get(kind, {}))
    ids, scores = index.search(queries, 10)
    exact_ids, exact_scores = items.top_k(queries, 10)
    assert recall_at_k(ids, exact_ids) >= (0.99 if kind == "hnsw" else 1.0)
    if kind == "flat":
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-4)
    without_prior = ItemEmbeddings(items.vectors, 0 * items.prior).top_k(queries, 10)[0]
    assert recall_at_k(without_prior, exact_ids) < 0.8


@needs_faiss
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_of_a_catalogue_of_equal_items_expands_them_in_index_order(kind):
    # items of equal features share their embedding and prior: 40 distinct of 3,000
    rng = np.random.default_rng(6)
    group = rng.integers(0, 40, 3_000)
    items = ItemEmbeddings(rng.normal(size=(40, 8))[group], rng.normal(size=40)[group])
    queries = rng.normal(size=(100, 8)).astype(np.float32)
    index = ApproximateIndex(items, kind, n_probe=64, ef_search=64)
    assert index.index.ntotal == 40
    ids, scores = index.search(queries, 200)  # more items than one point holds
    exact_ids, exact_scores = items.top_k(queries, 200)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)
    assert index.recall(queries, 12) == 1.0


@needs_faiss
def test_index_finds_the_top_12_under_a_popularity_prior():
    # the popularity prior T log q: every item's prior negative and far from the others; as
    # inner products the IVF's cells and the HNSW graph followed the least bought items and
    # found 48% and 16% of the top 12
    rng = np.random.default_rng(7)
    counts = rng.zipf(1.5, 5_000).clip(max=10**6)
    items = ItemEmbeddings(rng.normal(size=(5_000, 16)) * 0.5, np.log(counts / counts.sum()))
    queries = rng.normal(size=(300, 16)).astype(np.float32)
    for kind in ("ivf", "hnsw"):
        assert ApproximateIndex(items, kind).recall(queries, 12) >= 0.95, kind


@needs_faiss
def test_approximate_index_reports_its_recall_and_builds_deterministically(tmp_path):
    items = random_items(3_000, 16)
    queries = np.random.default_rng(2).normal(size=(200, 16)).astype(np.float32)
    few = ApproximateIndex(items, "ivf", n_lists=64, n_probe=1)
    recall = few.recall(queries, 10)
    assert 0.0 < recall < 0.9  # one cell of 64 misses most of a random catalogue's top 10
    assert ApproximateIndex(items, "ivf", n_lists=64, n_probe=64).recall(queries, 10) == 1.0
    for kind in ("ivf", "hnsw"):
        one, two = (ApproximateIndex(items, kind, n_probe=2, ef_search=16) for _ in range(2))
        assert np.array_equal(one.search(queries, 10)[0], two.search(queries, 10)[0])
    few.save(tmp_path / "index.faiss")
    loaded = importlib.import_module("faiss").read_index(str(tmp_path / "index.faiss"))
    assert loaded.ntotal == 3_000
    with pytest.raises(FileExistsError):
        few.save(tmp_path / "index.faiss")
    with pytest.raises(ValueError, match="kind must be one of"):
        ApproximateIndex(items, "lsh")


@needs_onnx
@pytest.mark.parametrize("embedder", ["mamba", "transformer", "mlp"])
def test_onnx_user_tower_gives_the_models_embeddings(tmp_path, embedder):
    m = model(embedder)
    path = tmp_path / "user_tower.onnx"
    report = export_user_tower(m, path)
    assert report["checked_users"] == 256 and report["max_abs_difference"] <= 1e-4
    users = sample_users(m, 1_000, seed=5)  # another row count than the export's example
    session = runtime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"numeric": users.numeric, "categorical": users.categorical})[0]
    np.testing.assert_allclose(got, embed_rows(m, users), rtol=1e-4, atol=1e-5)
    assert m.training  # the export left the model as it found it
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_user_tower(m, path)


@needs_onnx
def test_export_model_writes_everything_a_service_needs(tmp_path):
    m = model("mamba", prior=True)
    users = sample_users(m, 40, seed=9)
    manifest = export_model(m, item_table(), tmp_path / "serve", users=users)
    out = tmp_path / "serve"
    items = ItemEmbeddings.load(out)
    session = runtime().InferenceSession(str(out / "user_tower.onnx"))
    served = session.run(None, {"numeric": users.numeric, "categorical": users.categorical})[0]
    ids, _ = items.top_k(served, 5)
    with torch.no_grad():
        np.testing.assert_array_equal(ids, top_k(m.score_all(users, item_table()).numpy(), 5))
    np.testing.assert_allclose(np.load(out / "users.npy"), served, rtol=1e-4, atol=1e-5)
    assert np.load(out / "user_ids.npy").tolist() == list(range(40))
    assert manifest == json.loads((out / "export.json").read_text())
    assert manifest["user_features"]["categorical"]["club"] == ["a", "b", "c"]
    stamp = (out / "items.npy").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="users.npy"):
        export_model(m, item_table(), out, users=users, onnx=False)
    assert (out / "items.npy").stat().st_mtime_ns == stamp


def test_an_export_folder_holds_one_model_or_keeps_what_it_held(tmp_path):
    """Issue 45: a second export with fewer files left the first's ONNX tower and users beside
    its own items; a failed export had already replaced items.npy."""
    first, second = model("mlp", prior=True), model("transformer")
    out = tmp_path / "serve"
    export_model(first, item_table(), out, users=sample_users(first, 10), onnx=False)
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError):  # users of another schema: fails after the items are embedded
        export_model(second, item_table(), out, users=item_table(), onnx=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept  # as it was
    manifest = export_model(second, item_table(), out, onnx=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "export.json",
        "item_prior.npy",
        "items.json",
        "items.npy",
    ]
    np.testing.assert_array_equal(
        ItemEmbeddings.load(out).vectors, ItemEmbeddings.from_model(second, item_table()).vectors
    )
    assert json.loads((out / "export.json").read_text()) == manifest and "n_users" not in manifest
    assert [p.name for p in tmp_path.iterdir()] == ["serve"]  # no temporary folder left
    (out / "app.py").write_text("my service")  # a service's own file: never deleted
    with pytest.raises(FileExistsError, match=r"files an export does not write \(app.py\)"):
        export_model(first, item_table(), out, onnx=False, overwrite=True)
    assert (out / "app.py").read_text() == "my service"


@needs_onnx
def test_export_command_on_a_trained_run(tmp_path, capsys):
    run = tmp_path / "run"
    train = "--preset quick --n 320 --steps 10 --eval-every 5 --users 40 --quiet".split()
    env = ["--env", "toy_env:ToyRec-v0", "--env-kwargs", "n_items=12", "n_groups=3"]
    assert main(["train", *env, "--embedder", "mamba", "--out", str(run), *train]) == 0
    capsys.readouterr()
    out = tmp_path / "serve"
    assert main(["export", "--run", str(run), "--out", str(out), "--users", "30"]) == 0
    said = capsys.readouterr().out
    assert "12 item embeddings" in said and "30 user embeddings" in said and "checked on" in said
    assert np.load(out / "users.npy").shape[0] == 30
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "--run", str(run), "--out", str(out), "--overwrite", "--no-onnx"]) == 0
    assert main(["export", "--run", str(tmp_path), "--out", str(out)]) == 2
    assert main(["export", "--run", str(run), "--out", str(out), "--users", "-1"]) == 2


def test_scores_that_overflow_are_an_error_naming_the_query():
    """Issue 45: they ranked first, as NaN."""
    items = ItemEmbeddings(np.full((20, 4), 1e20, np.float32), np.zeros(20, np.float32))
    queries = np.ones((3, 4), np.float32)
    queries[2] *= 1e20  # 4 * 1e40 overflows float32
    assert items.top_k(queries[:2], 5)[0].tolist() == [[0, 1, 2, 3, 4]] * 2
    with pytest.raises(ValueError, match="query row 2: its scores are not finite"):
        items.top_k(queries, 5)


def test_a_model_with_a_prior_takes_only_its_own_catalogue(tmp_path):
    """Issue 45: a model trained with the popularity prior was exported against a catalogue of
    the same schema whose articles had moved, and most carried another article's prior."""
    m = model("mlp")
    table = item_table()
    m.set_item_prior(torch.linspace(-2, 2, 300), catalogue=table.digest())
    m.save(tmp_path / "m.safetensors")
    loaded = TwoTower.load(tmp_path / "m.safetensors")
    assert loaded.catalogue == table.digest()
    ItemEmbeddings.from_model(loaded, table)  # its own catalogue
    moved = Batch(table.numeric, table.categorical[::-1].copy(), table.ids)  # items reordered
    for call in (
        lambda: ItemEmbeddings.from_model(loaded, moved),
        lambda: export_model(loaded, moved, tmp_path / "serve", onnx=False),
    ):
        with pytest.raises(ValueError, match="prior belongs to another catalogue"):
            call()
    assert not (tmp_path / "serve").exists()
    with pytest.raises(ValueError, match="prior has 300 items, the catalogue 299"):
        ItemEmbeddings.from_model(loaded, table[np.arange(299)])
    loaded.set_item_prior(None)  # without a prior the towers take any catalogue of the schema
    ItemEmbeddings.from_model(loaded, moved)


def test_the_trainer_ties_the_prior_to_the_logs_catalogue():
    import gymnasium as gym

    from recsim_ft.data import collect
    from recsim_ft.train import TrainConfig, train

    env = gym.make("toy_env:ToyRec-v0")
    log = collect(env, n=400, seed=0)
    m = TwoTower.from_env(env, "mlp", "quick")
    config = TrainConfig(loss="softmax", popularity_prior=True, steps=3, eval_every=None)
    train(m, log, env, config, progress=False)
    assert len(m.item_prior) and m.catalogue == env.unwrapped.item_table().digest()


def test_recall_counts_as_before_and_refuses_no_queries():
    rng = np.random.default_rng(0)
    exact = np.argsort(rng.random((50, 300)), axis=1)[:, :20]
    found = np.where(rng.random((50, 20)) < 0.2, -1, exact[:, rng.permutation(20)])
    found[:, :5] = rng.integers(0, 300, (50, 5))
    by_pairs = (found[:, :, None] == exact[:, None, :]).any(axis=1).mean()  # the old way
    assert recall_at_k(found, exact) == pytest.approx(by_pairs)
    with pytest.raises(ValueError, match="zero queries"):
        recall_at_k(np.zeros((0, 3), int), np.zeros((0, 3), int))


@needs_faiss
def test_search_with_a_large_k_and_index_bounds():
    """Issue 45: search with k = 1,000 built an (n, k, k) comparison (2.1 GB over 2,000
    queries); HNSW took any M."""
    items = ItemEmbeddings(np.repeat(np.eye(8, dtype=np.float32), 150, axis=0), np.zeros(1200))
    queries = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    index = ApproximateIndex(items, kind="flat")
    found, _ = index.search(queries, 1_000)
    exact, _ = items.top_k(queries, 1_000)
    np.testing.assert_array_equal(found, exact)  # 8 points of 150 equal items each
    with pytest.raises(ValueError, match="hnsw_m must be an integer in \\[2, 512\\]"):
        ApproximateIndex(items, kind="hnsw", hnsw_m=100_000)
