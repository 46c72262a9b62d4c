"""Sessions in which the user changes: the greedy one-step oracle against a policy that plans.

    python examples/session_rl.py                         # Spotify sessions, 2,000 each, ~30 s
    python examples/session_rl.py --env VaccineMessaging-v0
    python examples/session_rl.py --ppo-steps 100000 --gamma 0.9   # also train SB3 PPO
    python examples/session_rl.py --smoke

In ``gym.make("Spotify-v0", session=True)`` a listener tires of songs that sound like what they
just heard and quits when bored or unhappy (the equations are in ``SpotifyEnv``'s docstring).
Every policy below runs one session per slot of the native vector env, so the returns are
independent; the table gives the mean return with its 95% confidence half-width, the mean
session length and the share of sessions that lasted to ``session_length`` (truncated) instead
of the listener leaving.

- greedy one-step oracle: the best expected reward now, from the hidden state (ties to the lower
  item index, as every recsim-ft ranking): the best a myopic policy can be told.
- greedy oracle, random ties: the same, ties broken at random.
- planner: the reward now plus ``--continuation`` V times the probability that the session goes
  on after it, from the hidden state: a one-step lookahead with a fixed value V of staying.
  ``env.session_outlook()`` gives both per item. V must not exceed what the rest of a session can
  earn: 5 on Spotify (rewards of +1 per song), 0.5 for vaccine messaging (where a vaccination
  ends the campaign with reward 1: with V >= 1 the planner would rather keep the person
  unvaccinated and talking), 1 on H&M.
- PPO (``--ppo-steps``): Stable-Baselines3 PPO with ``MultiInputPolicy`` on the observation only
  (the listener's genres, the recent songs and rewards, the step), discount ``--gamma``.

With ``--out``, writes ``session_<env>.csv``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pandas as pd
from common import at_least, example_parser, output_paths, parse_example_args, print_table

import recsim_ft  # noqa: F401  (registers the env ids)
from recsim_ft.envs import ENV_IDS

#: policy(observations, expected reward now (N, n_items), P(stays) (N, n_items), rng) -> actions
Policy = Callable[[dict, np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
#: the planner's value of staying one more step, per env (see the module docstring)
CONTINUATION = {"Spotify-v0": 5.0, "VaccineMessaging-v0": 0.5, "HMFashion-v0": 1.0}


def run_sessions(env_id: str, policy: Policy, episodes: int, seed: int) -> dict[str, float]:
    """One session per slot of ``gym.make_vec(env_id, num_envs=episodes, session=True)``."""
    envs = gym.make_vec(env_id, num_envs=episodes, session=True)
    observations, _ = envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes)
    done, stayed = np.zeros(episodes, bool), np.zeros(episodes, bool)
    while not done.all():
        expected, stays = envs.session_outlook()
        actions = policy(observations, expected, stays, rng)
        observations, rewards, terminated, truncated, _ = envs.step(actions)
        returns += np.where(done, 0.0, rewards)
        lengths += ~done
        stayed |= truncated & ~done
        done |= terminated | truncated
    envs.close()
    half_width = 1.96 * returns.std(ddof=1) / np.sqrt(episodes)
    return {
        "return": returns.mean(),
        "+-95%": half_width,
        "length": lengths.mean(),
        "stayed to the end": stayed.mean(),
    }


def hand_written_policies(continuation: float) -> dict[str, Policy]:
    def random(observations, expected, stays, rng):
        return rng.integers(0, expected.shape[1], size=len(expected))

    def greedy(observations, expected, stays, rng):
        return expected.argmax(axis=1)

    def greedy_random_ties(observations, expected, stays, rng):
        return (expected + 1e-9 * rng.random(expected.shape)).argmax(axis=1)

    def planner(observations, expected, stays, rng):
        return (expected + continuation * stays).argmax(axis=1)

    return {
        "random": random,
        "greedy one-step oracle": greedy,
        "greedy oracle, random ties": greedy_random_ties,
        f"planner (reward + {continuation:g} x P(stays))": planner,
    }


def ppo_policy(env_id: str, steps: int, gamma: float, seed: int) -> Policy:
    """SB3 PPO trained on ``steps`` session steps (8 envs); acts greedily on observations."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    train_envs = make_vec_env(lambda: gym.make(env_id, session=True), n_envs=8, seed=seed)
    model = PPO(
        "MultiInputPolicy",
        train_envs,
        gamma=gamma,
        n_steps=max(16, min(256, steps // 8)),
        batch_size=64,
        n_epochs=4,
        ent_coef=0.01,
        seed=seed,
        policy_kwargs={"net_arch": [128, 128]},
    ).learn(total_timesteps=steps)

    def act(observations, expected, stays, rng):
        return model.predict(observations, deterministic=True)[0]

    return act


def main() -> None:
    parser = example_parser(__doc__)
    parser.add_argument("--env", default="Spotify-v0", choices=ENV_IDS)
    parser.add_argument("--episodes", type=at_least(1), default=2_000, help="sessions per policy")
    parser.add_argument(
        "--continuation", type=float, help="the planner's V (default: per env, see above)"
    )
    parser.add_argument(
        "--ppo-steps", type=at_least(0), default=0, help="train PPO for this many steps"
    )
    parser.add_argument("--gamma", type=float, default=0.9, help="PPO's discount")
    args = parse_example_args(parser, smoke={"episodes": 50, "ppo_steps": 256})
    stem = f"session_{args.env.removesuffix('-v0')}"
    paths = output_paths(args.out, [f"{stem}.csv"], args.overwrite)

    continuation = CONTINUATION[args.env] if args.continuation is None else args.continuation
    policies = hand_written_policies(continuation)
    if args.ppo_steps:
        start = time.perf_counter()
        policies[f"PPO, gamma {args.gamma:g}, {args.ppo_steps:,} steps"] = ppo_policy(
            args.env, args.ppo_steps, args.gamma, args.seed
        )
        print(f"PPO trained in {time.perf_counter() - start:.0f} s", flush=True)
    rows = {
        name: run_sessions(args.env, policy, args.episodes, args.seed)
        for name, policy in policies.items()
    }
    table = pd.DataFrame(rows).T
    print_table(
        f"{args.env}, session=True: {args.episodes} sessions per policy, seed {args.seed}", table
    )
    if paths:
        path = paths[f"{stem}.csv"]
        table.to_csv(path, index_label="policy")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
