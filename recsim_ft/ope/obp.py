"""Open Bandit Pipeline (OBP) interop: a target policy in the forms OBP's estimators take.

``recsim_ft.data.to_obp`` writes a log in OBP's ``bandit_feedback`` layouts; this module turns a
target into what OBP's ``estimate_policy_values`` takes beside it:

- single recommendations: recsim-ft's (n, n_items) target probabilities are OBP's
  ``action_dist`` of shape (n, n_items, 1) (one position): ``to_obp_action_dist`` and
  ``from_obp_action_dist`` convert between the two;
- slates (OBP's slate layout, one row per (slate, position)): ``obp_slate_pscores`` gives the
  target's ``evaluation_policy_pscore`` (whole slate), ``evaluation_policy_pscore_item_position``
  and ``evaluation_policy_pscore_cascade`` (the slate's first items), one value per row.

Which recsim-ft estimator equals which OBP one is in ``docs/obp.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsim_ft.data import InteractionLog
from recsim_ft.ope.bandit import BanditData, bandit_data, target_distribution
from recsim_ft.ope.slate import (
    SlateData,
    logged_marginals,
    slate_data,
    target_slate_probabilities,
)


def to_obp_action_dist(target: Any, log: InteractionLog | BanditData | None = None) -> np.ndarray:
    """OBP's ``action_dist`` (n, n_items, 1) of a target: (n, n_items) probabilities, or an
    agent (then ``log`` gives the users; its greedy item gets probability 1)."""
    if log is not None:
        probabilities = target_distribution(bandit_data(log), target)
    else:
        probabilities = np.asarray(target, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(
            f"target probabilities must be (n, n_items), got shape {probabilities.shape}; "
            "an agent needs the log (to_obp_action_dist(agent, log))"
        )
    return probabilities[:, :, None]


def from_obp_action_dist(action_dist: Any) -> np.ndarray:
    """recsim-ft's (n, n_items) target probabilities from OBP's ``action_dist`` (n, n_items, 1).
    An ``action_dist`` over several positions is refused: its positions are the slots of a slate,
    which recsim-ft estimates with the slate estimators (``obp_slate_pscores``)."""
    action_dist = np.asarray(action_dist, dtype=np.float64)
    if action_dist.ndim != 3 or action_dist.shape[2] != 1:
        raise ValueError(
            f"expected OBP's action_dist of one position, shape (n, n_items, 1), got "
            f"{action_dist.shape}; for slates use recsim_ft.ope.obp_slate_pscores"
        )
    return action_dist[:, :, 0]


def obp_slate_pscores(log: InteractionLog | SlateData, target: Any) -> dict[str, np.ndarray]:
    """The deterministic target's probabilities in OBP's slate layout (one value per row, slate
    by slate): ``evaluation_policy_pscore`` (of the whole logged slate),
    ``evaluation_policy_pscore_item_position`` (of the logged item at its position) and
    ``evaluation_policy_pscore_cascade`` (of the slate's items up to that position), the keyword
    arguments of OBP's ``SlateOffPolicyEvaluation.estimate_policy_values``. ``target``: an agent
    or (n, k) slates."""
    data = slate_data(log)
    on_slate, on_prefix = target_slate_probabilities(data, target)
    on_position = np.diagonal(logged_marginals(data, target), axis1=1, axis2=2)
    return {
        "evaluation_policy_pscore": np.repeat(on_slate, data.slate_size),
        "evaluation_policy_pscore_item_position": on_position.ravel(),
        "evaluation_policy_pscore_cascade": on_prefix.ravel(),
    }
