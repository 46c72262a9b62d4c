"""The vaccine-messaging sweep of the paper's Table II for one embedder: six (clusters, messages)
settings, from 25 clusters of 25 messages to 100 clusters of 100 messages.

    python examples/vaccine_sweep.py --embedder transformer        # paper protocol, quick model
    python examples/vaccine_sweep.py --embedder mamba --preset paper   # paper's model, slow on CPU
    python examples/vaccine_sweep.py --smoke

Each setting builds its own env (the messages are re-drawn with the seed, as in the paper),
collects a uniform log, fits a two-tower model and evaluates it on 100 new people beside the
popularity baseline and the paper's means over 100 seeds (paper preset; the quick preset trades
accuracy for speed, so expect lower numbers from it). More clusters and messages make the
task harder: the right message for a person is one of fewer. Prints one row per setting; with
``--out``, writes ``vaccine_sweep.csv`` and ``vaccine_sweep.png`` (HR@10 per setting). For many
seeds and both embedders, use ``recsim-ft reproduce`` (``recsim_ft.experiments``).
"""

from __future__ import annotations

import gymnasium as gym
import pandas as pd
from common import at_least, example_parser, output_paths, parse_example_args, print_table

from recsim_ft.agents import PopularityAgent, TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.evaluate import evaluate
from recsim_ft.experiments import table_settings
from recsim_ft.models import EMBEDDERS
from recsim_ft.models.presets import PRESETS
from recsim_ft.paper_results import paper_value
from recsim_ft.train import TrainConfig


def main() -> None:
    parser = example_parser(__doc__)
    parser.add_argument("--embedder", default="mamba", choices=EMBEDDERS)
    parser.add_argument(
        "--preset", default="quick", choices=list(PRESETS), help="model and training preset"
    )
    parser.add_argument(
        "--samples",
        type=at_least(1),
        default=160_000,
        help="logged events per setting (paper: 160000)",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: the paper's, 1e-5)"
    )
    parser.add_argument(
        "--pool",
        type=at_least(1),
        default=50_000,
        help="people in each env's population (paper: 50000)",
    )
    args = parse_example_args(parser, smoke={"samples": 160, "pool": 500})
    paths = output_paths(args.out, ["vaccine_sweep.csv", "vaccine_sweep.png"], args.overwrite)

    config = TrainConfig(lr=args.lr, seed=args.seed, eval_every=None, checkpoint_every=None)
    rows = {}
    for setting in table_settings(2):
        env = gym.make(setting.env_id, **setting.env_kwargs, n_users=args.pool, seed=args.seed)
        log = collect(env, n=args.samples, seed=args.seed)
        model = evaluate(
            TwoTowerAgent(env, args.embedder, args.preset, train_config=config).fit(log),
            env,
            seed=args.seed,
        )
        popularity = evaluate(PopularityAgent(env).fit(log), env, seed=args.seed)
        rows[setting.label.removeprefix("Vaccine ")] = {
            "HR@1": model["HR@1"],
            "HR@10": model["HR@10"],
            "popularity HR@10": popularity["HR@10"],
            "paper HR@1": paper_value(setting.name, args.embedder, "HR@1"),
            "paper HR@10": paper_value(setting.name, args.embedder, "HR@10"),
        }
    table = pd.DataFrame(rows).T
    print_table(
        f"vaccine sweep, FT-{args.embedder} ({args.preset} preset, {args.samples} logged events "
        f"per setting, seed {args.seed}); paper: means over 100 seeds",
        table,
    )

    if paths:
        table.to_csv(paths["vaccine_sweep.csv"], index_label="setting")
        # pandas draws with matplotlib (the ``plot`` extra)
        ax = table[["HR@10", "popularity HR@10", "paper HR@10"]].plot.bar(rot=20, figsize=(8, 3.5))
        ax.set_ylabel("HR@10")
        ax.figure.tight_layout()
        ax.figure.savefig(paths["vaccine_sweep.png"], dpi=120)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
