"""Train FT-Mamba, FT-Transformer and MLP two-tower models on one env; compare them with the
baselines.

    python examples/compare_embedders.py --env Spotify-v0          # quick preset, minutes on CPU
    python examples/compare_embedders.py --env VaccineMessaging-v0 --preset paper
    python examples/compare_embedders.py --smoke                   # seconds: checks the wiring only

The paper's protocol in four calls: collect a log with the env's behaviour policy, fit a
``TwoTowerAgent`` per embedder (MSE on the logged rewards, Adam, batch 32, one pass), and
``evaluate`` every agent on the env's test users beside chance (random), the best
non-personalised ranking (popularity) and the ceiling (oracle). Prints one row per agent; with
``--out``, also writes ``compare_<env>.csv`` and a bar chart ``compare_<env>.png``.
"""

from __future__ import annotations

import time

import gymnasium as gym
import pandas as pd
from common import at_least, example_parser, output_paths, parse_example_args, print_table

from recsim_ft.agents import OracleAgent, PopularityAgent, RandomAgent, TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.envs import ENV_IDS
from recsim_ft.evaluate import evaluate
from recsim_ft.models import EMBEDDERS
from recsim_ft.models.presets import PRESETS
from recsim_ft.protocol import protocol_for
from recsim_ft.train import TrainConfig

COLUMNS = ["HR@1", "HR@5", "HR@10", "P@5", "R@10", "MRR@10", "fit_s"]


def main() -> None:
    parser = example_parser(__doc__)
    parser.add_argument("--env", default="Spotify-v0", choices=ENV_IDS)
    parser.add_argument("--embedders", nargs="+", default=list(EMBEDDERS))
    parser.add_argument(
        "--preset", default="quick", choices=list(PRESETS), help="model and training preset"
    )
    parser.add_argument(
        "--samples",
        type=at_least(1),
        default=160_000,
        help="logged events, one pass of batch 32 (paper: 160000)",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: the paper's for the env)"
    )
    parser.add_argument("--users", type=at_least(1), default=100, help="test users (paper: 100)")
    args = parse_example_args(parser, smoke={"samples": 320, "users": 30})
    stem = f"compare_{args.env.removesuffix('-v0')}"
    paths = output_paths(args.out, [f"{stem}.csv", f"{stem}.png"], args.overwrite)

    env = gym.make(args.env)
    log = collect(env, n=args.samples, seed=args.seed)
    config = TrainConfig(lr=args.lr, seed=args.seed, eval_every=None, checkpoint_every=None)
    agents = {
        "random": RandomAgent(env, seed=args.seed),
        "popularity": PopularityAgent(env),
        "oracle": OracleAgent(env),
    }
    agents |= {
        f"FT-{name}": TwoTowerAgent(env, embedder=name, preset=args.preset, train_config=config)
        for name in args.embedders
    }

    rows = {}
    for name, agent in agents.items():
        start = time.perf_counter()
        agent.fit(log)
        fit_s = time.perf_counter() - start
        rows[name] = {**evaluate(agent, env, n_users=args.users, seed=args.seed), "fit_s": fit_s}
    extra_metrics = list(protocol_for(env).extra_metrics)  # H&M: Kaggle's MAP@12
    table = pd.DataFrame(rows).T[COLUMNS[:-1] + extra_metrics + ["fit_s"]]
    print_table(
        f"{args.env}: {len(log)} logged events, preset {args.preset!r}, {args.users} test users",
        table,
    )

    if paths:
        table.to_csv(paths[f"{stem}.csv"], index_label="agent")
        # pandas draws with matplotlib (the ``plot`` extra)
        ax = table[["HR@1", "HR@5", "HR@10"]].plot.bar(rot=0, figsize=(7, 3.5), title=args.env)
        ax.set_ylabel("hit rate")
        ax.figure.tight_layout()
        ax.figure.savefig(paths[f"{stem}.png"], dpi=120)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
