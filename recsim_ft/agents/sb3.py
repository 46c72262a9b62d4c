"""Stable-Baselines3 plug-in: our feature tokenizer + embedder inside SB3 policies, and trained SB3
models scored like any other recsim-ft agent.

``FTFeaturesExtractor`` turns a recsim-ft observation (the env's ``Dict`` space) into one vector
with the paper's FT-Mamba (or FT-Transformer, or MLP) user tower body; pass it to
``MultiInputPolicy`` through ``policy_kwargs``. ``SB3Agent`` wraps a trained PPO / A2C / DQN so
that ``recsim_ft.evaluate.evaluate`` ranks items by the policy's action probabilities (policy
gradient methods) or Q-values (DQN). Stable-Baselines3 is the ``rl`` extra; this module is the
only place that needs it.

>>> import gymnasium as gym
>>> from stable_baselines3 import PPO
>>> from recsim_ft.evaluate import evaluate
>>> env = gym.make("Spotify-v0")
>>> policy_kwargs = dict(features_extractor_class=FTFeaturesExtractor,
...                      features_extractor_kwargs=dict(embedder="mamba"))
>>> ppo = PPO("MultiInputPolicy", env, n_steps=16, batch_size=16, n_epochs=1, gamma=0.0, seed=0,
...           policy_kwargs=policy_kwargs)
>>> metrics = evaluate(SB3Agent(env, ppo.learn(total_timesteps=16)), env, n_users=50)
>>> sorted(k for k in metrics if k.startswith("HR@"))
['HR@1', 'HR@10', 'HR@5']
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from recsim_ft.agents.base import Agent
from recsim_ft.data import user_observations
from recsim_ft.models import FeatureTensors, FeatureTokenizer, make_config
from recsim_ft.models.two_tower import build_embedder
from recsim_ft.schema import Batch, Feature, Schema

try:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "recsim_ft.agents.sb3 needs Stable-Baselines3: pip install 'recsim-ft[rl]'"
    ) from err


def schema_of_space(observation_space: gym.Space) -> Schema:
    """The feature schema behind a recsim-ft observation space (``Dict`` of a ``"numeric"`` Box
    and/or a ``"categorical"`` MultiDiscrete), with generic feature names."""
    if not isinstance(observation_space, spaces.Dict) or not set(observation_space.spaces) <= {
        "numeric",
        "categorical",
    }:
        raise ValueError(
            f"expected a recsim-ft Dict observation space with 'numeric' and/or 'categorical' "
            f"entries (use MultiInputPolicy on the unwrapped observation, not FlattenObservation); "
            f"got {observation_space}"
        )
    features: list[Feature] = []
    numeric = observation_space.spaces.get("numeric")
    if numeric is not None:
        features += [
            Feature(f"numeric_{j}", "numeric", low=float(lo), high=float(hi))
            for j, (lo, hi) in enumerate(zip(numeric.low, numeric.high, strict=True))
        ]
    categorical = observation_space.spaces.get("categorical")
    if categorical is not None:
        features += [
            Feature(f"categorical_{j}", "categorical", tuple(str(c) for c in range(int(card))))
            for j, card in enumerate(categorical.nvec)
        ]
    return Schema(tuple(features))


class FTFeaturesExtractor(BaseFeaturesExtractor):
    """Feature tokenizer -> embedder (FT-Mamba, FT-Transformer or MLP), as an SB3 features
    extractor::

        {"numeric": x, "categorical": one-hot} -> codes -> FeatureTokenizer -> embedder
                                                                            -> (n, features_dim)

    SB3 one-hot encodes ``MultiDiscrete`` observations before the extractor sees them; the
    extractor turns them back into category codes for the tokenizer's lookup tables. The initial
    weights come from torch's global generator, which SB3 seeds from the algorithm's ``seed``
    (so ``ModelConfig.seed`` plays no part here).

    Args:
        observation_space: the env's ``Dict`` observation space (SB3 passes it).
        embedder: ``"mamba"``, ``"transformer"`` or ``"mlp"``.
        preset: a ``ModelConfig`` preset name (default ``"quick"``: an RL policy learns from few
            samples) or a ``ModelConfig``.
        **overrides: any ``ModelConfig`` field (``d_token=64``, ...).

    Shape:
        input: ``{"numeric": (n, n_numeric) float,
        "categorical": (n, sum(cardinalities)) one-hot}``;
        output: (n, features_dim), ``features_dim`` = the embedder's output width.

    Examples:
        >>> env = gym.make("VaccineMessaging-v0", clusters=3, messages=6, n_users=300)
        >>> extractor = FTFeaturesExtractor(env.observation_space, embedder="transformer")
        >>> from stable_baselines3.common.preprocessing import preprocess_obs
        >>> sample = env.observation_space.sample()
        >>> observation = {k: torch.as_tensor(v[None]) for k, v in sample.items()}
        >>> features = extractor(preprocess_obs(observation, env.observation_space))
        >>> features.shape == (1, extractor.features_dim)
        True
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        embedder: str = "mamba",
        preset: Any = "quick",
        **overrides: Any,
    ) -> None:
        schema = schema_of_space(observation_space)
        config = make_config(preset, embedder, **overrides)
        tokenizer = FeatureTokenizer(schema, d_token=config.d_token)
        body = build_embedder(config, tokenizer.n_tokens)
        super().__init__(observation_space, features_dim=body.d_out)
        self.schema, self.config = schema, config
        self.tokenizer, self.embedder = tokenizer, body

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        numeric = observations.get("numeric")
        one_hot = observations.get("categorical")
        n = (numeric if numeric is not None else one_hot).shape[0]
        if numeric is None:
            numeric = torch.zeros(n, 0, device=one_hot.device)
        if one_hot is None:
            codes = torch.zeros(n, 0, dtype=torch.int64, device=numeric.device)
        else:
            blocks = torch.split(one_hot, list(self.schema.cardinalities), dim=1)
            codes = torch.stack([block.argmax(dim=1) for block in blocks], dim=1)
        return self.embedder(self.tokenizer(FeatureTensors(numeric.float(), codes)))


class SB3Agent(Agent):
    """A trained Stable-Baselines3 model as a recsim-ft agent.

    ``score_items(users)`` is the policy's probability of each action (PPO, A2C: any policy with an
    action distribution) or its Q-value of each action (DQN), so ``recommend`` and ``act`` follow
    the greedy action and ``evaluate`` ranks by those scores. The model must have been trained on
    this env's observation space, as a ``Dict`` (``MultiInputPolicy``) or flattened by Gymnasium's
    ``FlattenObservation`` (``MlpPolicy``), and on ``Discrete(n_items)`` actions.

    Args:
        env: the recsim-ft environment whose items are ranked.
        model: a trained SB3 algorithm (``PPO``, ``A2C``, ``DQN``, ...).
    """

    def __init__(self, env: gym.Env, model: BaseAlgorithm) -> None:
        super().__init__(env)
        schema = self.rec_env.user_schema
        if model.action_space != spaces.Discrete(self.n_items):
            raise ValueError(
                f"the model acts in {model.action_space}, "
                f"the env has Discrete({self.n_items}) items"
            )
        if model.observation_space == schema.space():
            self.flatten = False
        elif model.observation_space == spaces.flatten_space(schema.space()):
            self.flatten = True
        else:
            raise ValueError(
                f"the model observes {model.observation_space}, which is neither the env's "
                f"{schema.space()} nor its flattened form"
            )
        self.model = model

    def score_items(self, users: Batch) -> np.ndarray:
        policy = self.model.policy
        policy.set_training_mode(False)
        observation, _ = policy.obs_to_tensor(
            user_observations(users, self.rec_env.user_schema, self.flatten)
        )
        with torch.no_grad():
            if hasattr(policy, "get_distribution"):
                scores = policy.get_distribution(observation).distribution.probs
            elif hasattr(policy, "q_net"):
                scores = policy.q_net(observation)
            else:
                raise TypeError(
                    f"{type(policy).__name__} has neither an action distribution "
                    "nor Q-values to rank by"
                )
        return scores.cpu().numpy().astype(np.float64)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, model={type(self.model).__name__})"
