"""Ranking metrics against independent implementations, and their properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import rankdata
from sklearn.metrics import ndcg_score

from recsim_ft.metrics import METRICS, parse_metrics, ranking_metrics, top_k


def naive_metrics(scores, relevant, k):
    """One user at a time, straight from the textbook definitions (Kaggle's apk for MAP)."""
    per_user = {name: [] for name in METRICS}
    for s, rel in zip(scores.tolist(), relevant.tolist(), strict=True):
        liked = {i for i, r in enumerate(rel) if r}
        if not liked:
            continue
        ranked = sorted(range(len(s)), key=lambda i: (-s[i], i))[:k]
        hits = [i in liked for i in ranked]
        per_user["P"].append(sum(hits) / k)
        per_user["R"].append(sum(hits) / len(liked))
        per_user["HR"].append(float(any(hits)))
        per_user["MRR"].append(next((1 / (j + 1) for j, h in enumerate(hits) if h), 0.0))
        dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h)
        per_user["NDCG"].append(dcg / sum(1 / math.log2(j + 2) for j in range(min(k, len(liked)))))
        found, ap = 0, 0.0
        for j, h in enumerate(hits):
            if h:
                found += 1
                ap += found / (j + 1)
        per_user["MAP"].append(ap / min(k, len(liked)))
    return {f"{name}@{k}": float(np.mean(v)) for name, v in per_user.items()}


def random_case(seed, n_users=200, n_items=30, tied=False):
    rng = np.random.default_rng(seed)
    scores = (
        rng.integers(0, 4, (n_users, n_items)).astype(float)
        if tied
        else rng.normal(size=(n_users, n_items))
    )
    relevant = rng.random((n_users, n_items)) < rng.uniform(0.0, 0.3, (n_users, 1))
    return scores, relevant


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_loop(seed, tied):
    scores, relevant = random_case(seed, tied=tied)
    ks = (1, 3, 5, 10, 12, 30)
    got = ranking_metrics(scores, relevant, ks=ks)
    assert got["n_excluded"] == int((relevant.sum(1) == 0).sum()) > 0
    assert got["n_users"] == len(scores) - got["n_excluded"]
    for k in ks:
        for key, value in naive_metrics(scores, relevant, k).items():
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_matches_torchmetrics_retrieval():
    retrieval = pytest.importorskip("torchmetrics.retrieval")
    torch = pytest.importorskip("torch")
    scores, relevant = random_case(2)
    keep = relevant.any(1)
    # torchmetrics' precision counts only positive scores as retrieved: shift, keeping the order
    preds = torch.tensor(scores[keep] - scores.min() + 1.0).flatten()
    target = torch.tensor(relevant[keep]).flatten()
    indexes = torch.arange(int(keep.sum())).repeat_interleave(scores.shape[1])
    got = ranking_metrics(scores, relevant, ks=(1, 5, 10))
    reference = {
        "P": retrieval.RetrievalPrecision,
        "R": retrieval.RetrievalRecall,
        "HR": retrieval.RetrievalHitRate,
        "MRR": retrieval.RetrievalMRR,
        "NDCG": retrieval.RetrievalNormalizedDCG,
    }
    for k in (1, 5, 10):
        for name, metric in reference.items():
            expected = metric(top_k=k)(preds, target, indexes=indexes).item()
            assert got[f"{name}@{k}"] == pytest.approx(expected, abs=1e-6), f"{name}@{k}"


def test_ndcg_matches_sklearn():
    scores, relevant = random_case(3)
    keep = relevant.any(1)
    got = ranking_metrics(scores, relevant, ks=(5,), metrics=("NDCG",))
    assert got["NDCG@5"] == pytest.approx(ndcg_score(relevant[keep], scores[keep], k=5), abs=1e-12)


def test_kaggle_map12_worked_example():
    ranking = [3, 1, 0, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    scores = np.empty((1, 12))
    scores[0, ranking] = -np.arange(12.0)
    relevant = np.zeros((1, 12), bool)
    relevant[0, [0, 3]] = True
    # hits at positions 1 and 3: AP@12 = (1/1 + 2/3) / min(12, 2)
    assert ranking_metrics(scores, relevant, ks=(), metrics=("MAP@12",))["MAP@12"] == pytest.approx(
        5 / 6
    )


def test_ties_go_to_lower_index():
    assert top_k(np.zeros((2, 5)), 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert top_k(np.array([[1, 3, 3, 1]], dtype=np.uint8), 4).tolist() == [[1, 2, 0, 3]]
    relevant = np.array([[False, True, False]])
    assert ranking_metrics(np.zeros((1, 3)), relevant, ks=(1, 2))["HR@1"] == 0.0
    assert ranking_metrics(np.zeros((1, 3)), relevant, ks=(1, 2))["HR@2"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_equals_a_full_stable_sort(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (300, 20)).astype(float)  # many ties at the cut-off
    scores[::7] = rng.normal(size=(43, 20))
    scores[5, :4] = [np.inf, -np.inf, np.inf, -0.0]
    full = np.array([sorted(range(20), key=lambda i: (-row[i], i)) for row in scores.tolist()])
    for k in range(1, 21):
        assert np.array_equal(top_k(scores, k), full[:, :k]), k


def test_keys_and_extra_k():
    scores, relevant = random_case(4, n_items=15)
    got = ranking_metrics(scores, relevant, ks=(1, 5), metrics=("P", "HR", "MAP@12"))
    assert list(got) == ["P@1", "P@5", "HR@1", "HR@5", "MAP@12", "n_users", "n_excluded"]
    assert parse_metrics(("P@5", "P"), ks=(1, 5)) == [("P", 5), ("P", 1)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ks": (1, 31)}, "k=31 is larger than the number of items"),
        ({"ks": (0,)}, "positive integer"),
        ({"ks": (2.5,)}, "positive integer"),
        ({"metrics": ("AUC",)}, "unknown metric 'AUC'"),
        ({"metrics": ("MAP@0",)}, "MAP@0"),
        ({"ks": (), "metrics": ("P",)}, "no metric to compute"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    scores, relevant = random_case(5)
    with pytest.raises(ValueError, match=message):
        ranking_metrics(scores, relevant, **kwargs)


def test_bad_inputs_are_named():
    scores, relevant = random_case(6)
    scores[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN for 1 user.*row 7"):
        ranking_metrics(scores, relevant)
    with pytest.raises(ValueError, match="shape"):
        ranking_metrics(np.zeros((3, 4)), np.zeros((3, 5), bool))
    with pytest.raises(ValueError, match="2-D"):
        ranking_metrics(np.zeros(4), np.zeros(4, bool))
    with pytest.raises(ValueError, match="boolean or 0/1"):
        ranking_metrics(np.zeros((2, 4)), np.full((2, 4), 2))
    with pytest.raises(ValueError, match="none of the 3 users has a relevant item"):
        ranking_metrics(np.zeros((3, 12)), np.zeros((3, 12), bool))


cases = st.integers(1, 12).flatmap(
    lambda n_items: st.tuples(
        arrays(
            np.float64,
            st.tuples(st.integers(1, 8), st.just(n_items)),
            elements=st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, 1.0]),
        ),
        st.integers(0, 2**32 - 1),
    )
)


def relevance_for(scores, seed):
    rng = np.random.default_rng(seed)
    relevant = rng.random(scores.shape) < 0.4
    relevant[0, rng.integers(scores.shape[1])] = True  # at least one user counts
    return relevant


@settings(max_examples=60, deadline=None)
@given(cases)
def test_bounds_and_monotone_in_k(case):
    scores, seed = case
    relevant = relevance_for(scores, seed)
    ks = tuple(range(1, scores.shape[1] + 1))
    got = ranking_metrics(scores, relevant, ks=ks)
    for key, value in got.items():
        if "@" in key:
            assert 0.0 <= value <= 1.0 + 1e-12, key
    for name in ("HR", "R", "MRR"):
        series = [got[f"{name}@{k}"] for k in ks]
        assert all(a <= b + 1e-12 for a, b in zip(series, series[1:], strict=False)), name
    assert got["HR@1"] == pytest.approx(got["P@1"]) == pytest.approx(got["MRR@1"])
    # only the order of the scores matters, and users are averaged in any order
    assert ranking_metrics(rankdata(scores, method="dense", axis=1), relevant, ks=ks) == got
    reversed_users = ranking_metrics(scores[::-1], relevant[::-1], ks=ks)
    assert reversed_users == pytest.approx(got)
    assert got[f"R@{ks[-1]}"] == pytest.approx(1.0) and got[f"HR@{ks[-1]}"] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(cases)
def test_perfect_and_worst_rankings(case):
    scores, seed = case
    relevant = relevance_for(scores, seed)
    n_items = scores.shape[1]
    perfect = ranking_metrics(relevant.astype(float), relevant, ks=range(1, n_items + 1))
    for k in range(1, n_items + 1):
        assert perfect[f"HR@{k}"] == perfect[f"MRR@{k}"] == 1.0
        assert perfect[f"NDCG@{k}"] == pytest.approx(1.0)
        assert perfect[f"MAP@{k}"] == pytest.approx(1.0)
    worst = ranking_metrics(-relevant.astype(float), relevant, ks=range(1, n_items + 1))
    n_irrelevant = (~relevant[relevant.any(1)]).sum(1)
    for k in range(1, n_items + 1):
        expected = np.mean(k > n_irrelevant)  # a hit only once every irrelevant item is ranked
        assert worst[f"HR@{k}"] == pytest.approx(expected)


@pytest.mark.parametrize("cells", [50, 50 * 7, 50 * 100])
def test_evaluate_in_chunks_of_users_gives_the_same_means(monkeypatch, cells):
    """A catalogue too large for every user at once is evaluated a chunk of users at a time
    (``EVAL_CHUNK_CELLS``): the same means, users who like nothing still counted as excluded."""
    import gymnasium as gym

    from recsim_ft import evaluate as evaluation
    from recsim_ft.agents import SegmentPopularityAgent
    from recsim_ft.data import collect

    env = gym.make("Spotify-v0")
    agent = SegmentPopularityAgent(env).fit(collect(env, n=5_000, seed=0))
    whole = evaluation.evaluate(agent, env, n_users=100, seed=3, metrics=(*METRICS, "MAP@12"))
    monkeypatch.setattr(evaluation, "EVAL_CHUNK_CELLS", cells)  # Spotify: 50 items
    chunked = evaluation.evaluate(agent, env, n_users=100, seed=3, metrics=(*METRICS, "MAP@12"))
    assert chunked.keys() == whole.keys()
    assert (chunked["n_users"], chunked["n_excluded"]) == (whole["n_users"], whole["n_excluded"])
    assert whole["n_excluded"] > 0  # Spotify has users who like no song: some chunks have none
    for name, value in whole.items():
        assert chunked[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
