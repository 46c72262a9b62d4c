"""What a week looks like (``recsim_ft.envs.hm.measures``, issue 41): each figure on a small
table whose answers are counted by hand, and the errors that name the bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from recsim_ft.envs.hm import measures as m

LAST = pd.Timestamp("2020-09-22")


def rows(*purchases: tuple[int, str, int]) -> pd.DataFrame:
    """(days before the last day, customer, article) -> a Kaggle-format frame."""
    return pd.DataFrame(
        [(LAST - pd.Timedelta(days=d), c, a) for d, c, a in purchases],
        columns=["t_dat", "customer_id", "article_id"],
    )


@pytest.fixture
def tx() -> pd.DataFrame:
    # week 0 = days 0-6 back, week 1 = 7-13, ...; articles 11 and 30 are first sold in week 0
    return rows(
        (0, "a", 10),
        (0, "a", 11),
        (1, "a", 30),
        (3, "b", 10),  # week 0: a x3, b x1
        (8, "a", 10),
        (9, "c", 12),  # week 1
        (22, "b", 10),
        (22, "b", 20),
        (25, "d", 21),  # week 3
        (100, "e", 10),  # week 14
    )


@pytest.fixture
def articles() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "article_id": [10, 11, 12, 20, 21, 30],
            "product_code": [1, 1, 2, 3, 3, 4],
            "product_type_no": [7, 7, 7, 8, 8, 9],
        }
    )


def test_weekly_buyers_and_baskets_count_distinct_customers(tx):
    buyers = m.weekly_buyers(tx, weeks=4, n_customers=10)
    assert buyers.tolist() == [0.2, 0.2, 0.0, 0.2]
    assert m.weekly_buyers(tx, weeks=1).tolist() == [2 / 5]  # default: the 5 who buy
    baskets = m.basket_sizes(tx, weeks=4)
    assert baskets[0] == 2.0 and baskets[1] == 1.0 and baskets[3] == 1.5
    assert pd.isna(baskets[2])  # nobody bought: no basket


def test_first_sold_inactive_and_rows_per_week(tx):
    assert m.first_sold_share(tx, week=0) == 0.5  # articles 11 and 30 of 4 purchases
    assert m.first_sold_share(tx, week=3) == pytest.approx(2 / 3)  # 20 and 21, not 10
    assert m.inactive_share(tx, weeks=13) == pytest.approx(1 / 5)  # e
    assert m.inactive_share(tx, weeks=13, n_customers=10) == pytest.approx(6 / 10)
    assert m.inactive_share(tx, weeks=4) == pytest.approx(1 / 5)
    assert m.inactive_share(tx, weeks=3) == pytest.approx(2 / 5)  # d (week 3) and e
    assert m.rows_per_week(tx, n_customers=10) == pytest.approx(10 / (101 / 7) / 10)


def test_rebuys_follow_a_customer_from_a_week_to_the_next_ones(tx, articles):
    """Reference week 3 (the only one with 3 weeks after it here): b buys 10 and 20 and, two
    weeks later, 10 again; d buys 21 and never again. a's rebuy of 10 within week 0-1 is not
    from a reference week."""
    shares = m.rebuy_shares(tx, within=(1, 2, 3), reference_weeks=1)
    assert shares.to_dict() == {1: 0.0, 2: 0.0, 3: 0.5}
    by_type = m.rebuy_shares(tx, articles, by="product_type_no", within=(3,), reference_weeks=1)
    assert by_type[3] == 0.5
    # with week 1 as a reference too (within 1 week): a buys 10 in week 1, again in week 0
    assert m.rebuy_shares(tx, within=(1,), reference_weeks=3)[1] == pytest.approx(
        (1 / 2 + 0 + 0) / 2
    )


def test_week_figures_fill_every_row_of_the_real_table(tx, articles):
    with pytest.warns(UserWarning, match="one of the last 8 weeks has 0 buyers"):
        figures = m.week_figures(tx, articles, n_customers=10)
    assert list(figures.index) == list(m.REAL_WEEKS)
    assert figures.notna().all()
    table = m.week_table({"here": figures})
    assert table.count("\n") == len(m.REAL_WEEKS) + 1
    assert "| 1.500 (out) |" in table  # rows per buying customer-week: outside 2.5-4.5
    with pytest.warns(UserWarning, match="mostly noise"):
        without_articles = m.week_figures(tx)
    assert "same product code again within 1 week" not in without_articles
    assert "| - |" in m.week_table({"here": without_articles})


def test_bad_input_is_named(tx):
    with pytest.raises(ValueError, match="n_customers=3 is fewer than the 5 customers"):
        m.weekly_buyers(tx, n_customers=3)
    with pytest.raises(ValueError, match="n_customers must be an int, got True"):
        m.inactive_share(tx, n_customers=True)
    with pytest.raises(ValueError, match="needs articles with a 'product_code' column"):
        m.rebuy_shares(tx, by="product_code")
    with pytest.raises(ValueError, match="article_id 30 of transactions is not in articles"):
        m.rebuy_shares(
            tx,
            pd.DataFrame({"article_id": [10, 11, 12, 20, 21], "product_code": 1}),
            by="product_code",
        )
    with pytest.raises(ValueError, match="week 2 .* has no purchases"):
        m.first_sold_share(tx, week=2)


def test_bad_frames_and_counts_are_named(tx):
    with pytest.raises(ValueError, match="transactions has no column 't_dat'"):
        m.weekly_buyers(tx.rename(columns={"t_dat": "day"}))
    with pytest.raises(ValueError, match="transactions has no rows"):
        m.rows_per_week(tx.iloc[:0])
    with pytest.raises(ValueError, match="must be a pandas DataFrame"):
        m.basket_sizes(tx.to_numpy())
    with pytest.raises(ValueError, match="weeks"):
        m.weekly_buyers(tx, weeks=0)
    with pytest.raises(ValueError, match="within"):
        m.rebuy_shares(tx, within=(0, 1))
    with pytest.raises(ValueError, match="within names no number"):
        m.rebuy_shares(tx, within=())
    with pytest.raises(ValueError, match="reference_weeks"):
        m.rebuy_shares(tx, reference_weeks=0)
    with pytest.raises(ValueError, match="week"):
        m.first_sold_share(tx, week=-1)
