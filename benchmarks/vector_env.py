"""Env steps per second of every env in every mode (bandit, slates, sessions, both), single env
and batched, measured with Gymnasium's own ``benchmark_step`` (one env, random actions, reset
when an episode ends) and ``benchmark_vector_step`` (a vector env, random actions; with the
default next-step autoreset it counts only the slots that stepped, not the reset steps).

Batched is the native vector env (``RecVectorEnv``, what ``gym.make_vec`` returns); ``--sync``
adds Gymnasium's ``SyncVectorEnv`` of ``num_envs`` env copies beside it. The vaccine and H&M envs
are built with smaller user pools (``SMALL``) to keep construction short; the step cost does not
depend on the pool size. The machine may be shared: run it twice.

    python benchmarks/vector_env.py [--num-envs 64 256] [--seconds 2] [--envs Spotify-v0 ...]
        [--modes bandit slate session session+slate] [--sync]
"""

import argparse

import gymnasium as gym
from gymnasium.utils.performance import benchmark_step, benchmark_vector_step

import recsim_ft

SMALL = {
    "Spotify-v0": {},
    "VaccineMessaging-v0": {"n_users": 2_000},
    "HMFashion-v0": {"n_customers": 5_000},
}
MODES = {
    "bandit": {},
    "slate": {"slate_size": 3},
    "session": {"session": True},
    "session+slate": {"session": True, "slate_size": 3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--envs", nargs="+", default=list(SMALL), choices=recsim_ft.ENV_IDS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--sync", action="store_true", help="also time SyncVectorEnv")
    args = parser.parse_args()
    columns = ["single"]
    for n in args.num_envs:
        columns += [f"native {n}"] + ([f"sync {n}"] if args.sync else [])
    print(f"{'env':<21}{'mode':<15}" + "".join(f"{c:>14}" for c in columns) + "   (steps/s)")
    for env_id in args.envs:
        for mode in args.modes:
            kwargs = {**SMALL[env_id], **MODES[mode]}
            env = gym.make(env_id, **kwargs)
            env.action_space.seed(0)
            rates = [benchmark_step(env, target_duration=args.seconds, seed=0)]
            env.close()
            for num_envs in args.num_envs:
                modes = ["vector_entry_point"] + (["sync"] if args.sync else [])
                for vectorization in modes:
                    envs = gym.make_vec(
                        env_id, num_envs=num_envs, vectorization_mode=vectorization, **kwargs
                    )
                    rates.append(benchmark_vector_step(envs, target_duration=args.seconds, seed=0))
                    envs.close()
            print(
                f"{env_id:<21}{mode:<15}" + "".join(f"{rate:>14,.0f}" for rate in rates),
                flush=True,
            )


if __name__ == "__main__":
    main()
