"""Write your own recommender in twenty lines and score it beside the baselines.

    python examples/custom_agent.py                       # Spotify, 20,000 logged events
    python examples/custom_agent.py --env VaccineMessaging-v0
    python examples/custom_agent.py --smoke

An agent subclasses ``recsim_ft.agents.Agent`` and implements ``score_items(users)``: an
(n_users, n_items) array, higher is better; ``fit(log)`` (return ``self``) is optional. Ranking,
top-k, single Gymnasium actions and ``evaluate`` then work as for the built-in agents. The agent
below fits one ridge regression per item, from the user's features (categories one-hot, as
Gymnasium's ``FlattenObservation`` shows them) to the reward logged for that item.

The table also shows each agent's value (the mean reward of its top item) estimated off-policy
by SNIPS from a second uniform log (``recsim_ft.ope``), beside the true value the env knows.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
from common import at_least, example_parser, output_paths, parse_example_args, print_table
from sklearn.linear_model import Ridge

from recsim_ft.agents import Agent, OracleAgent, PopularityAgent, RandomAgent
from recsim_ft.data import collect, user_observations
from recsim_ft.envs import ENV_IDS
from recsim_ft.evaluate import evaluate
from recsim_ft.ope import policy_value, snips


class PerItemRidgeAgent(Agent):
    """One ridge regression per item: predicted reward of the item for the user's features."""

    def __init__(self, env: gym.Env, alpha: float = 1.0) -> None:
        super().__init__(env)
        self.alpha = alpha

    def _features(self, users) -> np.ndarray:
        return user_observations(users, self.rec_env.user_schema, flatten=True)

    def fit(self, log) -> PerItemRidgeAgent:
        features = self._features(log.users)
        self.models_ = [
            Ridge(alpha=self.alpha).fit(
                features[log.actions == item], log.rewards[log.actions == item]
            )
            for item in range(self.n_items)
        ]  # needs every item in the log (true of uniform logs)
        return self

    def score_items(self, users) -> np.ndarray:
        features = self._features(users)
        return np.column_stack([model.predict(features) for model in self.models_])


def main() -> None:
    parser = example_parser(__doc__)
    parser.add_argument(
        "--env",
        default="Spotify-v0",
        choices=[e for e in ENV_IDS if e != "HMFashion-v0"],
        help="an env with a uniform behaviour policy, so every item is logged",
    )
    parser.add_argument("--samples", type=at_least(1), default=20_000)
    args = parse_example_args(parser, smoke={"samples": 2_000})
    paths = output_paths(args.out, ["custom_agent.csv"], args.overwrite)

    env = gym.make(args.env)
    log = collect(env, n=args.samples, seed=args.seed)
    agents = {
        "random": RandomAgent(env, seed=args.seed),
        "popularity": PopularityAgent(env),
        "per-item ridge (ours)": PerItemRidgeAgent(env),
        "oracle": OracleAgent(env),
    }
    table = pd.DataFrame(
        {name: evaluate(agent.fit(log), env, seed=args.seed) for name, agent in agents.items()}
    ).T
    table = table[["HR@1", "HR@5", "HR@10", "P@5", "MRR@10"]]
    held_out = collect(
        env, n=args.samples, seed=args.seed + 1
    )  # on the training log, estimates flatter
    for name, agent in agents.items():
        estimate = snips(held_out, agent)
        table.loc[name, ["SNIPS value", "s.e."]] = estimate.value, estimate.std_error
        table.loc[name, "true value"] = policy_value(agent, env, seed=args.seed).value
    print_table(
        f"{args.env}: a custom agent beside the baselines ({len(log)} logged events)", table
    )
    if paths:
        table.to_csv(paths["custom_agent.csv"], index_label="agent")
        print(f"wrote {paths['custom_agent.csv']}")


if __name__ == "__main__":
    main()
