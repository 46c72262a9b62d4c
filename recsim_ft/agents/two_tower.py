"""The paper's recommender as an agent: a two-tower model fitted offline on an interaction log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from recsim_ft.agents.base import Agent
from recsim_ft.data import InteractionLog
from recsim_ft.models import TwoTower
from recsim_ft.schema import Batch
from recsim_ft.train import Progress, TrainConfig, TrainResult, train


class TwoTowerAgent(Agent):
    """FT-Mamba / FT-Transformer / MLP two-tower recommender (``recsim_ft.models.TwoTower``).

    ``fit(log)`` builds a fresh model for the log's schemas, with initial weights seeded from
    ``train_config.seed`` (unless ``seed`` is given among ``model_overrides``), and trains it with
    ``recsim_ft.train.train``: the same seed gives the same weights. ``score_items`` ranks with the
    model's cached item embeddings, so scoring many users embeds the catalogue once.

    Args:
        env: the environment whose items are ranked (its test users evaluate the training).
        embedder: ``"mamba"``, ``"transformer"`` or ``"mlp"``.
        preset: ``"paper"``, ``"ranking"``, ``"quick"`` ... (or a ``ModelConfig``).
        train_config: a ``TrainConfig``; ``None`` is the preset's training
            (``TrainConfig.from_preset``: the paper's protocol for ``env`` unless ``ranking``).
        **model_overrides: any ``ModelConfig`` field (``d_token=192``, ...).

    Attributes (after ``fit`` or ``load``): ``model_``; after ``fit`` also ``result_`` (the
    ``TrainResult`` with the training curve).
    """

    def __init__(
        self,
        env: gym.Env,
        embedder: str = "mamba",
        preset: Any = "paper",
        train_config: TrainConfig | None = None,
        **model_overrides: Any,
    ) -> None:
        super().__init__(env)
        self.embedder, self.preset = embedder, preset
        self.train_config = train_config
        self.model_overrides = model_overrides

    def fit(
        self,
        log: InteractionLog,
        out_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: Progress = None,
        allow_env_mismatch: bool = False,
    ) -> TwoTowerAgent:
        """Train a new model on ``log`` (checkpoints in ``out_dir``; ``resume`` continues them).

        ``log`` must come from this agent's env (same id and kwargs), unless
        ``allow_env_mismatch`` (then the features must still match), as in ``train``.
        ``progress=None`` shows a progress bar in a terminal or a notebook, ``False`` never
        (see ``recsim_ft.train.Progress``).
        """
        log.check_env(self.env, allow_env_mismatch)
        config = self.train_config or TrainConfig.from_preset(
            self.preset if isinstance(self.preset, str) else "paper"
        )
        overrides = {"seed": config.seed, **self.model_overrides}
        model = TwoTower.from_schemas(
            log.user_schema, log.item_schema, self.embedder, self.preset, **overrides
        )
        self.result_: TrainResult = train(
            model,
            log,
            self.env,
            config,
            out_dir=out_dir,
            resume=resume,
            progress=progress,
            allow_env_mismatch=allow_env_mismatch,
        )
        self.model_ = self.result_.model
        return self

    def score_items(self, users: Batch) -> np.ndarray:
        model = self._fitted_model()
        model.eval()
        with torch.no_grad():
            try:
                scores = model.score_all(users)
            except RuntimeError:  # no item cache yet, or the weights changed since it was built
                model.cache_items(self.rec_env.item_table())
                scores = model.score_all(users)
        return scores.float().cpu().numpy()

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the fitted model's model file (weights, config, schemas); refuses to overwrite
        unless told to."""
        return self._fitted_model().save(path, overwrite=overwrite)

    @classmethod
    def load(
        cls, path: str | os.PathLike, env: gym.Env, map_location: str = "cpu"
    ) -> TwoTowerAgent:
        """An agent around a saved model: ``path`` is a model file or a run directory holding one
        (``model.safetensors``); a model built for another env's schemas is refused."""
        model = TwoTower.load(path, map_location=map_location)
        try:
            model.check_compatible(env)
        except ValueError as err:
            raise ValueError(f"{path} was saved for another environment: {err}") from err
        agent = cls(env, embedder=model.config.embedder, preset=model.config)
        agent.model_ = model
        return agent

    def _fitted_model(self) -> TwoTower:
        if not hasattr(self, "model_"):
            raise RuntimeError(
                f"{type(self).__name__} is not fitted: call fit(log) or load(path, env) first"
            )
        return self.model_
