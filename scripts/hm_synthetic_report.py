"""Print the article-attribute figures of the synthetic H&M stand-in beside the figures it is
calibrated to, as the Markdown tables of docs/hm_synthetic.md.

Sources: the product-group shares of the full catalogue (``hm_stats``, in the calibration as
``product_group_shares``) and the counts of 1,000 real articles (``article_attributes``, built
by scripts/build_hm_calibration.py from ``hm_sample/articles_sample.parquet``).

With ``--dynamics N``, also the figures of time, repurchase and taste
(``recsim_ft.envs.hm.measures``) of N generated customers, without and with the dynamics.

Usage (from the repo root)::

    python scripts/hm_synthetic_report.py [--seed 0] [--dynamics 50000]
"""

from __future__ import annotations

import argparse

import pandas as pd

from recsim_ft.envs.hm import measures as hm_measures
from recsim_ft.envs.hm.synthetic import DYNAMICS, _world, generate_frames, load_calibration


def side_by_side(title: str, source: str, real: pd.Series, synthetic: pd.Series, top: int) -> str:
    """A Markdown table of the ``top`` largest shares of ``real`` beside ``synthetic``'s."""
    real, synthetic = real / real.sum(), synthetic / synthetic.sum()
    lines = [f"**{title}** (share of articles)", "", f"| {title} | {source} | synthetic |"]
    lines.append("| --- | ---: | ---: |")
    for label in real.sort_values(ascending=False).index[:top]:
        lines.append(f"| {label} | {real[label]:.3f} | {synthetic.get(label, 0.0):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dynamics", type=int, default=0, metavar="N", help="customers to measure")
    args = parser.parse_args()
    cal = load_calibration()
    articles = _world(args.seed).articles.to_pandas()
    figures = cal["article_attributes"]

    def sample(kind: str, column: str) -> pd.Series:
        counts = pd.DataFrame(figures[kind]["counts"], columns=figures[kind]["columns"])
        return counts.groupby(column)["articles"].sum()

    tables = [
        side_by_side(
            "product_group_name",
            "full data",
            pd.Series(cal["product_group_shares"]),
            articles["product_group_name"].value_counts(),
            8,
        )
    ]
    for kind, column, top in (
        ("product_types", "product_type_name", 8),
        ("departments", "index_group_name", 5),
        ("departments", "garment_group_name", 8),
        ("colours", "perceived_colour_master_name", 8),
        ("graphical_appearances", "graphical_appearance_name", 5),
    ):
        tables.append(
            side_by_side(
                column,
                "1,000 real articles",
                sample(kind, column),
                articles[column].value_counts(),
                top,
            )
        )
    missing = articles["detail_desc"].isna().mean()
    tables.append(
        f"**detail_desc missing**: 1,000 real articles {figures['detail_desc_missing_share']:.3f}, "
        f"synthetic {missing:.3f}"
    )
    print(f"Synthetic catalogue of seed {args.seed}: {len(articles):,} articles.\n")
    print("\n\n".join(tables))
    if args.dynamics:
        print("\n" + dynamics_table(args.dynamics, args.seed))


def dynamics_table(n_customers: int, seed: int) -> str:
    """The measures of ``hm_measures`` without and with the dynamics, as a Markdown table."""
    measures = {
        "repeat purchases (share of purchases)": hm_measures.repeat_share,
        "rank correlation of weekly top-100 counts, lag 1": hm_measures.weekly_rank_correlation,
        "the same, lag 26 weeks": lambda tx: hm_measures.weekly_rank_correlation(tx, lag=26),
        "purchases of articles first sold in the last 4 weeks": hm_measures.new_article_share,
    }
    frames = {d: generate_frames(n_customers, seed, dynamics=d) for d in (False, True)}
    lines = [
        f"**Time, repurchase and taste** ({n_customers:,} customers, seed {seed}; invented "
        f"parameters: {DYNAMICS})",
        "",
        "| measure | without dynamics | with dynamics |",
        "| --- | ---: | ---: |",
    ]
    for name, measure in measures.items():
        values = [measure(frames[d]["transactions"]) for d in (False, True)]
        lines.append(f"| {name} | {values[0]:.3f} | {values[1]:.3f} |")
    taste = [
        hm_measures.taste_concentration(
            frames[d]["transactions"], frames[d]["articles"], "index_group_name"
        )
        for d in (False, True)
    ]
    lines.append(
        f"| a customer's largest share in one index group (>= 10 purchases) | {taste[0]:.3f} | "
        f"{taste[1]:.3f} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
