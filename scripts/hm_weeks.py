"""Print what the weeks of one or more sets of Kaggle-format H&M files look like (buyers, baskets,
activity, repurchase: ``recsim_ft.envs.hm.measures.week_figures``) beside the real data's figures
and the bands the synthetic stand-in is held to, as the Markdown table of docs/hm_synthetic.md.

Usage (from the repo root; a folder holds customers, articles and transactions_train as csv or
parquet: the real files, or the stand-in's under ~/.cache/recsim_ft/hm_synthetic/)::

    ../shared/tools/memcap python scripts/hm_weeks.py NAME=FOLDER [NAME=FOLDER ...]
"""

from __future__ import annotations

import argparse
import time

from recsim_ft.envs.hm import measures


def named_folder(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {text!r}")
    return name, folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=named_folder, metavar="NAME=FOLDER")
    args = parser.parse_args()
    figures = {}
    for name, folder in args.folders:
        start = time.perf_counter()
        transactions, articles, n_customers = measures.read_week_inputs(folder)
        figures[name] = measures.week_figures(transactions, articles, n_customers)
        print(
            f"{name}: {n_customers:,} customers, {len(transactions):,} transactions, "
            f"measured in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    print(measures.week_table(figures))


if __name__ == "__main__":
    main()
