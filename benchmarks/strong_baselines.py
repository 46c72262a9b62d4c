"""What the strong baselines cost and get, from the tables' settings to the whole catalogue scale:
seconds to fit on the paper's 160,000 logged events, milliseconds to score every item for 1,000
users, HR@1 / HR@10 / MAP@12 on 100 test users, and the process's peak memory so far.

The settings are those of the paper's tables (one seed) and the H&M stand-in at 2,000 and 20,000
articles. ``--lightgbm`` adds LightGBM's ``LGBMRegressor`` (through ``SklearnAgent``, categorical
columns declared, library defaults) beside the scikit-learn GBDT, which decides whether LightGBM
earns an extra (it needs ``pip install lightgbm``). Run it on an idle machine; it prints the CPU.

    python benchmarks/strong_baselines.py [--settings spotify k25_m25 hm hm_20000 ...]
        [--agents gbdt linear segment_popularity popularity] [--lightgbm] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import gymnasium as gym
import numpy as np

import recsim_ft  # noqa: F401  (registers the envs)
from recsim_ft import cpu
from recsim_ft.agents import SklearnAgent
from recsim_ft.agents.registry import REGISTRY, names
from recsim_ft.data import collect
from recsim_ft.evaluate import evaluate
from recsim_ft.experiments.specs import derived_seeds
from recsim_ft.protocol import protocol_for

SETTINGS = {
    "spotify": ("Spotify-v0", {}),
    "k25_m25": ("VaccineMessaging-v0", {"clusters": 25, "messages": 25}),
    "k50_m100": ("VaccineMessaging-v0", {"clusters": 50, "messages": 100}),
    "k100_m100": ("VaccineMessaging-v0", {"clusters": 100, "messages": 100}),
    "hm": ("HMFashion-v0", {}),
    "hm_2000": ("HMFashion-v0", {"n_items": 2_000}),
    "hm_20000": ("HMFashion-v0", {"n_items": 20_000}),
}


def lightgbm_agent(env: gym.Env, seed: int) -> SklearnAgent:
    from lightgbm import LGBMRegressor

    agent = SklearnAgent(env, None)
    columns = [int(i) for i in agent.categorical_features.nonzero()[0]]

    class CategoricalLGBM(LGBMRegressor):
        """LightGBM told which columns are categorical (SklearnAgent's mask)."""

        def fit(self, x, y):
            return super().fit(x, y, categorical_feature=columns)

    agent.estimator = CategoricalLGBM(random_state=seed, verbose=-1, n_jobs=1)
    return agent


#: The registry's agents that learn from the log and train no model, with their defaults, and
#: LightGBM beside them.
AGENTS = {
    **{
        name: lambda env, seed, name=name: REGISTRY[name].build(env, seed=seed, params={})
        for name in names(trains_model=False, fits=True)
    },
    "lightgbm": lightgbm_agent,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--agents",
        nargs="+",
        default=[*names(strong=True), "popularity"],
        choices=list(AGENTS),
    )
    parser.add_argument("--lightgbm", action="store_true", help="add LightGBM beside the GBDT")
    parser.add_argument("--seed", type=int, default=0, help="run seed (as reproduce's seeds)")
    args = parser.parse_args()
    agents = args.agents + (["lightgbm"] if args.lightgbm else [])
    print(f"CPU: {cpu.describe()}; Python {platform.python_version()}; seed {args.seed}")
    print(
        f"{'setting':<11}{'items':>7} {'agent':<20}{'fit s':>8}{'ms/1k users':>13}"
        f"{'HR@1':>7}{'HR@10':>7}{'MAP@12':>8}{'peak RSS GB':>13}"
    )
    data_seed, train_seed, test_seed = derived_seeds(args.seed)
    for name in args.settings:
        env_id, kwargs = SETTINGS[name]
        if env_id == "VaccineMessaging-v0":
            kwargs = {**kwargs, "seed": args.seed}  # as the tables draw the env per seed
        env = gym.make(env_id, **kwargs)
        log = collect(env, n=protocol_for(env).n_samples, seed=data_seed)
        users = env.unwrapped.sample_users(1_000, np.random.default_rng(test_seed))  # for timing
        for agent_name in agents:
            start = time.perf_counter()
            agent = AGENTS[agent_name](env, train_seed).fit(log)
            fit = time.perf_counter() - start
            start = time.perf_counter()
            agent.score_items(users)
            score_ms = 1e3 * (time.perf_counter() - start)
            m = evaluate(agent, env, n_users=100, seed=test_seed, ks=(1, 10, 12))
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(
                f"{name:<11}{env.unwrapped.n_items:>7} {agent_name:<20}{fit:>8.1f}{score_ms:>13.0f}"
                f"{m['HR@1']:>7.3f}{m['HR@10']:>7.3f}{m.get('MAP@12', float('nan')):>8.4f}"
                f"{peak:>13.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
