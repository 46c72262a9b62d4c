"""Online bandits inside a recsim-ft env: LinUCB against epsilon-greedy and random recommendations,
with the cumulative regret against the oracle.

    python examples/online_bandit.py --env Spotify-v0 --out results/      # 5,000 users, a minute
    python examples/online_bandit.py --env VaccineMessaging-v0 --steps 20000 --batch-size 32
    python examples/online_bandit.py --smoke

``recsim_ft.run_online`` draws a user, the agent picks one item, the env answers, the agent
learns from that reward only. Regret is the oracle's expected reward minus that of the chosen
item (from ``env.expected_reward``), so a learner's curve bends flat while a random one grows
linearly. The ranking metrics at the end are the same as for the offline models. With ``--out``,
writes ``online_<env>.csv`` and the regret plot ``online_<env>.png``.
"""

from __future__ import annotations

import gymnasium as gym
import pandas as pd
from common import at_least, example_parser, output_paths, parse_example_args, print_table

from recsim_ft import run_online
from recsim_ft.agents import EpsilonGreedyAgent, LinUCBAgent, RandomAgent
from recsim_ft.envs import ENV_IDS


def main() -> None:
    parser = example_parser(__doc__)
    parser.add_argument("--env", default="Spotify-v0", choices=ENV_IDS)
    parser.add_argument("--steps", type=at_least(1), default=5_000, help="users served online")
    parser.add_argument(
        "--batch-size", type=at_least(1), default=1, help="users per round (1: fully sequential)"
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="LinUCB exploration bonus")
    parser.add_argument(
        "--epsilon", type=float, default=0.1, help="epsilon-greedy exploration rate"
    )
    args = parse_example_args(parser, smoke={"steps": 200, "batch_size": 10})
    stem = f"online_{args.env.removesuffix('-v0')}"
    paths = output_paths(args.out, [f"{stem}.csv", f"{stem}.png"], args.overwrite)

    env = gym.make(args.env)
    agents = {
        "LinUCB": LinUCBAgent(env, alpha=args.alpha),
        f"epsilon-greedy ({args.epsilon})": EpsilonGreedyAgent(
            env, epsilon=args.epsilon, seed=args.seed
        ),
        "random": RandomAgent(env, seed=args.seed),
    }
    results = {
        name: run_online(
            agent,
            env,
            args.steps,
            seed=args.seed,
            batch_size=args.batch_size,
            eval_every=max(args.steps // 10, 1),
            progress=False,
        )
        for name, agent in agents.items()
    }
    table = pd.DataFrame(
        {
            name: {
                "mean reward": r.history["reward"].mean(),
                "cum regret": r.cum_regret,
                "HR@1": r.metrics["HR@1"],
                "HR@5": r.metrics["HR@5"],
                "P@5": r.metrics["P@5"],
            }
            for name, r in results.items()
        }
    ).T
    print_table(
        f"{args.env}: {args.steps} users online (batches of {args.batch_size}), seed {args.seed}",
        table,
    )

    if paths:
        table.to_csv(paths[f"{stem}.csv"], index_label="agent")
        curves = pd.DataFrame(
            {name: r.history.set_index("step")["cum_regret"] for name, r in results.items()}
        )
        # pandas draws with matplotlib (the ``plot`` extra)
        ax = curves.plot(
            figsize=(6, 3.5), title=f"{args.env}: cumulative regret against the oracle"
        )
        ax.set_xlabel("users served")
        ax.set_ylabel("cumulative regret")
        ax.figure.tight_layout()
        ax.figure.savefig(paths[f"{stem}.png"], dpi=120)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
