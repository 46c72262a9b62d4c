"""The paper's training and evaluation protocol per environment, keyed by env id.

An env says what its users and items are; how the paper trains on it (learning rate, size of the
logged data) and what it reports beyond the common ranking metrics (H&M: Kaggle's MAP@12) is
decided here, by the experiments. The trainer and the evaluator read this table for their
defaults, so ``train(model, log, env)`` and ``evaluate(agent, env)`` follow the paper without
asking the env, and ``recsim-ft reproduce`` reads the same table.

>>> import gymnasium as gym
>>> protocol_for(gym.make("VaccineMessaging-v0", clusters=3, messages=6, n_users=300)).lr
1e-05
>>> PROTOCOLS["HMFashion-v0"].metrics[-1]
'MAP@12'
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

from recsim_ft.metrics import METRICS

#: Evaluation user sets: "test" for reported results, "validation" for choosing hyperparameters.
SPLITS = ("test", "validation")


@dataclass(frozen=True)
class Protocol:
    """How to train on one env and what to report: ``lr`` (Adam), ``n_samples`` (logged events,
    one pass of batch 32 = ``n_samples // 32`` steps) and ``extra_metrics`` (reported beside
    every ranking metric of ``recsim_ft.metrics.METRICS``)."""

    lr: float = 1e-4
    n_samples: int = 160_000
    extra_metrics: tuple[str, ...] = ()

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names for ``recsim_ft.metrics.ranking_metrics``."""
        return (*METRICS, *self.extra_metrics)


#: The protocol of an env id not listed in ``PROTOCOLS``.
DEFAULT_PROTOCOL = Protocol()

#: The paper's protocol for each of its environments. Add an entry for an env of your own to give
#: it other defaults (``PROTOCOLS["MyEnv-v0"] = Protocol(lr=1e-3)``).
PROTOCOLS: dict[str, Protocol] = {
    "Spotify-v0": Protocol(lr=1e-4),
    "HMFashion-v0": Protocol(lr=1e-4, extra_metrics=("MAP@12",)),
    "VaccineMessaging-v0": Protocol(lr=1e-5),
}


def registered_id(env: gym.Env) -> str | None:
    """The Gymnasium id ``env`` was made with; for an env built from its class, the id whose
    entry point is that class; None for an unregistered env."""
    spec = env.spec or env.unwrapped.spec
    if spec is not None:
        return spec.id
    cls = type(env.unwrapped)
    entry_point = f"{cls.__module__}:{cls.__qualname__}"
    return next(
        (env_id for env_id, spec in gym.registry.items() if spec.entry_point == entry_point), None
    )


def protocol_of(env_id: str) -> Protocol:
    """The protocol of the env ``gymnasium.make(env_id)`` makes, without making it: the id it is
    registered under is ``env_id`` without a ``module:`` prefix.

    >>> protocol_of("VaccineMessaging-v0").lr, protocol_of("recsim_ft:VaccineMessaging-v0").lr
    (1e-05, 1e-05)
    """
    return PROTOCOLS.get(env_id.rpartition(":")[2], DEFAULT_PROTOCOL)


def protocol_for(env: gym.Env) -> Protocol:
    """The protocol of ``env`` (or of a Gymnasium wrapper of it): ``PROTOCOLS`` by env id, else
    ``DEFAULT_PROTOCOL``."""
    return PROTOCOLS.get(registered_id(env), DEFAULT_PROTOCOL)
