"""One validation run of docs/results/hm100_diagnosis.md: an agent on the paper's H&M setting (100
articles), scored on 400 validation users as ``recsim-ft tune`` scores, with the item features or
the age's scale changed, printed as one JSON line.

    python scripts/diagnose_hm100.py prod_name mamba 1000      # the paper's item feature
    python scripts/diagnose_hm100.py article_id mamba 1000     # prod_name and article_id
    python scripts/diagnose_hm100.py standard_age mamba 1000   # prod_name, the age standardised

The two-tower agents train with the ranking preset, the baselines with their defaults; runs go
to ``results/diagnose_hm100/`` (a finished run is not reused: each call trains again).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from recsim_ft.experiments import RunSpec, run
from recsim_ft.models import tokenizer

VARIANTS = ("prod_name", "article_id", "standard_age")
#: the generator's age standardisation (``recsim_ft.envs.hm.synthetic._head_preferences``)
AGE_MEAN, AGE_SCALE = 36.4, 14.0


def standardise_age() -> None:
    """Every tokenizer of a one-numeric-feature schema (the H&M customer: age) sees
    ``(age - 36.4) / 14`` instead of the raw age, for this process only."""
    forward = tokenizer.FeatureTokenizer.forward

    def scaled(self, x):
        numeric, categorical = x
        if numeric.shape[1] == 1:
            numeric = (numeric - AGE_MEAN) / AGE_SCALE
        return forward(self, tokenizer.FeatureTensors(numeric, categorical))

    tokenizer.FeatureTokenizer.forward = scaled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("agent")
    parser.add_argument("seed", type=int)
    args = parser.parse_args()
    if args.variant == "standard_age":
        standardise_age()
    features = ["prod_name", "article_id"] if args.variant == "article_id" else ["prod_name"]
    spec = RunSpec(
        "HMFashion-v0",
        args.agent,
        seed=args.seed,
        setting="hm",
        env_kwargs={"item_features": features},
        preset="ranking" if args.agent in ("mamba", "transformer", "mlp") else "paper",
        eval_split="validation",
        eval_users=400,
    )
    started = time.perf_counter()
    out = Path("results/diagnose_hm100") / f"{args.variant}-{args.agent}-{args.seed}"
    metrics = run(spec, out, progress=False)
    print(
        json.dumps(
            {
                "variant": args.variant,
                "agent": args.agent,
                "seed": args.seed,
                "s": round(time.perf_counter() - started),
                **{k: round(metrics[k], 4) for k in ("HR@1", "HR@10", "NDCG@10", "MAP@12")},
            }
        )
    )


if __name__ == "__main__":
    main()
