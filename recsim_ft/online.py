"""Online learning inside an environment: the agent recommends, the env answers, the agent learns.

``run_online`` is the bandit counterpart of ``recsim_ft.train``: instead of fitting a log collected
beforehand, the agent chooses every item itself and sees only the rewards of its own choices.
It records the reward and the regret against the oracle (the expected reward of the best item
minus that of the chosen one, from ``env.expected_reward``) of every step and, at intervals, the
same ranking metrics on the env's test users as offline training (``recsim_ft.evaluate``), so
online and offline agents are compared on one scale.

>>> import gymnasium as gym
>>> from recsim_ft.agents.bandits import LinUCBAgent
>>> env = gym.make("Spotify-v0")
>>> result = run_online(LinUCBAgent(env), env, steps=300, eval_every=100, progress=False)
>>> result.history.columns[:8].tolist()
['step', 'user_id', 'action', 'reward', 'expected_reward', 'cum_reward', 'regret', 'cum_regret']
>>> result.evaluations["step"].tolist()
[100, 200, 300]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsim_ft.checks import check_actions, check_int
from recsim_ft.envs.base import RecEnv
from recsim_ft.evaluate import evaluate
from recsim_ft.schema import Batch

#: Users are drawn in blocks of this many, whatever ``batch_size``, so the user sequence of a
#: seed does not depend on how the agent batches its decisions.
USER_BLOCK = 4096


@dataclass
class OnlineResult:
    """What ``run_online`` measured.

    ``history`` has one row per step: ``step`` (1-based), ``user_id``, ``action``, ``reward``,
    ``expected_reward`` (of the chosen item), ``cum_reward``, ``regret``, ``cum_regret``, then one
    column per ranking metric (``"HR@1"``, ...), filled at the evaluation steps and NaN elsewhere.
    """

    history: pd.DataFrame
    metric_names: tuple[str, ...]
    eval_steps: tuple[int, ...]
    agent: Any

    @property
    def evaluations(self) -> pd.DataFrame:
        """The evaluation rows: ``step``, ``cum_reward``, ``cum_regret`` and the metrics."""
        rows = self.history.iloc[np.asarray(self.eval_steps) - 1]
        return rows[["step", "cum_reward", "cum_regret", *self.metric_names]].reset_index(drop=True)

    @property
    def metrics(self) -> dict[str, float]:
        """The ranking metrics of the last evaluation (at the last step)."""
        return self.evaluations.iloc[-1].drop(["step", "cum_reward", "cum_regret"]).to_dict()

    @property
    def cum_regret(self) -> float:
        return float(self.history["cum_regret"].iloc[-1])


class _UserStream:
    """Fresh users from ``rng``, drawn ``USER_BLOCK`` at a time and handed out in any sizes."""

    def __init__(self, env: RecEnv, rng: np.random.Generator) -> None:
        self.env, self.rng = env, rng
        self.buffer: Batch | None = None
        self.position = 0

    def take(self, n: int) -> Batch:
        parts = []
        while n > 0:
            if self.buffer is None or self.position == len(self.buffer):
                self.buffer, self.position = self.env.sample_users(USER_BLOCK, self.rng), 0
            m = min(n, len(self.buffer) - self.position)
            parts.append(self.buffer[self.position : self.position + m])
            self.position += m
            n -= m
        return parts[0] if len(parts) == 1 else Batch.concat(parts)


def _choose(agent: Any, users: Batch, n_items: int) -> np.ndarray:
    """The agent's choices: ``act_batch`` when it explores, else its top-ranked item."""
    if hasattr(agent, "act_batch"):
        actions = agent.act_batch(users)
    else:
        actions = np.asarray(agent.recommend(users, 1))[:, 0]
    return check_actions(actions, n_items, len(users), f"the actions {type(agent).__name__} chose")


def _learn(agent: Any, env: RecEnv, users: Batch, actions: np.ndarray, rewards: np.ndarray) -> None:
    """``update_batch`` when the agent has it, else ``update`` once per interaction."""
    if hasattr(agent, "update_batch"):
        agent.update_batch(users, actions, rewards)
        return
    for i in range(len(users)):
        agent.update(users.observation(i, env.user_schema), int(actions[i]), float(rewards[i]))


def run_online(
    agent: Any,
    env: gym.Env,
    steps: int,
    *,
    seed: int = 0,
    batch_size: int = 1,
    eval_every: int | None = None,
    eval_users: int = 100,
    eval_seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    progress: bool = True,
) -> OnlineResult:
    """Let ``agent`` learn online in ``env`` for ``steps`` interactions (one user each).

    Each round draws ``batch_size`` fresh users, the agent chooses one item for each with the
    same knowledge (``act_batch(users)`` if it has one, e.g. the agents of
    ``recsim_ft.agents.bandits``, else the top item of ``recommend``), the env draws the rewards
    (``sample_reward``), and the agent learns from them (``update_batch(users, actions,
    rewards)`` if it has one, else ``update(observation, action, reward)`` per interaction).
    ``batch_size=1`` is the fully sequential bandit; larger batches model delayed feedback and
    run faster. Rounds never straddle an evaluation step.

    Args:
        agent: any ``recsim_ft.agents.Agent`` (agents without online learning just act).
        env: the environment (or a Gymnasium wrapper of it), in its bandit mode: an env with
            sessions or slates is refused, as ``collect`` refuses sessions (its rewards would
            not follow the mode).
        steps: number of interactions.
        seed: seed of the users and of the reward noise (two independent streams), so the same
            seed and an agent built with the same seed give the same result.
        batch_size: users per round.
        eval_every: evaluate ranking metrics (``recsim_ft.evaluate.evaluate``) every this many
            steps; the last step is always evaluated. ``None``: the last step only.
        eval_users, eval_seed: the test users (``env.test_users(eval_users, eval_seed)``).
        ks: cut-offs of the ranking metrics.
        progress: show a tqdm progress bar with the cumulative regret.

    Returns:
        An ``OnlineResult`` (``history`` DataFrame, ``evaluations``, ``metrics``, ``cum_regret``).
    """
    rec_env: RecEnv = env.unwrapped
    for mode, active, what in (
        ("session=True", rec_env.session, "sessions, whose steps depend on the ones before"),
        (
            f"slate_size={rec_env.slate_size}",
            rec_env.slate_size is not None,
            "slates, whose reward is the chosen item's",
        ),
    ):
        if active:  # one item per fresh user, rewarded by sample_reward: neither mode's model
            raise ValueError(
                f"run_online draws a fresh user per step and recommends one item, but this env "
                f"runs {what} ({mode}); run it in the bandit env ({mode.split('=')[0]} at its "
                "default), or step the env yourself (see examples/session_rl.py)"
            )
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    eval_every = check_int("eval_every", eval_every, low=1, allow_none=True)
    eval_users = check_int("eval_users", eval_users, low=1)
    if not hasattr(agent, "score_items"):
        raise TypeError(
            "agent must implement the recsim_ft Agent interface (score_items), "
            f"got {type(agent).__name__}"
        )
    user_rng, reward_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    users_of = _UserStream(rec_env, user_rng)
    eval_steps = sorted({*range(eval_every or steps, steps + 1, eval_every or steps), steps})

    user_ids = np.empty(steps, np.int64)
    actions = np.empty(steps, np.int64)
    rewards = np.empty(steps, np.float64)
    expected = np.empty(steps, np.float64)
    regret = np.empty(steps, np.float64)
    evaluations: dict[int, dict[str, float]] = {}
    done, next_eval = 0, iter(eval_steps)
    eval_at = next(next_eval)
    with tqdm(total=steps, disable=not progress, desc="online", unit="step") as bar:
        while done < steps:
            n = min(batch_size, eval_at - done)
            users = users_of.take(n)
            chosen = _choose(agent, users, rec_env.n_items)
            reward = rec_env.sample_reward(users, chosen, reward_rng)
            truth = rec_env.expected_reward(users)
            window = slice(done, done + n)
            user_ids[window], actions[window], rewards[window] = users.ids, chosen, reward
            expected[window] = truth[np.arange(n), chosen]
            regret[window] = truth.max(axis=1) - expected[window]
            _learn(agent, rec_env, users, chosen, reward)
            done += n
            if done == eval_at:
                result = evaluate(agent, env, n_users=eval_users, seed=eval_seed, ks=ks)
                evaluations[done] = {
                    k: v for k, v in result.items() if k not in ("n_users", "n_excluded")
                }
                eval_at = next(next_eval, steps)
            bar.update(n)
            if progress and done * 100 // steps != (done - n) * 100 // steps:  # every 1%
                bar.set_postfix(cum_regret=f"{regret[:done].sum():.1f}")

    history = pd.DataFrame(
        {
            "step": np.arange(1, steps + 1),
            "user_id": user_ids,
            "action": actions,
            "reward": rewards,
            "expected_reward": expected,
            "cum_reward": np.cumsum(rewards),
            "regret": regret,
            "cum_regret": np.cumsum(regret),
        }
    )
    metrics = pd.DataFrame.from_dict(evaluations, orient="index").reindex(history["step"])
    history = pd.concat([history, metrics.reset_index(drop=True)], axis=1)
    return OnlineResult(history, tuple(metrics.columns), tuple(sorted(evaluations)), agent)
