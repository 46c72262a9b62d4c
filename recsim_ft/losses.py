"""The training losses of the two-tower models, on one batch of logged events.

Notation, per batch of ``B`` logged rows: user embedding ``u_b``, logged item ``a_b`` with
embedding ``v_{a_b}``, reward ``r_b``, score ``s_b = u_b . v_{a_b}``.

- ``mse`` (the paper's): ``mean_b (s_b - r_b)^2``, a regression of the score on the reward.
- ``bce``: ``mean_b BCE(sigmoid(s_b), y_b)`` with ``y_b = 1`` where ``r_b > 0`` and 0
  elsewhere: a like, a purchase, a vaccination is a 1; Spotify's dislike (-1) and indifference
  (0) are both 0.
- ``softmax``: on the rows with a positive reward only, the cross-entropy of the logged item
  against every item of the catalogue, ``-log( exp(s_b / T) / sum_j exp(u_b . v_j / T) )``, with
  temperature ``T``; rows with zero or negative rewards do not enter (a softmax over items says
  which item a user chose, and a non-positive reward says no choice was made). The catalogue is
  embedded by the item tower at every step, so its memory is that of one item-tower pass over
  ``n_items`` rows (``FULL_SOFTMAX_MAX_ITEMS`` at most).

A batch without a positive row contributes a loss of 0 to ``softmax`` (no gradient); a log
without any positive reward is refused by ``bce`` and ``softmax`` before training
(``check_loss_log``).
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from recsim_ft.checks import check_choice, check_float

LOSSES = ("mse", "bce", "softmax")
#: The largest catalogue the full softmax embeds at every step.
FULL_SOFTMAX_MAX_ITEMS = 4096


def check_loss(loss: str, temperature: float, n_items: int) -> tuple[str, float]:
    """``loss`` and ``temperature``, checked for a catalogue of ``n_items``."""
    loss = check_choice("loss", loss, LOSSES)
    temperature = check_float("temperature", temperature, low=0, low_open=True)
    if loss == "softmax" and n_items > FULL_SOFTMAX_MAX_ITEMS:
        raise ValueError(
            f"loss 'softmax' embeds the whole catalogue at every step, at most "
            f"{FULL_SOFTMAX_MAX_ITEMS:,} items; this one has {n_items:,}"
        )
    return loss, temperature


def check_loss_log(loss: str, rewards: np.ndarray) -> None:
    """Refuse a log a loss cannot learn from: ``bce`` and ``softmax`` need positive rewards."""
    if loss in ("bce", "softmax") and not (np.asarray(rewards) > 0).any():
        raise ValueError(
            f"loss {loss!r} learns from positive rewards (what was liked, bought or taken), and "
            "the log has none; train with loss 'mse' or collect a log with positive rewards"
        )


def pair_loss(loss: str, scores: Tensor, rewards: Tensor) -> Tensor:
    """``mse`` or ``bce`` of the logged pairs' ``scores`` (B,) against their ``rewards`` (B,)."""
    if loss == "mse":
        return F.mse_loss(scores, rewards)
    return F.binary_cross_entropy_with_logits(scores, (rewards > 0).to(rewards.dtype))


def softmax_loss(
    user_embeddings: Tensor,
    item_embeddings: Tensor,
    logged_items: Tensor,
    rewards: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """``softmax``: the users' (B, d) cross-entropy of their logged items (B,) against the whole
    catalogue (n_items, d), over the rows with a positive reward (0 when there is none)."""
    logits = user_embeddings @ item_embeddings.T / temperature
    per_row = F.cross_entropy(logits, logged_items, reduction="none")
    positive = (rewards > 0).to(per_row.dtype)
    return (per_row * positive).sum() / positive.sum().clamp(min=1.0)
