"""Off-policy evaluation from logs, checked against the truth: single recommendations with
IPS / SNIPS / DM / DR / SNDR / switch-DR, and slates with IIPS and the pseudo-inverse.

    python examples/slate_ope.py                      # Spotify, ~30 s on CPU
    python examples/slate_ope.py --env VaccineMessaging-v0
    python examples/slate_ope.py --no-choice-utility 2   # slates where choices are rare
    python examples/slate_ope.py --smoke

1. A log of ``--events`` single recommendations of the env's behaviour policy (uniform for
   Spotify and vaccine) and a reward model cross-fitted on it (per-item ridge regression) give
   each estimator's value of a target policy (the oracle with 30% uniform exploration), with a
   95% bootstrap interval and the effective sample size, beside the exact value.
2. In ``gym.make(env, slate_size=3)`` the user sees three items and picks at most one
   (multinomial logit with a no-choice option). A log of ``--slates`` uniformly random slates
   (exact propensities per item and per slate) gives IIPS and pseudo-inverse (PI) estimates of
   two slate policies (the oracle's and popularity's top 3). The items of a slate compete for
   one choice, which both estimators assume away: with the default choice model they can be far
   off; ``--no-choice-utility 2`` makes choices rare and the reward nearly additive, and both
   come close (``docs/ope_validation.md`` has the full picture).
3. The slate log in Open Bandit Pipeline's ``bandit_feedback`` layout (``to_obp``), ready for
   obp's estimators.

With ``--out``, writes ``ope_<env>.csv``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
from common import at_least, example_parser, output_paths, parse_example_args, print_table

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.agents import OracleAgent, PopularityAgent
from recsim_ft.data import collect, to_obp
from recsim_ft.envs import ENV_IDS
from recsim_ft.ope import (
    cross_fitted_rewards,
    dm,
    dr,
    exact_slate_value,
    exact_value,
    iips,
    ips,
    pseudo_inverse,
    sndr,
    snips,
    switch_dr,
    target_distribution,
)


def row(case: str, estimate, truth: float) -> dict:
    return {
        "case": case,
        "estimator": estimate.estimator,
        "estimate": estimate.value,
        "95% CI low": estimate.ci_low,
        "95% CI high": estimate.ci_high,
        "ESS": estimate.effective_sample_size,
        "truth": truth,
        "error %": 100 * (estimate.value - truth) / abs(truth),
    }


def main() -> None:
    parser = example_parser(__doc__)
    parser.add_argument("--env", default="Spotify-v0", choices=ENV_IDS)
    parser.add_argument("--events", type=at_least(1), default=20_000, help="single-item log size")
    parser.add_argument("--slates", type=at_least(1), default=60_000, help="slate log size")
    parser.add_argument("--no-choice-utility", type=float, default=0.0)
    args = parse_example_args(parser, smoke={"events": 2_000, "slates": 3_000})
    stem = f"ope_{args.env.removesuffix('-v0')}"
    paths = output_paths(args.out, [f"{stem}.csv"], args.overwrite)
    options = {"ci": "bootstrap", "n_bootstrap": 300, "seed": args.seed}

    env = gym.make(args.env)
    log = collect(env, n=args.events, seed=args.seed)
    target = 0.7 * target_distribution(log, OracleAgent(env)) + 0.3 / env.unwrapped.n_items
    rewards = cross_fitted_rewards(log, seed=args.seed)
    truth = exact_value(env, log, target)
    case = "oracle, 30% uniform"
    rows = [
        row(case, estimate, truth)
        for estimate in (
            ips(log, target, **options),
            snips(log, target, **options),
            dm(log, target, rewards, **options),
            dr(log, target, rewards, **options),
            sndr(log, target, rewards, **options),
            switch_dr(log, target, rewards, tau=10.0, **options),
        )
    ]

    slate_env = gym.make(args.env, slate_size=3, no_choice_utility=args.no_choice_utility)
    slate_log = collect(slate_env, n=args.slates, seed=args.seed)
    popularity = PopularityAgent(env, by="positive_rate")
    popularity.fit(collect(env, n=args.events, seed=args.seed + 1))
    for name, agent in (("oracle top 3", OracleAgent(env)), ("popularity top 3", popularity)):
        slate_truth = exact_slate_value(slate_env, slate_log, agent)
        for estimator in (iips, pseudo_inverse):
            rows.append(row(f"slates: {name}", estimator(slate_log, agent, **options), slate_truth))

    table = pd.DataFrame(rows).set_index(["case", "estimator"])
    print_table(
        f"{args.env}: {args.events:,} logged events, {args.slates:,} logged slates of 3 "
        f"(no_choice_utility {args.no_choice_utility:g}), seed {args.seed}",
        table,
    )
    feedback = to_obp(slate_log)
    shapes = {key: np.shape(value) for key, value in feedback.items()}
    print(f"Open Bandit Pipeline bandit_feedback of the slate log: {shapes}")
    if paths:
        path = paths[f"{stem}.csv"]
        table.to_csv(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
