"""The H&M competition's protocol (``recsim_ft.competition``): Kaggle's MAP@12 against a
transcription of the competition's scorer, the week split, the baseline strategies on data whose
answer is known, and the ``hm-competition`` command on the synthetic stand-in and real rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsim_ft import competition
from recsim_ft.cli import main
from recsim_ft.competition import (
    best_sellers,
    buy_again,
    decayed_popularity,
    evaluate_weeks,
    map_at_k,
    split_week,
)
from recsim_ft.envs.hm.data import Transactions, read_transactions

SAMPLE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hm_sample"
DAY0 = int(np.datetime64("2020-09-01", "D").astype(int))


def transactions(rows: list[tuple[int, int, int]], n_customers=5, n_articles=8) -> Transactions:
    """(customer, article, day offset from 2020-09-01) rows."""
    c, a, d = (np.array(x, np.int32) for x in zip(*rows, strict=True))
    return Transactions(
        c, a, d + DAY0, pd.Index([f"c{i}" for i in range(n_customers)]), np.arange(n_articles)
    )


def kaggle_apk(actual: list[int], predicted: list[int], k: int = 12) -> float:
    """The competition's average precision (ml_metrics' apk, as its notebooks use it)."""
    predicted = predicted[:k]
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            hits += 1.0
            score += hits / (i + 1.0)
    return score / min(len(actual), k) if actual else 0.0


def test_map_at_12_is_kaggles():
    rng = np.random.default_rng(0)
    rows = [
        (int(c), int(a), int(d))
        for c, a, d in zip(
            rng.integers(0, 300, 6_000),
            rng.integers(0, 40, 6_000),
            rng.integers(0, 30, 6_000),
            strict=True,
        )
    ]
    rows += [(0, a, 29) for a in range(20)]  # one customer buys 20 articles in the target week
    split = split_week(transactions(rows, 300, 40))
    predictions = rng.integers(-1, 40, (len(split.customers), 12))
    predictions[:50, 3] = predictions[:50, 1]  # repeats count once
    bought = [
        set(split.articles[split.indptr[i] : split.indptr[i + 1]].tolist())
        for i in range(len(split.customers))
    ]
    assert max(len(b) for b in bought) > 12  # the normaliser's cap is exercised
    expected = np.mean(
        [kaggle_apk(list(b), list(p)) for b, p in zip(bought, predictions, strict=True)]
    )
    assert map_at_k(predictions, split) == pytest.approx(expected, rel=1e-12)
    truth = np.full((len(bought), 12), -1)
    for i, b in enumerate(bought):
        truth[i, : min(12, len(b))] = sorted(b)[:12]
    assert map_at_k(truth, split) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(n_customers, k\)"):
        map_at_k(predictions[1:], split)


def test_the_target_week_is_the_last_seven_days_and_never_seen():
    t = transactions([(0, 1, 0), (1, 2, 10), (2, 3, 16), (3, 4, 17), (3, 4, 23), (4, 5, 23)])
    split = split_week(t)  # last day 23: the week 17..23
    assert split.week == "2020-09-18..2020-09-24"
    assert split.customers.tolist() == [3, 4]
    assert split.articles.tolist() == [4, 5] and split.indptr.tolist() == [0, 1, 2]
    assert int(split.train.days.max()) == DAY0 + 16
    earlier = split_week(t, weeks_before_end=1)  # the week 10..16
    assert earlier.customers.tolist() == [1, 2] and int(earlier.train.days.max()) == DAY0
    with pytest.raises(ValueError, match=r"weeks_before_end=3: no transaction before .*at most 2"):
        split_week(t, weeks_before_end=3)
    with pytest.raises(ValueError, match="weeks_before_end=1: nobody bought"):
        split_week(transactions([(0, 1, 0), (1, 2, 23)]), weeks_before_end=1)


def test_strategies_on_data_whose_answer_is_known():
    t = transactions(
        [
            (0, 7, 0),
            (0, 7, 1),
            (0, 7, 2),
            (0, 7, 3),  # article 7: most bought, long ago
            (1, 3, 20),
            (2, 3, 21),
            (3, 3, 20),  # article 3: last week's best seller
            (1, 5, 22),
            (2, 5, 21),  # article 5: second last week
            (4, 6, 1),
            (4, 2, 19),  # customer 4's own articles, 2 the most recent
        ]
    )
    customers = np.array([0, 4])
    assert best_sellers(t, customers, 3).tolist() == [[3, 5, 2], [3, 5, 2]]
    assert decayed_popularity(t, customers, 2, half_life=100.0).tolist() == [[7, 3]] * 2
    assert decayed_popularity(t, customers, 2, half_life=1.0).tolist() == [[5, 3]] * 2
    # own articles of the last 28 days, most recent first, then last week's best sellers
    assert buy_again(t, customers, 4).tolist() == [[7, 3, 5, 2], [2, 6, 3, 5]]
    assert buy_again(t, customers, 4, days=7).tolist() == [[3, 5, 2, -1], [2, 3, 5, -1]]
    assert buy_again(t, np.array([1]), 2, days=7).tolist() == [[5, 3]]


def test_evaluate_weeks_and_the_command_on_the_synthetic_stand_in(tmp_path, capsys):
    out = tmp_path / "comp"
    assert main(["hm-competition", "--users", "2000", "--weeks", "2", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    results = pd.read_csv(out / "competition.csv")
    assert len(results) == 2 * (len(competition.STRATEGIES) + 1)  # and the trips' ceiling
    ceiling = results[results["strategy"] == "ceiling"]["MAP@12"].to_numpy()
    rules = results[results["strategy"] != "ceiling"].groupby("week", sort=False)["MAP@12"].max()
    assert (ceiling > rules.to_numpy()).all()
    assert results["MAP@12"].between(0, 1).all() and (results["MAP@12"] > 0).all()
    assert "| best_sellers |" in said and said == (out / "competition.md").read_text()
    assert "shopping trips" in said  # the default stand-in: weeks as the real data's
    dated = tmp_path / "dated"
    command = ["hm-competition", "--users", "2000", "--weeks", "2", "--stand-in", "dated"]
    assert main([*command, "--out", str(dated)]) == 0
    assert "single purchases on independent days" in capsys.readouterr().out
    assert main([*command, "--strategies", "ceiling", "--out", str(tmp_path / "c")]) == 2
    assert "needs no --hm-data and --stand-in trips" in capsys.readouterr().err
    dated_results = pd.read_csv(dated / "competition.csv")
    rules = results[results["strategy"] != "ceiling"].reset_index(drop=True)
    assert (dated_results["MAP@12"] != rules["MAP@12"]).any()  # another stand-in
    assert main(["hm-competition", "--users", "2000", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["hm-competition", "--strategies", "oracle", "--out", str(tmp_path / "x")]) == 2
    assert "unknown strategy" in capsys.readouterr().err
    again = pd.read_csv(out / "competition.csv")
    pd.testing.assert_frame_equal(results.drop(columns="seconds"), again.drop(columns="seconds"))


def test_real_rows(tmp_path):
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real H&M sample rows not found at {SAMPLE_DIR}")
    for source, name in (
        ("customers", "customers"),
        ("articles", "articles"),
        ("transactions", "transactions_train"),
    ):
        shutil.copy(SAMPLE_DIR / f"{source}_sample.parquet", tmp_path / f"{name}.parquet")
    t = read_transactions(tmp_path)
    assert len(t.days) == 5_000 and t.dropped == 0 and t.n_articles == 1_000
    results = evaluate_weeks(t, weeks=2)
    assert (results["customers"] > 0).all() and results["MAP@12"].between(0, 1).all()
    from recsim_ft.competition.submission import write_submission

    check_submission(write_submission(buy_again, t, tmp_path / "submission.csv"), t)


def test_a_learned_scorer_and_a_fitted_agent_enter_the_competition():
    """The adapters rank what a model scores, see only the weeks before the target and give
    Kaggle's MAP@12 through the same table as the rules."""
    import gymnasium as gym

    from recsim_ft.agents import Agent
    from recsim_ft.competition import agent_strategy, scorer_strategy

    t = transactions(
        [(0, 7, 0), (0, 7, 1), (1, 3, 20), (2, 3, 21), (4, 6, 1), (4, 2, 19), (1, 1, 27)]
    )
    seen = []

    def fit_own(train: Transactions):
        """Each customer's own articles by count, then the articles bought most."""
        seen.append(int(train.days.max()))
        own = np.zeros((train.n_customers, train.n_articles))
        np.add.at(own, (train.customers, train.articles), 1.0)
        popular = np.bincount(train.articles, minlength=train.n_articles)
        return lambda customers: own[customers] + popular / (1 + popular.sum())

    results = evaluate_weeks(t, {"own": scorer_strategy(fit_own, block=1)}, weeks=1)
    assert seen == [DAY0 + 20]  # the target week (days 21..27) never seen
    split = split_week(t)
    assert split.customers.tolist() == [1, 2]
    predictions = scorer_strategy(fit_own)(split.train, split.customers, 12)
    assert (predictions[:, 8:] == -1).all()  # 8 articles to rank
    # customer 1 bought article 3 before, then the most bought (7: twice), then article order;
    # customer 2 bought nothing before
    assert predictions[:, :8].tolist() == [[3, 7, 2, 6, 0, 1, 4, 5], [7, 2, 3, 6, 0, 1, 4, 5]]
    assert results[f"MAP@{competition.K}"].item() == map_at_k(predictions, split)

    class BoughtMost(Agent):
        def __init__(self, env, train):
            super().__init__(env)
            self.counts = np.bincount(train.articles, minlength=train.n_articles)

        def score_items(self, users):
            return np.tile(self.counts.astype(float), (len(users), 1))

    env = gym.make("toy_env:ToyRec-v0", n_items=8)
    rng = np.random.default_rng(0)
    strategy = agent_strategy(
        lambda train: BoughtMost(env, train),
        lambda customers: env.unwrapped.sample_users(len(customers), rng),
    )
    # everyone the most bought before the week, equal counts in article order
    assert strategy(split.train, split.customers, 3).tolist() == [[7, 2, 3]] * 2
    with pytest.raises(ValueError, match=r"scores of shape \(2, 5\).*expected \(2, 8\)"):
        scorer_strategy(lambda train: lambda c: np.zeros((len(c), 5)))(t, split.customers, 12)


def test_ids_outside_the_catalogue_k_and_customers_are_refused_by_name():
    """Issue 45: an id that is no article was credited to the next customer's purchase, a
    transaction beyond the catalogue to another customer, k of 0 gave NaN."""
    t = transactions([(0, 1, 0), (1, 2, 10), (2, 3, 21), (3, 4, 22)])
    split = split_week(t)  # customers 2 and 3 bought articles 3 and 4
    assert map_at_k(np.array([[3], [4]]), split) == 1.0
    with pytest.raises(ValueError, match=r"predictions\[\[0, 0\]\] = 8 is not a row of the 8 "):
        map_at_k(np.array([[8], [4]]), split)  # 8 = 0 * 8 + 8 aliased customer 3's article 0
    with pytest.raises(ValueError, match=r"predictions\[\[1, 0\]\] = -2 .*or -1 for none"):
        map_at_k(np.array([[3], [-2]]), split)
    with pytest.raises(ValueError, match="integer rows.*bool"):
        map_at_k(np.array([[True], [False]]), split)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            map_at_k(np.array([[3], [4]]), split, k=k)
        with pytest.raises(ValueError, match="k must be a positive integer"):
            best_sellers(split.train, split.customers, k)
    beyond = Transactions(
        np.array([0, 1], np.int32),
        np.array([1, 9], np.int32),
        np.array([DAY0, DAY0 + 9]),
        t.customer_ids,
        t.article_ids,
    )
    with pytest.raises(ValueError, match=r"transactions.articles\[1\] = 9 is not a row of the 8"):
        split_week(beyond)
    for customers in (np.array([3, 2]), np.array([2, 2]), np.array([True, False]), np.array([7])):
        for strategy in (best_sellers, decayed_popularity, buy_again):
            with pytest.raises(ValueError, match="customers"):
                strategy(split.train, customers, 12)
    with pytest.raises(ValueError, match="no MAP@12 results"):
        competition.markdown(pd.DataFrame(), "nothing")
    with pytest.raises(ValueError, match="no strategy to evaluate"):
        evaluate_weeks(t, {}, weeks=1)
    short = {"short": lambda train, customers, k: np.zeros((len(customers) - 1, k), np.int64)}
    with pytest.raises(
        ValueError, match=r"strategy 'short', target week 2020-09-\d+\.\..*\(2, k\)"
    ):
        evaluate_weeks(t, short, weeks=1)
    half_days = Transactions(t.customers, t.articles, t.days + 0.5, t.customer_ids, t.article_ids)
    with pytest.raises(ValueError, match="transactions.days must be integer days.*float64"):
        split_week(half_days)


def test_candidate_sources_and_their_recall_on_data_whose_answer_is_known():
    """Each source proposes what its rule says, best first, and recall counts the target
    week's purchases among a source's first N and among the union's."""
    from recsim_ft.competition.candidates import (
        best_seller_source,
        bought_together,
        recall,
        recall_table,
        recent,
        same_product,
    )

    t = transactions(
        [
            (0, 1, 10),
            (0, 2, 10),  # customer 0's trip on day 10: 1 and 2 together
            (1, 1, 12),
            (1, 4, 12),  # customer 1's trip: 1 and 4
            (2, 1, 15),  # customer 2 bought 1, alone
            (3, 0, 16),
            (3, 0, 16),  # article 0: last week's best seller, with 1
            (4, 6, 17),
            # the target week, days 18..24
            (2, 2, 22),
            (2, 5, 22),
            (3, 3, 23),
            (4, 7, 24),
        ]
    )
    split = split_week(t)
    assert split.customers.tolist() == [2, 3, 4]
    train, customers = split.train, split.customers
    assert recent(train, customers, 2).tolist() == [[1, -1], [0, -1], [6, -1]]
    # 1's partners: 2 (one trip) and 4 (one trip), equal trips in article order
    assert bought_together()(train, customers, 3).tolist() == [[2, 4, -1], [-1] * 3, [-1] * 3]
    products = np.array([0, 1, 2, 3, 3, 1, 4, 4])  # 1 & 5 one product, 6 & 7 another
    assert same_product(products)(train, customers, 2).tolist() == [[5, -1], [-1] * 2, [7, -1]]
    assert best_seller_source(train, customers, 2).tolist() == [[0, 1]] * 3
    # the target week's 4 purchases: (2, 2), (2, 5), (3, 3), (4, 7)
    assert recall(bought_together()(train, customers, 3), split) == 0.25
    table = recall_table(
        {
            "together": bought_together()(train, customers, 3),
            "same_product": same_product(products)(train, customers, 2),
        },
        split,
        at=(1, 2),
    )
    assert (
        table.loc["together", "recall@1"] == 0.25 and table.loc["same_product", "recall@1"] == 0.5
    )
    assert table.loc["union", "recall@1"] == 0.75
    # customer 2: 2 and 5; customer 3: none; customer 4: 7
    assert table.loc["union", "candidates@1"] == 1.0
    with pytest.raises(ValueError, match="product_codes has 3 entries for 8 articles"):
        same_product(np.zeros(3, np.int64))(train, customers, 2)
    with pytest.raises(ValueError, match=r"candidates must be \(3, n\)"):
        recall(np.zeros((2, 1), np.int64), split)


def check_submission(path: Path, t: Transactions) -> pd.DataFrame:
    """Kaggle's format: every customer once, in the files' order, 12 distinct ten-digit ids of
    articles of the files."""
    frame = pd.read_csv(path, dtype=str)
    assert list(frame.columns) == ["customer_id", "prediction"]
    assert frame["customer_id"].tolist() == list(t.customer_ids)
    ids = frame["prediction"].str.split()
    assert (ids.str.len() == 12).all() and ids.map(lambda row: len(set(row)) == 12).all()
    known = {f"{a:010d}" for a in t.article_ids}
    assert ids.map(lambda row: all(len(a) == 10 and a in known for a in row)).all()
    return frame


def test_a_submission_has_every_customer_and_refuses_to_overwrite(tmp_path, capsys):
    from recsim_ft.competition.submission import write_submission

    t = read_transactions(_stand_in(2000))
    path = write_submission(buy_again, t, tmp_path / "submission.csv")
    frame = check_submission(path, t)
    # the week after the data: buy again of every transaction, customer by customer
    expected = buy_again(t, np.arange(t.n_customers), 12)
    assert frame["prediction"].iloc[5] == " ".join(f"{t.article_ids[a]:010d}" for a in expected[5])
    with pytest.raises(FileExistsError, match="submission.csv exists; pass overwrite"):
        write_submission(best_sellers, t, path)
    assert write_submission(best_sellers, t, path, overwrite=True) == path
    out = tmp_path / "cmd"
    args = ["hm-competition", "--users", "2000", "--weeks", "1", "--out", str(out)]
    assert main([*args, "--submission", str(path)]) == 2  # two strategies, and the file exists
    assert "--overwrite" in capsys.readouterr().err
    gz = tmp_path / "s.csv.gz"
    assert main([*args, "--submission", str(gz)]) == 2
    assert "one strategy" in capsys.readouterr().err and not gz.exists()
    assert main([*args, "--strategies", "best_sellers", "--submission", str(gz)]) == 0
    check_submission(gz, t)


def _stand_in(customers: int) -> Path:
    from recsim_ft.envs.hm.synthetic import synthetic_files

    return synthetic_files(customers, seed=0, trips=True)  # the command's default
