"""Off-policy evaluation: a target policy's value estimated from a log of another policy.

A log of a known-propensity behaviour policy (``collect(env)`` logs the env's own, uniform for
Spotify and vaccine) says how well *any* target policy would do, without running it: each event
is reweighted by ``w = pi(action | user) / propensity``.

- IPS (inverse propensity scoring): ``mean(w * reward)``; unbiased, high variance.
- SNIPS (self-normalised IPS): ``sum(w * reward) / sum(w)``; slightly biased, lower variance, and
  it moves with the rewards: adding ``c`` to every reward adds exactly ``c`` to the estimate.
- With a reward model (``cross_fitted_rewards(log)``, or any agent whose scores predict
  rewards): the direct method ``dm``, doubly robust ``dr``, self-normalised ``sndr`` and
  ``switch_dr`` (``recsim_ft.ope.bandit`` has the formulas).
- For slate logs (``collect`` in an env with ``slate_size``): ``slate_ips`` (whole slates),
  ``iips`` (independent items), ``rips`` (reward interaction, the cascade of each slate's first
  items) and ``pseudo_inverse`` (``recsim_ft.ope.slate``).

Every estimator takes the log (or the same data as arrays: ``BanditData``, ``SlateData``) and
the target (an agent, or its action probabilities), and returns an ``Estimate``: value,
standard error, a normal or bootstrap (``ci="bootstrap"``) confidence interval and the effective
sample size. ``docs/ope_validation.md`` checks them all against exact values on logs of every
env (``scripts/ope_validation.py``).

The target is an agent (its greedy top-1 item, ties to the lower index, as ``recommend`` does) or
an (n_events, n_items) matrix of action probabilities for the logged users. Since the env knows
the truth, :func:`policy_value` gives an agent's actual value on fresh users and
:func:`exact_value` its exact value on the logged users, to check against.

>>> import gymnasium as gym
>>> from recsim_ft.agents import OracleAgent
>>> from recsim_ft.data import collect
>>> env = gym.make("Spotify-v0")
>>> log = collect(env, n=20_000, seed=0)
>>> estimate, truth = snips(log, OracleAgent(env)), policy_value(OracleAgent(env), env)
>>> round(truth.value, 2), abs(estimate.value - truth.value) < 4 * estimate.std_error
(0.96, True)
>>> robust = dr(log, OracleAgent(env), cross_fitted_rewards(log), ci="bootstrap")
>>> robust.ci_low < exact_value(env, log, OracleAgent(env)) < robust.ci_high
True
"""

from recsim_ft.ope.bandit import (
    CHUNK,
    BanditData,
    dm,
    dr,
    exact_value,
    greedy_actions,
    importance_weights,
    ips,
    policy_value,
    reward_predictions,
    sndr,
    snips,
    switch_dr,
    target_distribution,
    target_probabilities,
)
from recsim_ft.ope.estimate import CI_METHODS, Estimate, kish
from recsim_ft.ope.obp import from_obp_action_dist, obp_slate_pscores, to_obp_action_dist
from recsim_ft.ope.reward_model import cross_fitted_rewards
from recsim_ft.ope.slate import (
    SlateData,
    cascade_propensities,
    exact_slate_value,
    iips,
    pseudo_inverse,
    pseudo_inverse_weights,
    rips,
    slate_ips,
)

__all__ = [
    "CHUNK",
    "CI_METHODS",
    "BanditData",
    "Estimate",
    "SlateData",
    "cascade_propensities",
    "cross_fitted_rewards",
    "dm",
    "dr",
    "exact_slate_value",
    "exact_value",
    "from_obp_action_dist",
    "greedy_actions",
    "iips",
    "importance_weights",
    "ips",
    "kish",
    "obp_slate_pscores",
    "policy_value",
    "pseudo_inverse",
    "pseudo_inverse_weights",
    "reward_predictions",
    "rips",
    "slate_ips",
    "sndr",
    "snips",
    "switch_dr",
    "target_distribution",
    "target_probabilities",
    "to_obp_action_dist",
]
