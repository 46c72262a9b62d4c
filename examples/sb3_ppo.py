"""Stable-Baselines3 PPO and DQN in a recsim-ft env, with the paper's FT-Mamba user tower as the
policy's features extractor, then scored with ``evaluate`` like any other recommender.

    python examples/sb3_ppo.py --env Spotify-v0                # 20,000 steps each, minutes on CPU
    python examples/sb3_ppo.py --algos ppo --embedder transformer --timesteps 50000
    python examples/sb3_ppo.py --smoke

``MultiInputPolicy`` reads the env's ``Dict`` observation; ``FTFeaturesExtractor`` turns it into
a vector with the feature tokenizer and the embedder, and the policy's own layers sit on top.
``SB3Agent`` ranks items by the trained policy's action probabilities (PPO) or Q-values (DQN).
A popularity ranking fitted on a uniform log of as many interactions as the RL agents had is
the fair non-personalised baseline. With ``--out``, writes ``sb3_<env>.csv``.

Pitfalls of running a contextual bandit through an RL library (every episode is one user and one
recommendation):

1. One-step episodes end with ``terminated=True``. That is the truth (nothing the agent does
   changes who comes next), so do not turn it into ``truncated`` with a ``TimeLimit``: a truncated
   episode makes SB3 bootstrap from the value of a "next state" that does not exist.
2. ``gamma=0`` is right for a contextual bandit: the value of a recommendation is its immediate
   reward. With ``terminated=True`` after every step the returns are the rewards whatever gamma
   is, but ``gamma=0`` states the intent and stays myopic if you raise the env's ``horizon``.
3. The observation that ``step`` returns after the automatic reset belongs to the *next* user.
   SB3's vector envs reset a finished env inside ``step``; the user who received the
   recommendation is in ``infos[i]["terminal_observation"]``. Pair a reward with the observation
   the action was chosen for, never with the one returned beside the reward (the script checks
   this on the first step).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pandas as pd
from common import (
    at_least,
    example_parser,
    needs_extra,
    output_paths,
    parse_example_args,
    print_table,
)

from recsim_ft.agents import OracleAgent, PopularityAgent, RandomAgent
from recsim_ft.data import collect
from recsim_ft.envs import ENV_IDS
from recsim_ft.evaluate import evaluate
from recsim_ft.models import EMBEDDERS

with needs_extra("rl"):  # Stable-Baselines3
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.env_util import make_vec_env

    from recsim_ft.agents.sb3 import FTFeaturesExtractor, SB3Agent


def check_auto_reset(vec_env) -> None:
    """Pitfall 3, shown: the reward of step t belongs to the observation the action was chosen
    for."""
    before = vec_env.reset()
    after, _, dones, infos = vec_env.step(np.zeros(vec_env.num_envs, dtype=np.int64))
    terminal = infos[0]["terminal_observation"]
    assert dones.all(), "every step of a one-step episode is terminal"
    assert all(np.array_equal(terminal[k], before[k][0]) for k in terminal), (
        "terminal_observation is the served user"
    )
    vec_env.reset()
    same = all(np.array_equal(after[k][0], before[k][0]) for k in terminal)
    returned = "the same features (a look-alike user)" if same else "another user"
    print(
        "auto-reset check: the served user is infos[0]['terminal_observation']; "
        f"the returned observation is {returned}"
    )


def main() -> None:
    parser = example_parser(__doc__)
    parser.add_argument("--env", default="Spotify-v0", choices=ENV_IDS)
    parser.add_argument("--algos", nargs="+", default=["ppo", "dqn"], choices=["ppo", "dqn"])
    parser.add_argument("--embedder", default="mamba", choices=EMBEDDERS)
    parser.add_argument(
        "--timesteps", type=at_least(1), default=20_000, help="environment steps per algorithm"
    )
    parser.add_argument("--n-envs", type=at_least(1), default=8)
    args = parse_example_args(parser, smoke={"timesteps": 128, "n_envs": 2})
    paths = output_paths(args.out, [f"sb3_{args.env.removesuffix('-v0')}.csv"], args.overwrite)

    env = gym.make(args.env)
    # a factory, not the id: given an id, SB3 asks for render_mode='rgb_array' (these envs lack it)
    vec_env = make_vec_env(lambda: gym.make(args.env), n_envs=args.n_envs, seed=args.seed)
    check_auto_reset(vec_env)
    policy_kwargs = dict(
        features_extractor_class=FTFeaturesExtractor,
        features_extractor_kwargs=dict(embedder=args.embedder, preset="quick"),
    )
    n_steps = max(16, min(128, args.timesteps // args.n_envs))
    algorithms = {
        "ppo": lambda: PPO(
            "MultiInputPolicy",
            vec_env,
            gamma=0.0,
            n_steps=n_steps,
            batch_size=64,
            n_epochs=4,
            ent_coef=0.01,
            policy_kwargs=policy_kwargs,
            seed=args.seed,
        ),
        "dqn": lambda: DQN(
            "MultiInputPolicy",
            vec_env,
            gamma=0.0,
            learning_rate=1e-3,
            buffer_size=args.timesteps,
            learning_starts=min(1_000, args.timesteps // 4),
            batch_size=64,
            train_freq=4,
            target_update_interval=500,
            exploration_fraction=0.5,
            policy_kwargs=policy_kwargs,
            seed=args.seed,
        ),
    }

    rows = {}
    for name in args.algos:
        start = time.perf_counter()
        model = algorithms[name]().learn(total_timesteps=args.timesteps)
        rows[f"{name.upper()} + FT-{args.embedder}"] = {
            **evaluate(SB3Agent(env, model), env, seed=args.seed),
            "train_s": time.perf_counter() - start,
        }
    log = collect(env, n=args.timesteps, seed=args.seed)
    for name, agent in {
        "random": RandomAgent(env, seed=args.seed),
        "popularity": PopularityAgent(env).fit(log),
        "oracle": OracleAgent(env),
    }.items():
        rows[name] = {**evaluate(agent, env, seed=args.seed), "train_s": 0.0}
    table = pd.DataFrame(rows).T[["HR@1", "HR@5", "HR@10", "P@5", "MRR@10", "train_s"]]
    print_table(f"{args.env}: SB3 agents after {args.timesteps} steps, beside the baselines", table)
    if paths:
        path = next(iter(paths.values()))
        table.to_csv(path, index_label="agent")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
