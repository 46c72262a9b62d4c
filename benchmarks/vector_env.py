"""Sampling throughput of the native vector env (``RecVectorEnv``) against Gymnasium's
``SyncVectorEnv``, side by side in one run.

Throughput counts env steps (slots x vector steps) per second under random actions, with the
default next-step autoreset of both (so half of the steps of a horizon-1 env are reset steps, in
both). Target: native >= 20x sync. The sync env builds ``num_envs`` copies of the env, so the
vaccine and H&M envs are built with smaller user pools (``SMALL``) to keep its construction short;
the step cost does not depend on the pool size. The machine may be shared: run it twice.

    python benchmarks/vector_env.py [--num-envs 64 256] [--seconds 2] [--envs Spotify-v0 ...]
"""

import argparse
import time

import gymnasium as gym
import numpy as np

import recsim_ft

SMALL = {
    "Spotify-v0": {},
    "VaccineMessaging-v0": {"n_users": 2_000},
    "HMFashion-v0": {"n_customers": 5_000},
}


def steps_per_second(envs: gym.vector.VectorEnv, seconds: float) -> float:
    """Env steps per second over at least ``seconds`` of stepping with random actions."""
    rng = np.random.default_rng(0)
    actions = rng.integers(0, envs.single_action_space.n, size=(256, envs.num_envs))
    envs.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        envs.step(actions[steps % len(actions)])
        steps += 1
    return steps * envs.num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--envs", nargs="+", default=list(SMALL), choices=recsim_ft.ENV_IDS)
    args = parser.parse_args()
    print(
        f"{'env':<22}{'num_envs':>9}{'native steps/s':>16}{'sync steps/s':>14}{'speed-up':>10}"
        f"{'build native':>14}{'build sync':>12}"
    )
    for env_id in args.envs:
        for num_envs in args.num_envs:
            rates, builds = {}, {}
            for mode in ("vector_entry_point", "sync"):
                start = time.perf_counter()
                envs = gym.make_vec(
                    env_id, num_envs=num_envs, vectorization_mode=mode, **SMALL[env_id]
                )
                builds[mode] = time.perf_counter() - start
                rates[mode] = steps_per_second(envs, args.seconds)
                envs.close()
            print(
                f"{env_id:<22}{num_envs:>9}{rates['vector_entry_point']:>16,.0f}{rates['sync']:>14,.0f}"
                f"{rates['vector_entry_point'] / rates['sync']:>9.1f}x"
                f"{builds['vector_entry_point']:>13.2f}s{builds['sync']:>11.2f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
