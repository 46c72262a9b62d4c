"""Reward models for the direct method and the doubly robust estimators, fitted on the log.

One regression per item (scikit-learn's ``Ridge`` by default, or any regressor given), from the
user's features (numeric, and categorical one-hot) to the logged reward of that item, with
cross-fitting: the events are split into ``n_folds`` folds and each fold's predictions come
from models fitted on the other folds, so an event's own reward never enters its prediction
(which keeps DR's correction term honest, as in Chernozhukov et al.'s double machine learning).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from recsim_ft.checks import check_int
from recsim_ft.data import InteractionLog, user_observations


def cross_fitted_rewards(
    log: InteractionLog, estimator: Any = None, n_folds: int = 2, seed: int = 0
) -> np.ndarray:
    """(n, n_items) predicted mean reward of every item for every logged user, out of fold.

    ``estimator``: a scikit-learn regressor (cloned per item and fold; default
    ``Ridge(alpha=1.0)``). ``n_folds=1`` fits on every event and predicts in sample. An item
    with fewer than two logged events in a fold's training part is predicted by the mean reward
    of that training part.

    >>> import gymnasium as gym
    >>> from recsim_ft.data import collect
    >>> log = collect(gym.make("Spotify-v0"), n=2_000, seed=0)
    >>> cross_fitted_rewards(log).shape
    (2000, 50)
    """
    if log.slate_columns is not None:
        raise ValueError(f"{log.env_id} log is a slate log: cross_fitted_rewards fits item rewards")
    n_folds = check_int("n_folds", n_folds, low=1, high=max(len(log), 1))
    estimator = Ridge(alpha=1.0) if estimator is None else estimator
    features = user_observations(log.users, log.user_schema, flatten=True)
    rewards = log.rewards.astype(np.float64)
    everything = np.arange(len(log))
    folds = (
        [(everything, everything)]
        if n_folds == 1
        else KFold(n_folds, shuffle=True, random_state=seed).split(features)
    )
    predictions = np.empty((len(log), log.n_items))
    for train, held_out in folds:
        fallback = rewards[train].mean()
        for item in range(log.n_items):
            rows = train[log.actions[train] == item]
            if len(rows) < 2:
                predictions[held_out, item] = fallback
                continue
            model = clone(estimator).fit(features[rows], rewards[rows])
            predictions[held_out, item] = model.predict(features[held_out])
    return predictions
