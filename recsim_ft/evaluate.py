"""Evaluate any agent inside its environment: rank every item for the env's held-out test users.

The env knows the truth (``relevant(users)``), so evaluation needs no held-out log: the agent
scores all items for ``env.test_users(n_users, seed)`` and the scores are compared with the
relevant items by ``recsim_ft.metrics.ranking_metrics``.

>>> import gymnasium as gym
>>> from recsim_ft.agents import OracleAgent
>>> env = gym.make("Spotify-v0")
>>> metrics = evaluate(OracleAgent(env), env, n_users=100, seed=0, ks=(1, 5))
>>> metrics["HR@1"], metrics["n_users"] + metrics["n_excluded"]
(1.0, 100)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from recsim_ft.checks import check_int
from recsim_ft.data.log import env_identity
from recsim_ft.metrics import check_scores, ranking_metrics, top_k
from recsim_ft.protocol import protocol_for
from recsim_ft.schema import Batch

#: At most this many (user, item) cells of scores and relevance are held at once: beyond it
#: ``evaluate`` takes the users in chunks (with 100 users, catalogues of up to 335,544 items are
#: evaluated in one piece, as before; the whole H&M catalogue with 1,000 users in four).
EVAL_CHUNK_CELLS = 1 << 25


def evaluate(
    agent: Any,
    env: gym.Env,
    n_users: int = 100,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    metrics: Sequence[str] | None = None,
    split: str = "test",
    users: Batch | None = None,
) -> dict[str, float | int]:
    """Ranking metrics of ``agent`` on ``env.test_users(n_users, seed)``
    (``split="validation"``: on ``env.validation_users``, for choosing hyperparameters; ``users``:
    on these instead, e.g. ``env.selection_users``).

    Args:
        agent: anything with ``score_items(users) -> (n_users, n_items)`` (see
            ``recsim_ft.agents``).
        env: the environment (or a Gymnasium wrapper of it) the agent recommends in.
        ks: cut-offs of every metric.
        metrics: metric names for ``ranking_metrics``; ``None`` means those of the env's protocol
            (``recsim_ft.protocol``): every family of ``recsim_ft.metrics.METRICS``, plus H&M's
            Kaggle MAP@12.

    Returns:
        ``{"P@1": ..., "n_users": ..., "n_excluded": ...}`` as ``ranking_metrics`` returns it
        (over a catalogue too large for every user at once, ``EVAL_CHUNK_CELLS``, the mean over
        chunks of users weighted by the users each scored: the same means).
    """
    rec_env = env.unwrapped
    n_users = check_int("n_users", n_users, low=1)
    check_agent_env(agent, env)
    if metrics is None:
        metrics = protocol_for(env).metrics
    if users is None:
        users = rec_env.eval_users(split, n_users, seed)
    rows = max(1, EVAL_CHUNK_CELLS // rec_env.n_items)
    if len(users) <= rows:
        return ranking_metrics(
            agent_scores(agent, users, rec_env.n_items),
            rec_env.relevant(users),
            ks=ks,
            metrics=metrics,
        )
    # a large catalogue: score and rank a chunk of users at a time, then average over all of them
    totals: dict[str, float] = {}
    n_scored = n_excluded = 0
    for start in range(0, len(users), rows):
        chunk = users[start : start + rows]
        relevant = rec_env.relevant(chunk)
        if not np.asarray(relevant).any():  # no scored user here: only excluded ones
            n_excluded += len(chunk)
            continue
        part = ranking_metrics(
            agent_scores(agent, chunk, rec_env.n_items), relevant, ks=ks, metrics=metrics
        )
        n_scored, n_excluded = n_scored + part["n_users"], n_excluded + part["n_excluded"]
        for name, value in part.items():
            if name not in ("n_users", "n_excluded"):
                totals[name] = totals.get(name, 0.0) + value * part["n_users"]
    if not n_scored:
        raise ValueError(
            f"none of the {len(users)} users has a relevant item; the metrics are undefined"
        )
    return {
        **{name: total / n_scored for name, total in totals.items()},
        "n_users": n_scored,
        "n_excluded": n_excluded,
    }


def recommended_minus_liked(
    agent: Any, env: gym.Env, n_users: int = 100, seed: int = 0, split: str = "test"
) -> np.ndarray:
    """(n_items,) int64: per item, how often it is recommended minus how often it is liked.

    The data of the paper's Fig. 5: each test user gets as many recommendations (the top of the
    agent's ranking) as items they like, so a perfect ranker gives all zeros, and a positive
    count marks an item the agent pushes beyond its appeal. The counts always sum to zero.
    """
    rec_env = env.unwrapped
    n_users = check_int("n_users", n_users, low=1)
    check_agent_env(agent, env)
    users = rec_env.eval_users(split, n_users, seed)
    liked = rec_env.relevant(users)
    ranking = top_k(agent_scores(agent, users, rec_env.n_items), rec_env.n_items)
    recommended = np.zeros_like(liked, dtype=bool)
    in_top = np.arange(rec_env.n_items)[None, :] < liked.sum(axis=1, keepdims=True)
    np.put_along_axis(recommended, ranking, in_top, axis=1)
    return recommended.sum(axis=0).astype(np.int64) - liked.sum(axis=0).astype(np.int64)


def check_agent_env(agent: Any, env: gym.Env) -> None:
    """Refuse an agent built for an env whose users or items differ from ``env``'s (e.g. a
    Spotify agent in the vaccine env), naming both envs; agents without an ``env`` pass."""
    own = getattr(getattr(agent, "env", None), "unwrapped", None)
    base = env.unwrapped
    if own is None or own is base or not hasattr(own, "item_schema"):
        return
    if (own.user_schema, own.item_schema) != (base.user_schema, base.item_schema):
        raise ValueError(
            f"{type(agent).__name__} was built for {env_identity(own)[0]} ({own.n_items} items) "
            f"but is evaluated in {env_identity(env)[0]} ({base.n_items} items), whose users or "
            "items differ; build and fit the agent with the env it is evaluated in"
        )


def agent_scores(agent: Any, users: Batch, n_items: int) -> np.ndarray:
    """``agent.score_items(users)``, checked to be (n_users, n_items) real scores without NaN."""
    return check_scores(
        agent.score_items(users), (len(users), n_items), f"{type(agent).__name__}.score_items"
    )
