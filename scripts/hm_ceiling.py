"""The best any recommender can do on the default synthetic H&M stand-in from what the env shows
of a customer, measured on the env's test users beside popularity.

In the default stand-in (``synthetic_dynamics=False``) a purchase is one of the 1,000 head
articles with a probability that depends on the customer's segment (age bucket, FN, Active,
club status, news frequency), or a tail article drawn whatever the customer
(``recsim_ft.envs.hm.synthetic``). So the generator's own purchase probability given the segment,
``p(a | s) = head_share p_head(a | s) + (1 - head_share) p_tail(a)``, ranks each customer's
articles as well as anything can (the Bayes-optimal ranking: a customer's purchases are
independent draws from it); no model trained on the env's features can beat it, beyond the luck
of a finite test set. Its metrics are the ceiling of issue 26's H&M targets; "popularity (truth)"
ranks by the population's ``p(a)``; the other rows are the popularity baselines fitted on a
collected log (the paper's 160,000 events), by positive rate (the tables' rows) and by share
of the positives (``by="positive_share"``).

    python scripts/hm_ceiling.py --n-items 20000 --users 2000
    python scripts/hm_ceiling.py --n-items 100 --users 867   # the paper's setting, every test user

Articles that share a ``prod_name`` (the env's only item feature by default) are also scored
at the name level, as a model that sees only the name must score them: the best such a model
can do (two ways of giving a name one score). And how much of the true log-probability matrix
an inner product of rank d keeps (the towers' 32 dimensions are rank 32 at most).
"""

from __future__ import annotations

import argparse

import numpy as np

from recsim_ft.agents import PopularityAgent, SegmentPopularityAgent
from recsim_ft.data import collect
from recsim_ft.envs.hm.env import HMFashionEnv
from recsim_ft.envs.hm.synthetic import N_HEAD, _customers, _segment_probabilities, _world
from recsim_ft.evaluate import evaluate
from recsim_ft.schema import Batch

CHUNK_CUSTOMERS = 100_000  # iter_chunks' default: the segments are redrawn chunk by chunk


class _Truth:
    """Scores items by the generator's purchase probability given the segment (or, with
    ``by_segment=False``, averaged over the population)."""

    def __init__(self, env: HMFashionEnv, by_segment: bool = True) -> None:
        world = _world(env.seed)
        cal = world.calibration
        cdf = world.head_cdf_flat.reshape(-1, N_HEAD)
        cdf = cdf - np.arange(len(cdf))[:, None]  # the flat form adds the segment index
        head = np.diff(cdf, axis=1, prepend=0.0)  # (segments, N_HEAD): p_head(a | s)
        tail = np.diff(world.tail_cdf, prepend=0.0)  # tail rank r -> probability
        n_articles = len(world.articles)
        p = np.zeros((len(head), n_articles))
        p[:, :N_HEAD] = world.head_share * head
        p[:, N_HEAD : N_HEAD + len(tail)] = (1 - world.head_share) * tail
        index = {a: i for i, a in enumerate(world.articles["article_id"].to_pylist())}
        columns = np.array([index[a] for a in env.article_ids.tolist()])
        self.p = p[:, columns]
        if not by_segment:
            self.p = np.broadcast_to(_segment_probabilities(cal) @ self.p, self.p.shape)
        self.segment = _segments(env)

    def score_items(self, users: Batch) -> np.ndarray:
        return np.asarray(self.p[self.segment[users.ids]])


class _NameLevelTruth:
    """The truth as a model that sees only ``prod_name`` could at best give it: the articles of
    one name (colours of one garment) share one score, the mean (or ``max``) of their
    probabilities; ties go to the lower item index, the more purchased article, as every
    ranking here breaks them."""

    def __init__(self, truth: _Truth, names: np.ndarray, reduce: str = "mean") -> None:
        self.truth, self.reduce = truth, getattr(np, reduce)
        self.groups = [np.flatnonzero(names == name) for name in np.unique(names)]

    def score_items(self, users: Batch) -> np.ndarray:
        p = self.truth.score_items(users)
        out = np.empty_like(p)
        for columns in self.groups:
            out[:, columns] = self.reduce(p[:, columns], axis=1, keepdims=True)
        return out


def _rank_shares(truth: _Truth, env: HMFashionEnv, ranks: tuple[int, ...]) -> list[float]:
    """How much of the true log-probability matrix (segments x items, each segment weighted by
    its customers among the env's) a rank-``d`` inner product keeps, for each ``d`` in
    ``ranks``: the share of the squared norm of the matrix, centred per segment (a softmax
    ignores a segment's constant) and per item (the item prior or a constant user dimension
    carries it), in its ``d`` largest singular values."""
    weight = np.bincount(truth.segment, minlength=len(truth.p))[:, None]
    present = weight[:, 0] > 0
    log_p = np.log(truth.p[present])
    w = weight[present] / weight[present].sum()
    centred = log_p - log_p.mean(axis=1, keepdims=True)
    centred -= (w * centred).sum(axis=0, keepdims=True)
    singular = np.linalg.svd(np.sqrt(w) * centred, compute_uv=False) ** 2
    return [float(singular[:d].sum() / singular.sum()) for d in ranks]


def _segments(env: HMFashionEnv) -> np.ndarray:
    """Each customer's segment, redrawn from the generator's streams chunk by chunk."""
    world = _world(env.seed)
    parts = []
    for k, start in enumerate(range(0, env.n_customers, CHUNK_CUSTOMERS)):
        rng = np.random.default_rng([env.seed, 1, k])
        parts.append(_customers(rng, world, min(CHUNK_CUSTOMERS, env.n_customers - start))[1])
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--n-customers", type=int, default=50_000)
    args = parser.parse_args()
    env = HMFashionEnv(n_items=args.n_items, n_customers=args.n_customers)
    log = collect(env, seed=0)  # the paper's 160,000 events
    agents = {
        "Bayes-optimal (segment truth)": _Truth(env),
        "popularity (truth)": _Truth(env, by_segment=False),
        "popularity (log, by rate: the tables' row)": PopularityAgent(env).fit(log),
        "popularity (log, by share)": PopularityAgent(env, by="positive_share").fit(log),
        "segment popularity (log, by rate)": SegmentPopularityAgent(env).fit(log),
        "segment popularity (log, by share)": SegmentPopularityAgent(env, by="positive_share").fit(
            log
        ),
    }
    column = [f.name for f in env.item_schema.features].index("prod_name")
    names = env.item_table().categorical[:, column]
    if len(np.unique(names)) < env.n_items:
        truth = agents["Bayes-optimal (segment truth)"]
        agents["the truth at the prod_name level (mean of a name's articles)"] = _NameLevelTruth(
            truth, names
        )
        agents["the truth at the prod_name level (max)"] = _NameLevelTruth(truth, names, "max")
    metrics = ("HR@1", "HR@10", "MAP@12")
    ranks = (1, 2, 4, 8, 16, 32)
    shares = _rank_shares(agents["Bayes-optimal (segment truth)"], env, ranks)
    print(
        f"{len(np.unique(names)):,} distinct prod_names among the {env.n_items:,} articles; the "
        "true log-probabilities (centred) kept by a rank-d inner product: "
        + ", ".join(f"d={d}: {share:.4f}" for d, share in zip(ranks, shares, strict=True))
    )
    print(f"HMFashion-v0 n_items={env.n_items:,}, {args.users:,} test users (seed 0)")
    print("| agent | " + " | ".join(metrics) + " |")
    print("| --- |" + " --- |" * len(metrics))
    for name, agent in agents.items():
        m = evaluate(agent, env, n_users=args.users, ks=(1, 10))
        print(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in metrics) + " |")


if __name__ == "__main__":
    main()
