"""A hostile-input round over retrieval, export, the competition, logs, training options and
data-parallel training: several hundred generated inputs, each either refused with a clear
error (ValueError, TypeError or a file error, naming what was wrong) or accepted and its answer
checked against an independent computation (numpy, pure Python Kaggle MAP@12, the folder's
files). Anything else is printed and counted:

- ``WRONG``: accepted, and the answer is not the independent one (or a refusal was due);
- ``UNCLEAR``: refused with another kind of error (IndexError, KeyError, a crash), or with a
  message that does not name the offending argument;
- ``HALF-WRITTEN``: a refused or failed export changed the folder it was refused for;
- ``over-refused``: valid input refused (listed, not a silent error).

    python scripts/hostile_round.py            # every area
    python scripts/hostile_round.py --seed 1   # other generated inputs

Exit status 1 when any case is WRONG, UNCLEAR or HALF-WRITTEN.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_ft.competition import best_sellers, buy_again, decayed_popularity, map_at_k, split_week
from recsim_ft.envs.hm.data import Transactions
from recsim_ft.retrieval import ItemEmbeddings, recall_at_k
from recsim_ft.train import TrainConfig

CLEAR = (ValueError, TypeError, FileExistsError, FileNotFoundError, NotADirectoryError)


@dataclass
class Case:
    area: str
    label: str
    run: Callable[[], Any]
    #: None: the input is valid (``check`` verifies the answer); else the names one of which
    #: the refusal's message must contain
    refuse: tuple[str, ...] | None
    check: Callable[[Any], bool] | None = None


def outcome(case: Case) -> tuple[str, str]:
    try:
        result = case.run()
    except CLEAR as err:
        message = str(err)
        if case.refuse is None:
            return "over-refused", f"{type(err).__name__}: {message}"
        if case.refuse and not any(name in message for name in case.refuse):
            return "UNCLEAR", f"message names none of {case.refuse}: {message}"
        return "refused", ""
    except HalfWritten as err:
        return "HALF-WRITTEN", str(err)
    except Exception as err:  # noqa: BLE001 (the point: which kinds escape)
        return "UNCLEAR", f"{type(err).__name__}: {err}"
    if case.refuse is not None:
        return "WRONG", f"accepted, returned {_short(result)}"
    if case.check is not None and not case.check(result):
        return "WRONG", f"answer differs from the independent one: {_short(result)}"
    return "verified", ""


class HalfWritten(Exception):
    """A refused or failed write changed the folder."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


# ---------------------------------------------------------------- the competition


def transactions(rng: np.random.Generator) -> Transactions:
    n_customers, n_articles = int(rng.integers(3, 30)), int(rng.integers(3, 40))
    n = int(rng.integers(5, 200))
    span = int(rng.integers(15, 30))  # days: so that a target week has days before it
    days = np.sort(rng.integers(18_000, 18_000 + span, n)).astype(np.int32)
    days[0], days[-1] = 18_000, 18_000 + span - 1
    return Transactions(
        rng.integers(0, n_customers, n).astype(np.int32),
        rng.integers(0, n_articles, n).astype(np.int32),
        days,
        pd.Index([f"c{i}" for i in range(n_customers)]),
        np.arange(n_articles, dtype=np.int64) + 100,
    )


def kaggle_map(predictions: np.ndarray, actual: list[set[int]], k: int) -> float:
    """Kaggle's MAP@k, written from its definition in pure Python."""
    total = 0.0
    for row, bought in zip(predictions.tolist(), actual, strict=True):
        row = row[:k]
        hits, score = 0, 0.0
        for i, p in enumerate(row):
            if p in bought and p not in row[:i]:
                hits += 1
                score += hits / (i + 1)
        total += score / min(len(bought), k)
    return total / len(actual)


def truth(t: Transactions, first_day: int) -> tuple[np.ndarray, list[set[int]]]:
    week = (t.days >= first_day) & (t.days < first_day + 7)
    customers = np.unique(t.customers[week])
    bought = [set(t.articles[week & (t.customers == c)].tolist()) for c in customers]
    return customers, bought


BAD_K = [0, -1, 2.5, True, "12", None]


def competition_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for i in range(150):
        t = transactions(rng)
        split = split_week(t)
        customers, bought = truth(t, split.first_day)
        n = len(customers)
        cols = int(rng.integers(0, 15))
        predictions = rng.integers(-1, t.n_articles, (n, cols))
        k = int(rng.integers(1, 14))
        kind = rng.integers(0, 10)
        refuse: tuple[str, ...] | None = None
        if kind == 0 and cols:  # an id beyond the catalogue among the first k
            predictions[rng.integers(n), rng.integers(min(cols, k))] = t.n_articles + int(
                rng.integers(0, 3)
            )
            refuse = ("predictions",)
        elif kind == 1 and cols:
            predictions[rng.integers(n), rng.integers(min(cols, k))] = -2
            refuse = ("predictions",)
        elif kind == 2:
            predictions = predictions.astype(float)
            refuse = ("predictions",)
        elif kind == 3:
            predictions = predictions[: max(0, n - 1)]
            refuse = ("predictions",)
        elif kind == 4:
            k = BAD_K[int(rng.integers(len(BAD_K)))]
            refuse = ("k",)
        elif kind == 5:
            predictions = predictions.astype(bool)
            refuse = ("predictions",)

        def run(p=predictions, s=split, k=k):
            return map_at_k(p, s, k)

        def check(value, p=predictions, b=bought, k=k):
            return math.isclose(value, kaggle_map(p, b, k), abs_tol=1e-12)

        cases.append(Case("map_at_k", f"#{i} kind {kind}", run, refuse, check))
    for i in range(40):  # split_week
        t = transactions(rng)
        weeks = [0, 1, 2, -1, 1.5, True, "1", 10**6][i % 8]
        valid_weeks = weeks in (0, 1, 2) and not isinstance(weeks, (bool, float))
        refuse = None if valid_weeks else ("weeks",)
        bad = i % 5
        if bad == 1:
            t.articles[0] = t.n_articles
            refuse = (*(refuse or ()), "articles")
        elif bad == 2:
            t = Transactions(t.customers, t.articles, t.days.astype(float), t.customer_ids,
                             t.article_ids)  # fmt: skip
            refuse = (*(refuse or ()), "days")
        elif bad == 3:
            t.customers[-1] = -1
            refuse = (*(refuse or ()), "customers")
        span = int(t.days.max()) - int(t.days.min()) + 1
        if refuse is None and weeks > (span - 8) // 7:
            refuse = ("weeks",)  # no target week that far back with data before it

        def run(t=t, weeks=weeks):
            return split_week(t, weeks)

        def check(split, t=t):
            customers, bought = truth(t, split.first_day)
            got = [set(split.articles[a:b].tolist()) for a, b in pairs(split.indptr)]
            train = t.days < split.first_day
            return (
                np.array_equal(split.customers, customers)
                and got == bought
                and len(split.train.days) == int(train.sum())
            )

        cases.append(Case("split_week", f"#{i} weeks {weeks!r} bad {bad}", run, refuse, check))
    for i in range(120):  # the rules
        t = transactions(rng)
        rule = [best_sellers, buy_again, decayed_popularity][i % 3]
        customers = np.unique(rng.integers(0, t.n_customers, int(rng.integers(1, 10))))
        k = 12
        kind = (i // 3) % 10
        refuse = None
        if kind == 1:
            customers = customers[::-1].copy() if len(customers) > 1 else np.array([-1])
            refuse = ("customers",)
        elif kind == 2:
            customers = np.append(customers, t.n_customers)
            refuse = ("customers",)
        elif kind == 3:
            customers = customers.astype(float)
            refuse = ("customers",)
        elif kind == 4:
            customers = np.ones(3, bool)
            refuse = ("customers",)
        elif kind == 5:
            k = BAD_K[i % len(BAD_K)]
            refuse = ("k",)
        elif kind == 6:
            customers = np.repeat(customers[:1], 2)
            refuse = ("customers",)
        elif kind == 7:
            customers = customers[None, :]
            refuse = ("customers",)
        elif kind == 8:
            customers = np.array([], np.int64)

        def run(rule=rule, t=t, c=customers, k=k):
            return rule(t, c, k)

        def check(out, t=t, c=customers, k=k):
            out = np.asarray(out)
            if out.shape != (len(c), k) or ((out < -1) | (out >= t.n_articles)).any():
                return False
            return all(len(set(r[r >= 0].tolist())) == int((r >= 0).sum()) for r in out)

        cases.append(Case("rules", f"{rule.__name__} #{i} kind {kind}", run, refuse, check))
    return cases


def pairs(indptr: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(indptr[:-1].tolist(), indptr[1:].tolist(), strict=True))


# ---------------------------------------------------------------- retrieval


def retrieval_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for i in range(90):
        n_items, dim = int(rng.integers(1, 40)), int(rng.integers(1, 9))
        vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
        prior = rng.normal(size=n_items).astype(np.float32) * (i % 2)
        queries = rng.normal(size=(int(rng.integers(1, 20)), dim)).astype(np.float32)
        k = int(rng.integers(1, n_items + 1))
        kind = i % 9
        refuse = None
        if kind == 1:
            queries[rng.integers(len(queries)), 0] = np.nan
            refuse = ("query row",)
        elif kind == 2:
            queries = queries * 1e30
            vectors = vectors * 1e30
            refuse = ("query row", "vectors", "finite")
        elif kind == 3:
            queries = queries[:, :-1] if dim > 1 else queries[:, :0]
            refuse = ("queries", "dim")
        elif kind == 4:
            k = [0, -1, n_items + 1, 2.5, True][i % 5]
            refuse = ("k",)
        elif kind == 5:
            queries = queries[0]
            refuse = ("queries",)
        elif kind == 6:
            prior = prior[:-1]
            refuse = ("prior",)
        elif kind == 7:
            vectors[0, 0] = np.inf
            refuse = ("vectors", "finite", "item")

        def run(v=vectors, p=prior, q=queries, k=k):
            return ItemEmbeddings(v, p).top_k(q, k)

        def check(result, v=vectors, p=prior, q=queries, k=k):
            ids, scores = result
            full = q.astype(np.float64) @ v.T.astype(np.float64) + p
            expected = np.argsort(-full, axis=1, kind="stable")[:, :k]
            return np.array_equal(ids, expected) and np.allclose(
                scores, np.take_along_axis(full, expected, 1), rtol=1e-4, atol=1e-4
            )

        cases.append(Case("top_k", f"#{i} kind {kind}", run, refuse, check))
    for i in range(30):
        n, k = int(rng.integers(1, 10)), int(rng.integers(1, 6))
        exact = np.stack([rng.permutation(20)[:k] for _ in range(n)])
        found = np.stack([rng.permutation(20)[:k] for _ in range(n)])
        kind = i % 6
        refuse = None
        if kind == 1:
            found = found[:, :-1]
            refuse = ("found", "exact")
        elif kind == 2:
            found, exact = found[:0], exact[:0]
            refuse = ("queries", "found", "exact", "no")
        elif kind == 3:
            found = found.astype(float)
            refuse = ("found",)
        elif kind == 4:
            found[0, 0] = -1

        def run(f=found, e=exact):
            return recall_at_k(f, e)

        def check(value, f=found, e=exact):
            expected = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(f, e, strict=True)])
            return math.isclose(value, expected, abs_tol=1e-12)

        cases.append(Case("recall_at_k", f"#{i} kind {kind}", run, refuse, check))
    return cases


# ---------------------------------------------------------------- training options

BAD_VALUES: dict[str, list[Any]] = {
    "lr": [0, -1e-3, float("nan"), float("inf"), "1e-3", True],
    "batch_size": [0, -1, 1.5, True, "32"],
    "loss": ["MSE", "", None, 1],
    "temperature": [0, -1.0, float("nan"), float("inf"), 1e-300, "1"],
    "uniform_negatives": [-1, 1.5, True, "4"],
    "schedule": ["linear", None, 0],
    "steps": [0, -5, 2.5, True, "10"],
    "negatives": ["all", None],
    "workers": [0, -2, 1.5, True, "2"],
    "popularity_prior": ["yes", 1, None],
    "precision": ["fp16", None],
    "eval_every": [0, -1, 1.5, True],
    "eval_users": [0, -3, 2.5, True],
    "eval_split": ["train", None],
    "ks": [(0,), (-1, 5), (1.5,), (True,)],
    "device": ["gpu0", "", 3],
    "checkpoint_every": [0, -1, 1.5],
    "threads": [0, -1, 2.5, True],
    "select_users": [0, -1, 1.5],
    "select_metric": ["HR@2", "accuracy"],
}


def option_cases() -> list[Case]:
    names = {f.name for f in fields(TrainConfig)}
    cases = []
    for name, values in BAD_VALUES.items():
        assert name in names, name
        for value in values:

            def run(name=name, value=value):
                return TrainConfig(**{name: value}).checked()

            cases.append(Case("TrainConfig", f"{name}={value!r}", run, (name,)))
    cases.append(
        Case(
            "TrainConfig",
            "batch 30 over 4 workers",
            lambda: TrainConfig(batch_size=30, workers=4).checked(),
            ("batch_size", "workers"),
        )
    )
    for good in (dict(workers=2, batch_size=64), dict(ks=(1, 12)), dict(lr=3e-4, steps=5)):
        cases.append(
            Case(
                "TrainConfig",
                f"valid {good}",
                lambda good=good: TrainConfig(**good).checked(),
                None,
                lambda c, good=good: all(getattr(c, k) == v for k, v in good.items()),
            )
        )
    return cases


# ---------------------------------------------------------------- logs and export


def log_cases(rng: np.random.Generator) -> list[Case]:
    import gymnasium as gym

    from recsim_ft.data import collect

    env = gym.make("Spotify-v0")
    log = collect(env, n=200, seed=0)
    cases = []
    selections: list[tuple[Any, tuple[str, ...] | None]] = [
        (np.arange(10), None),
        (np.array([199, 0, 5]), None),
        (np.array([200]), ("rows", "200")),
        (np.array([-201]), ("rows", "-201")),
        (np.array([1.5]), ("rows",)),
        (np.ones(199, bool), ("rows", "mask")),
        (np.ones(200, bool), None),
        (np.zeros((2, 2), np.int64), ("rows",)),
        (np.array([], np.int64), None),
        (np.array(["a"]), ("rows",)),
    ]
    for i, (rows, refuse) in enumerate(selections * 3):

        def run(rows=rows):
            return log.select(rows)

        def check(part, rows=rows):
            index = np.flatnonzero(rows) if rows.dtype == bool else rows
            return np.array_equal(part.actions, log.actions[index]) and np.array_equal(
                part.rewards, log.rewards[index]
            )

        cases.append(Case("log.select", f"#{i} {_short(rows)}", run, refuse, check))
    return cases


def folder_digest(folder: Path) -> str:
    """The names and contents of every file under ``folder`` (missing: '')."""
    if not folder.exists():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def export_cases(tmp: Path) -> list[Case]:
    import gymnasium as gym

    from recsim_ft.agents import TwoTowerAgent
    from recsim_ft.data import collect
    from recsim_ft.retrieval import export_model

    def trained(env_id: str, seed: int, **kwargs: Any):
        env = gym.make(env_id, **kwargs)
        config = TrainConfig(steps=3, eval_every=None, seed=seed, eval_users=10)
        agent = TwoTowerAgent(env, "mlp", "quick", config).fit(collect(env, n=200, seed=seed))
        return agent.model_, env.unwrapped

    model_a, env_a = trained("Spotify-v0", 0)
    model_b, _ = trained("Spotify-v0", 1)
    model_h, env_h = trained("HMFashion-v0", 0, n_items=50, n_customers=20_000)
    items = env_a.item_table()
    users = env_a.sample_users(20, np.random.default_rng(0))
    users_h = env_h.customers()[:20]
    cases = []

    def guarded(folder: Path, call: Callable[[], Any]) -> Any:
        """``call``; a refusal or failure must leave ``folder`` as it was."""
        before = folder_digest(folder)
        try:
            return call()
        except Exception:
            if folder_digest(folder) != before:
                raise HalfWritten(f"{folder} changed by a refused export") from None
            raise

    def consistent(manifest: dict[str, Any], folder: Path, model) -> bool:
        """The folder holds one export of ``model``: its items, and users' files only when the
        manifest says it wrote them."""
        files = {p.name for p in folder.iterdir()}
        expected = {"export.json", "items.npy", "items.json", "item_prior.npy"}
        if "n_users" in manifest:
            expected |= {"users.npy", "user_ids.npy"}
        if "user_tower_check" in manifest:
            expected |= {"user_tower.onnx"}
        saved = np.load(folder / "items.npy")
        ours = ItemEmbeddings.from_model(model, items).vectors
        return files == expected and np.allclose(saved, ours)

    for i in range(8):
        folder = tmp / f"export{i}"
        if i % 2:
            export_model(model_a, items, folder, users=users, onnx=False)

        def fresh(folder=folder):
            return guarded(
                folder, lambda: export_model(model_b, items, folder, onnx=False, overwrite=True)
            )

        cases.append(
            Case(
                "export",
                f"B over {'A' if i % 2 else 'nothing'} with overwrite",
                fresh,
                None,
                lambda m, folder=folder: consistent(m, folder, model_b),
            )
        )

        def refused(folder=folder):
            return guarded(folder, lambda: export_model(model_b, items, folder, onnx=False))

        if i % 2:
            cases.append(Case("export", f"#{i} B over A", refused, ("overwrite", "exist")))

        def other_users(folder=folder):
            return guarded(
                folder,
                lambda: export_model(model_a, items, folder, users=users_h, overwrite=True),
            )

        cases.append(Case("export", f"#{i} users of another env", other_users, ("users", "")))

        def other_items(folder=folder):
            return guarded(
                folder, lambda: export_model(model_h, items, folder, onnx=False, overwrite=True)
            )

        # a Batch carries codes, not its schema: a catalogue of another env with the same
        # columns is scored by the model's features (codes beyond them are "unknown"), by design
        cases.append(
            Case(
                "export",
                f"#{i} same-shape catalogue of another env (accepted by design)",
                other_items,
                None,
                lambda m, folder=folder: consistent(m, folder, model_h),
            )
        )
    foreign = tmp / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases.append(
        Case(
            "export",
            "a folder with a user's file",
            lambda: guarded(
                foreign, lambda: export_model(model_a, items, foreign, onnx=False, overwrite=True)
            ),
            ("notes.txt", "export"),
        )
    )
    a_file = tmp / "a_file"
    a_file.write_text("x")
    cases.append(
        Case(
            "export",
            "a file as the folder",
            lambda: export_model(model_a, items, a_file, onnx=False, overwrite=True),
            ("a_file", "folder", "directory"),
        )
    )
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            *competition_cases(rng),
            *retrieval_cases(rng),
            *option_cases(),
            *log_cases(rng),
            *export_cases(Path(tmp)),
        ]
        counts: Counter[tuple[str, str]] = Counter()
        failures = []
        for case in cases:
            kind, detail = outcome(case)
            counts[case.area, kind] += 1
            if kind != "refused" and kind != "verified":
                failures.append(f"{kind:>12}  {case.area}: {case.label}: {detail}")
    areas = sorted({area for area, _ in counts})
    kinds = ["refused", "verified", "over-refused", "WRONG", "UNCLEAR", "HALF-WRITTEN"]
    print(f"{len(cases)} inputs, seed {args.seed}")
    print("| area | " + " | ".join(kinds) + " |")
    print("| --- |" + " --- |" * len(kinds))
    for area in areas:
        print(f"| {area} | " + " | ".join(str(counts[area, k]) for k in kinds) + " |")
    print("\n".join(failures))
    bad = sum(counts[a, k] for a in areas for k in ("WRONG", "UNCLEAR", "HALF-WRITTEN"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
