"""Build ``recsim_ft/assets/hm_calibration.json``, the figures that calibrate the synthetic H&M
stand-in, from the full-data statistics in ``../shared/data/hm_stats/``.

The asset holds figures and the names of the top articles only (no rows of the Kaggle data):
table sizes, customer attribute shares (missing values included), the age shape (a two-Gaussian
mixture fitted here to the age-bucket shares and the mean age), the purchase counts of the 1,000
most purchased articles with the ids and ``prod_name`` of the top 200 (and their product group,
product type, index group and colour group), a power-law tail fitted to the remaining
purchases, and the product-group shares of the catalogue.

The article attributes' joint structure comes from ``../shared/data/hm_sample/`` (1,000 real
articles with all 25 columns of articles.csv), as counts only: how many of them have each product
type within a product group, each department (with its section, index, index group and garment
group) within a product type, each colour group (with its perceived colour value and master) and
each graphical appearance, and the share without a ``detail_desc``. No row of it is shipped.

Usage (from the repo root)::

    python scripts/build_hm_calibration.py [--src ../shared/data/hm_stats]
        [--articles ../shared/data/hm_sample/articles_sample.parquet]
        [--out recsim_ft/assets/hm_calibration.json] [--overwrite]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from recsim_ft.envs.hm.data import ARTICLE_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO_ROOT / ".." / "shared" / "data" / "hm_stats"
DEFAULT_OUT = REPO_ROOT / "recsim_ft" / "assets" / "hm_calibration.json"
DEFAULT_ARTICLES = REPO_ROOT / ".." / "shared" / "data" / "hm_sample" / "articles_sample.parquet"
#: the articles.csv columns counted together, per kind of attribute (see ``article_attributes``)
ATTRIBUTE_GROUPS = {
    "product_types": ("product_group_name", "product_type_no", "product_type_name"),
    "departments": (
        "product_group_name",
        "product_type_no",
        *ARTICLE_COLUMNS[
            ARTICLE_COLUMNS.index("department_no") : ARTICLE_COLUMNS.index("detail_desc")
        ],
    ),
    "colours": ARTICLE_COLUMNS[
        ARTICLE_COLUMNS.index("colour_group_code") : ARTICLE_COLUMNS.index("department_no")
    ],
    "graphical_appearances": ("graphical_appearance_no", "graphical_appearance_name"),
}
#: the attributes of the top 200 articles in top_article_transactions.csv
TOP_ATTRIBUTES = (
    "product_group_name",
    "product_type_name",
    "index_group_name",
    "colour_group_name",
)

# Figures stated in hm_stats/README.md but in no CSV there.
N_BUYING_CUSTOMERS = 1_362_281
N_BOUGHT_ARTICLES = 104_547
FN_ONE, ACTIVE_ONE = 476_930, 464_404
AGE_MIN, AGE_MAX, AGE_MEAN = 16, 99, 36.4
FIRST_DAY, LAST_DAY = "2018-09-20", "2020-09-22"
#: age buckets of age_bucket_metrics.csv as [low, high) edges
AGE_BUCKETS = {
    "under_20": (16, 20),
    "20_to_29": (20, 30),
    "30_to_39": (30, 40),
    "40_to_49": (40, 50),
    "50_to_59": (50, 60),
    "60_plus": (60, 100),
}


def shares(path: Path, column: str, missing_label: str | None = "Unknown") -> dict[str, float]:
    """Category -> share, with the stats' label of missing values renamed to the env's "missing"
    (read as text: "None" is a real fashion_news_frequency value, not a missing one)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    labels = frame[column].replace({missing_label: "missing"}) if missing_label else frame[column]
    return {label: float(share) for label, share in zip(labels, frame["share"], strict=True)}


def fit_age_mixture(bucket_shares: dict[str, float]) -> dict[str, float]:
    """Two truncated Gaussians whose bucket shares and mean match the statistics."""
    names = list(AGE_BUCKETS)
    target = np.array([bucket_shares[n] for n in names])
    target = target / target.sum()
    edges = np.array([AGE_BUCKETS[n][0] for n in names] + [AGE_BUCKETS[names[-1]][1]], dtype=float)
    grid = np.arange(AGE_MIN, AGE_MAX + 1, dtype=float)

    def unpack(theta):
        weight = 1 / (1 + np.exp(-theta[0]))
        return weight, theta[1], np.exp(theta[2]), theta[3], np.exp(theta[4])

    def loss(theta):
        weight, mu1, s1, mu2, s2 = unpack(theta)
        cdf = weight * stats.norm.cdf(edges, mu1, s1) + (1 - weight) * stats.norm.cdf(
            edges, mu2, s2
        )
        model = np.diff(cdf) / (cdf[-1] - cdf[0])
        density = weight * stats.norm.pdf(grid + 0.5, mu1, s1) + (1 - weight) * stats.norm.pdf(
            grid + 0.5, mu2, s2
        )
        mean = (grid * density).sum() / density.sum()  # integer ages, as in customers.csv
        return ((model - target) ** 2).sum() + ((mean - AGE_MEAN) / 100) ** 2

    theta0 = np.array([0.5, 25.0, np.log(5.0), 50.0, np.log(10.0)])
    result = optimize.minimize(
        loss,
        theta0,
        method="Nelder-Mead",
        options={"maxiter": 20_000, "xatol": 1e-6, "fatol": 1e-12},
    )
    weight, mu1, s1, mu2, s2 = unpack(result.x)
    return {
        "weight_young": round(float(weight), 4),
        "mean_young": round(float(mu1), 2),
        "sd_young": round(float(s1), 2),
        "mean_old": round(float(mu2), 2),
        "sd_old": round(float(s2), 2),
        "min": AGE_MIN,
        "max": AGE_MAX,
        "fit_loss": float(f"{result.fun:.3g}"),
    }


def fit_tail_exponent(count_at_rank_1000: int, tail_purchases: int, n_tail: int) -> float:
    """Exponent a of counts ``c(r) = c(1000) * (r / 1000) ** -a`` for ranks 1001.. that sum to the
    rest."""
    ranks = np.arange(1001, 1001 + n_tail, dtype=float)

    def gap(a):
        return count_at_rank_1000 * ((ranks / 1000) ** -a).sum() - tail_purchases

    return float(optimize.brentq(gap, 0.01, 5.0))


def article_attributes(articles: Path) -> dict:
    """Counts of the attribute combinations of ``ATTRIBUTE_GROUPS`` among the sample's articles
    (``{"columns": [..., "articles"], "counts": [[value, ..., count], ...]}``, most common
    first), and the share of articles without ``detail_desc``."""
    sample = pd.read_parquet(articles)
    figures: dict = {"n_sample_articles": len(sample)}
    for kind, columns in ATTRIBUTE_GROUPS.items():
        counts = sample.groupby(list(columns)).size().rename("articles").reset_index()
        counts = counts.sort_values(
            ["articles", *columns], ascending=[False] + [True] * len(columns)
        )
        figures[kind] = {
            "columns": [*columns, "articles"],
            "counts": [
                [v.item() if hasattr(v, "item") else v for v in row]
                for row in counts.itertuples(index=False)
            ],
        }
    figures["detail_desc_missing_share"] = float(sample["detail_desc"].isna().mean())
    return figures


def build(src: Path, articles: Path) -> dict:
    summary = dict(pd.read_csv(src / "summary.csv").itertuples(index=False, name=None))
    top1000 = pd.read_csv(src / "top1000_article_transactions.csv")
    top200 = pd.read_csv(src / "top_article_transactions.csv", dtype={"article_id": str})
    if not (
        top200["article_id"].astype(int).to_numpy() == top1000["article_id"].to_numpy()[:200]
    ).all():
        raise SystemExit(
            "top_article_transactions.csv and top1000_article_transactions.csv disagree on the "
            "top 200"
        )
    n_transactions = int(summary["transactions"])
    tail_purchases = n_transactions - int(top1000["transactions"].sum())
    age_shares = shares(src / "age_bucket_metrics.csv", "age_bucket", missing_label="unknown")
    n_customers = int(summary["customers"])
    source_files = sorted(p for p in src.iterdir() if p.suffix in (".csv", ".md"))
    source_files.append(articles)
    return {
        "provenance": (
            "Figures (no data rows) derived by scripts/build_hm_calibration.py from aggregate "
            "statistics of the full Kaggle competition data 'H&M Personalized Fashion "
            "Recommendations' (public repository yuyangchen11/fitscope-global-dashboard, "
            "cross-checked against tom-gemini-cloud/h_and_m_data_analysis). The Kaggle data itself "
            "is not shipped; its competition terms apply to the files a user brings. prod_name and "
            "article_id are those of the 200 most purchased articles. article_attributes: counts "
            "of attribute combinations among 1,000 real articles (hm_sample/articles_sample."
            "parquet, from the public repository scholih/ragrec), no rows."
        ),
        "source_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source_files},
        "n_customers": n_customers,
        "n_articles": int(summary["articles"]),
        "n_transactions": n_transactions,
        "n_buying_customers": N_BUYING_CUSTOMERS,
        "n_bought_articles": N_BOUGHT_ARTICLES,
        "mean_purchases_per_buyer": round(n_transactions / N_BUYING_CUSTOMERS, 3),
        "first_day": FIRST_DAY,
        "last_day": LAST_DAY,
        "avg_price": float(summary["avg_price"]),
        "customer_shares": {
            "club_member_status": shares(src / "customer_status_metrics.csv", "club_member_status"),
            "fashion_news_frequency": shares(
                src / "fashion_news_metrics.csv", "fashion_news_frequency"
            ),
            "FN": {"1": FN_ONE / n_customers, "missing": 1 - FN_ONE / n_customers},
            "Active": {"1": ACTIVE_ONE / n_customers, "missing": 1 - ACTIVE_ONE / n_customers},
        },
        "age_bucket_shares": age_shares,
        "age_bucket_edges": AGE_BUCKETS,
        "age_mixture": fit_age_mixture({k: v for k, v in age_shares.items() if k != "missing"}),
        "sales_channel_shares": shares(src / "sales_channel_metrics.csv", "sales_channel_id", None),
        "product_group_shares": shares(
            src / "product_group_metrics.csv", "product_group_name", None
        ),
        "top_article_ids": top1000["article_id"].astype(int).tolist(),
        "top_article_counts": top1000["transactions"].astype(int).tolist(),
        "top_article_names": top200["prod_name"].tolist(),
        "top_article_attributes": {c: top200[c].tolist() for c in TOP_ATTRIBUTES},
        "article_attributes": article_attributes(articles),
        "tail_exponent": round(
            fit_tail_exponent(
                int(top1000["transactions"].iloc[-1]),
                tail_purchases,
                N_BOUGHT_ARTICLES - len(top1000),
            ),
            5,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--articles", type=Path, default=DEFAULT_ARTICLES)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"{args.out} exists; pass --overwrite to replace it")
    calibration = build(args.src, args.articles)
    args.out.write_text(json.dumps(calibration, indent=1) + "\n")
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes); "
        f"age mixture {calibration['age_mixture']}, tail exponent {calibration['tail_exponent']}"
    )


if __name__ == "__main__":
    main()
