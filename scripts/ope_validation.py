"""Validate every off-policy estimator of ``recsim_ft.ope`` against exact ground truth, on logs
of each env and several target policies, the way Open Bandit Pipeline evaluates estimators but
with the true values the envs know (``expected_reward``), and write the tables to
``docs/ope_validation.md``.

    python scripts/ope_validation.py          # 5 logs per env and setting, minutes on 2 cores
    python scripts/ope_validation.py --logs 2 --events 5000 --slates 20000 --out /tmp/ope.md

Single recommendations: each env's own behaviour policy (``collect``: uniform for Spotify and
vaccine, H&M's purchase/non-purchase sampling), a reward model cross-fitted on the same log
(``cross_fitted_rewards``, per-item ridge), targets: the oracle (greedy on the true expected
reward), the oracle with 30% uniform exploration, the softmax of the true expected rewards
(temperature 1: every item has some probability), popularity (share of positive rewards, fitted
on a separate log) with 30% exploration. Slates of 3: uniformly random slates, targets: the
oracle's and popularity's top 3 and their 50/50 mixture, under the env's default choice model
and under one where choices are rare (``no_choice_utility=2``), which makes the slate reward
nearly additive over positions.
Truth: the target's exact value on the logged users (``exact_value``, ``exact_slate_value``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd

import recsim_ft
from recsim_ft.agents import OracleAgent, PopularityAgent
from recsim_ft.data import collect
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

ENVS = ("Spotify-v0", "HMFashion-v0", "VaccineMessaging-v0")
EXPLORATION = 0.3
SWITCH_TAU = 10.0
CHOICE_MODELS = {
    "default choice (tau 3, q0 0)": {},
    "rare choice (q0 2)": {"no_choice_utility": 2.0},
}


def single_item_estimators(log, target, rewards, level, n_bootstrap, seed):
    """(name, normal estimate, bootstrap estimate) of every single-item estimator."""
    calls = {
        "IPS": lambda **kw: ips(log, target, level, **kw),
        "SNIPS": lambda **kw: snips(log, target, level, **kw),
        "DM": lambda **kw: dm(log, target, rewards, level, **kw),
        "DR": lambda **kw: dr(log, target, rewards, level, **kw),
        "SNDR": lambda **kw: sndr(log, target, rewards, level, **kw),
        f"Switch-DR (tau {SWITCH_TAU:g})": lambda **kw: switch_dr(
            log, target, rewards, level, tau=SWITCH_TAU, **kw
        ),
    }
    for name, call in calls.items():
        yield name, call(), call(ci="bootstrap", n_bootstrap=n_bootstrap, seed=seed)


def softmax(values: np.ndarray) -> np.ndarray:
    weights = np.exp(values - values.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def explore(distribution: np.ndarray, epsilon: float) -> np.ndarray:
    return (1 - epsilon) * distribution + epsilon / distribution.shape[1]


def single_item_rows(env_id: str, args: argparse.Namespace) -> list[dict]:
    env = gym.make(env_id)
    popularity = PopularityAgent(env, by="positive_rate")
    popularity.fit(collect(env, n=args.events, seed=10_000))
    rows = []
    for seed in range(args.logs):
        log = collect(env, n=args.events, seed=seed)
        rewards = cross_fitted_rewards(log, seed=seed)
        targets = {
            "oracle": OracleAgent(env),
            f"oracle, {EXPLORATION:.0%} uniform": explore(
                target_distribution(log, OracleAgent(env)), EXPLORATION
            ),
            "softmax of the expected reward": softmax(env.unwrapped.expected_reward(log.users)),
            f"popularity, {EXPLORATION:.0%} uniform": explore(
                target_distribution(log, popularity), EXPLORATION
            ),
        }
        for target_name, target in targets.items():
            truth = exact_value(env, log, target)
            for name, normal, boot in single_item_estimators(
                log, target, rewards, args.level, args.bootstrap, seed
            ):
                rows.append(row(env_id, "", target_name, seed, truth, name, normal, boot))
    return rows


def slate_rows(env_id: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    for choice_name, choice in CHOICE_MODELS.items():
        env = gym.make(env_id, slate_size=3, **choice)
        single = gym.make(env_id)
        popularity = PopularityAgent(single, by="positive_rate")
        popularity.fit(collect(single, n=args.events, seed=10_000))
        for seed in range(args.logs):
            log = collect(env, n=args.slates, seed=seed)
            users = log.users[np.arange(0, len(log), 3)]
            oracle_top = OracleAgent(env).recommend(users, 3)
            popular_top = popularity.recommend(users, 3)
            eye = np.eye(env.unwrapped.n_items)
            values = {
                name: exact_slate_value(env, log, slates)
                for name, slates in (
                    ("oracle top 3", oracle_top),
                    ("popularity top 3", popular_top),
                )
            }
            targets = {
                "oracle top 3": (oracle_top, values["oracle top 3"]),
                "popularity top 3": (popular_top, values["popularity top 3"]),
                "50/50 mixture of both": (
                    0.5 * eye[oracle_top] + 0.5 * eye[popular_top],
                    0.5 * values["oracle top 3"] + 0.5 * values["popularity top 3"],
                ),
            }
            for target_name, (target, truth) in targets.items():
                for estimator in (iips, pseudo_inverse):
                    normal = estimator(log, target, args.level)
                    boot = estimator(
                        log,
                        target,
                        args.level,
                        ci="bootstrap",
                        n_bootstrap=args.bootstrap,
                        seed=seed,
                    )
                    name = normal.estimator
                    rows.append(
                        row(env_id, choice_name, target_name, seed, truth, name, normal, boot)
                    )
    return rows


def row(env_id, choice, target, seed, truth, name, normal, boot) -> dict:
    return {
        "env": env_id,
        "choice": choice,
        "target": target,
        "seed": seed,
        "truth": truth,
        "estimator": name,
        "value": normal.value,
        "relative_error": abs(normal.value - truth) / abs(truth),
        "covered_normal": normal.ci_low <= truth <= normal.ci_high,
        "covered_bootstrap": boot.ci_low <= truth <= boot.ci_high,
        "ess": normal.effective_sample_size,
    }


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table of ``frame``'s columns (no index)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|---" * frame.shape[1] + "|"]
    lines += ["| " + " | ".join(map(str, values)) + " |" for values in frame.to_numpy()]
    return "\n".join(lines)


def error_table(rows: pd.DataFrame, keys: list[str]) -> str:
    """Mean relative error in percent per (keys..., target) and estimator, truth beside it."""
    grouped = rows.groupby([*keys, "target", "estimator"], sort=False)
    errors = grouped["relative_error"].mean().mul(100).unstack("estimator")
    truths = rows.groupby([*keys, "target"], sort=False)["truth"].mean()
    table = errors.map(lambda e: f"{e:.1f}")
    table.insert(0, "truth (mean)", truths.map(lambda t: f"{t:.3f}"))
    return markdown(table.reset_index())


def coverage_table(rows: pd.DataFrame) -> str:
    grouped = rows.groupby("estimator", sort=False)
    table = pd.DataFrame(
        {
            "normal": grouped["covered_normal"].mean().mul(100).map(lambda c: f"{c:.0f}%"),
            "bootstrap": grouped["covered_bootstrap"].mean().mul(100).map(lambda c: f"{c:.0f}%"),
            "logs x targets": grouped.size(),
        }
    )
    return markdown(table.reset_index())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=5, help="logs (seeds) per env and setting")
    parser.add_argument("--events", type=int, default=20_000, help="events per single-item log")
    parser.add_argument("--slates", type=int, default=60_000, help="slates per slate log")
    parser.add_argument("--bootstrap", type=int, default=300, help="bootstrap resamples")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
    parser.add_argument("--out", type=Path, default=Path("docs/ope_validation.md"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"refusing to overwrite {args.out}; pass --overwrite")
    start = time.perf_counter()
    single, slates = [], []
    for env_id in args.envs:
        single += single_item_rows(env_id, args)
        print(f"{env_id}: single items done ({time.perf_counter() - start:.0f} s)", flush=True)
        slates += slate_rows(env_id, args)
        print(f"{env_id}: slates done ({time.perf_counter() - start:.0f} s)", flush=True)
    single, slates = pd.DataFrame(single), pd.DataFrame(slates)
    command = "python " + " ".join(["scripts/ope_validation.py", *sys.argv[1:]])
    text = TEMPLATE.format(
        command=command,
        logs=args.logs,
        logs_minus_one=args.logs - 1,
        events=args.events,
        slates=args.slates,
        level=args.level,
        bootstrap=args.bootstrap,
        tau=SWITCH_TAU,
        single=error_table(single, ["env"]),
        slate=error_table(slates, ["env", "choice"]),
        coverage=coverage_table(pd.concat([single, slates])),
        seconds=time.perf_counter() - start,
        version=recsim_ft.__version__,
        python=platform.python_version(),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


TEMPLATE = """# Off-policy estimators against exact ground truth

Generated by `scripts/ope_validation.py` (recsim-ft {version}, Python {python}, {seconds:.0f} s):

```bash
{command}
```

Each cell is the mean over {logs} logs (seeds 0 .. {logs_minus_one}) of the estimator's relative
error `|estimate - truth| / |truth|`, in percent. The truth is the target policy's exact value
on the logged users, from the env's `expected_reward` (and, for slates, its choice model), so it
carries no sampling noise. Logs of {events:,} single recommendations, or of {slates:,} slates of
3. Reward model of DM / DR / SNDR / Switch-DR: per-item ridge regression on the user's
features, cross-fitted on the same log in 2 folds (`cross_fitted_rewards`). Switch-DR uses
tau = {tau:g}. The script's docstring describes the target policies. Where the truth is close to
0 (popularity on Spotify, whose most liked songs are also disliked by many) every estimator's
relative error is large: the same absolute error is a large share of a small value.

## Single recommendations

Behaviour policies: uniform (Spotify, vaccine) and H&M's purchase / non-purchase sampling
(`HMFashionEnv.sample_log`), each with its exact propensities.

{single}

## Slates of 3

Behaviour policy: uniformly random slates of distinct items (exact propensities). The env's
choice model is a multinomial logit with a no-choice option: items in a slate compete for one
choice, so a slate's reward is not a sum of per-position terms, which IIPS and the
pseudo-inverse (PI) estimator assume. Under the default choice model both are far off whenever
the target's slates hold several attractive items (their items compete more than those of the
random logged slates); where choices are rare (`no_choice_utility=2`) the reward is nearly
additive and both come close to the truth.

{slate}

## Coverage of the {level:.0%} confidence intervals

Share of (log, target) pairs whose interval holds the truth, normal and percentile bootstrap
({bootstrap} resamples), pooled over envs and targets (and choice models for slates). An interval
only accounts for the sampling noise of the log: a biased estimator (DM with a wrong reward
model, slate estimators whose assumptions fail) misses the truth however narrow it is.

{coverage}
"""


if __name__ == "__main__":
    main()
