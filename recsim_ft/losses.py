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
  which item a user chose, and a non-positive reward says no choice was made): the trainer draws
  its batches from the positive rows only, and one pass is a pass over them. Up to
  ``FULL_SOFTMAX_MAX_ITEMS`` items the catalogue is embedded at every step and the sum runs over
  it exactly. Above (or with ``negatives="batch"``) the negatives are the items of the batch's
  other rows, with a logQ correction: the log's rows are drawn uniformly, so a negative is item
  ``j`` with probability ``q_j`` (its share of the logged rows), and the sum over the ``n``
  negatives that are not the positive item estimates the catalogue's sum over the other items,
  ``sum_{j != a} exp(s_j) ~ (1 / n) sum_c exp(s_c) (1 - q_a) / q_c``. Hence the loss

      -s_a + log( exp(s_a) + sum_c exp(s_c - log(n q_c / (1 - q_a))) )

  (scores divided by ``T``): every negative is corrected by ``- log q`` (the sign that makes
  popular negatives count less; ``+ log q`` is the known trap), while the positive, which is in
  the denominator with probability 1 rather than sampled, is not (Khrylchenko et al. 2025,
  "Correcting the LogQ Correction"; the usual formula of Yi et al. 2019 corrects it too).
  Rows of the batch with the positive's own item are left out of its negatives. Memory: one
  item-tower pass over the batch's items, whatever the catalogue.

  **Mixed negatives** (``uniform_negatives=M``, Yang et al. 2020, "Mixed Negative Sampling"):
  ``M`` items drawn uniformly from the ``N`` of the catalogue join every row's candidates, so
  that rarely logged items are negatives too. A candidate ``c`` (from the batch or the uniform
  draw) is then expected ``e_c = n q_c / (1 - q_a) + M / N`` times among a row's candidates,
  and it is corrected by ``- log e_c`` (the balance heuristic of multiple importance sampling:
  the estimate of the other items' mass stays unbiased); ``M = 0`` is the correction above.
  Uniform draws of the positive's item are left out, as batch rows are. Memory: one more
  item-tower pass over ``M`` items.

  **The popularity prior** (``prior=True``; ``TrainConfig.popularity_prior``): every item's
  logit is ``s_j / T + log q_j``, in the catalogue's softmax and in the batch's alike (where
  each candidate's correction becomes ``- log e_c + log q_c``: for batch negatives alone, the
  same ``log((1 - q_a) / n)`` for every candidate, i.e. no logQ correction at all, and the
  positive ``s_a / T + log q_a``). The towers then learn ``log p(a | u) - log q_a`` up to a
  constant, what the log's popularity does not explain, and the model ranks by
  ``u . v_j + T log q_j`` (``TwoTower.item_prior``). Over a large catalogue whose positives are
  mostly popularity this is what lets the towers learn anything else (ranking_preset.md);
  ``"auto"`` (the ranking preset's) adds it only with in-batch negatives
  (``resolve_popularity_prior``).

A batch without a positive row contributes a loss of 0 to ``softmax`` (no gradient); a log
without any positive reward is refused by ``bce`` and ``softmax`` before training
(``check_loss_log``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recsim_ft.checks import check_choice

LOSSES = ("mse", "bce", "softmax")
#: Where the softmax takes its negatives: ``auto`` is the catalogue up to
#: ``FULL_SOFTMAX_MAX_ITEMS`` items, else the batch.
NEGATIVES = ("auto", "catalogue", "batch")
#: The largest catalogue the full softmax embeds at every step.
FULL_SOFTMAX_MAX_ITEMS = 4096


def softmax_negatives(negatives: str, n_items: int) -> str:
    """``"catalogue"`` or ``"batch"``: where a softmax over ``n_items`` takes its negatives."""
    negatives = check_choice("negatives", negatives, NEGATIVES)
    if negatives == "auto":
        return "catalogue" if n_items <= FULL_SOFTMAX_MAX_ITEMS else "batch"
    if negatives == "catalogue" and n_items > FULL_SOFTMAX_MAX_ITEMS:
        raise ValueError(
            f"negatives='catalogue' embeds the whole catalogue at every step, at most "
            f"{FULL_SOFTMAX_MAX_ITEMS:,} items; this one has {n_items:,}: use 'batch' or 'auto'"
        )
    return negatives


def check_popularity_prior(loss: str, popularity_prior: Any) -> bool | str:
    """``popularity_prior``: True, False or ``"auto"`` (on exactly where the softmax takes its
    negatives from the batch: see ``resolve_popularity_prior``); True is refused with any loss
    but the softmax's."""
    if popularity_prior == "auto" and isinstance(popularity_prior, str):
        return "auto"
    if not isinstance(popularity_prior, (bool, np.bool_)):
        raise ValueError(
            f"popularity_prior must be True, False or 'auto', got {popularity_prior!r} "
            f"({type(popularity_prior).__name__})"
        )
    if popularity_prior and loss != "softmax":
        raise ValueError(
            f"popularity_prior adds the log's popularity to the softmax's logits; loss "
            f"{loss!r} has none: use loss 'softmax' or no popularity prior"
        )
    return bool(popularity_prior)


def resolve_popularity_prior(popularity_prior: bool | str, in_batch: bool) -> bool:
    """Whether a run adds the prior: ``"auto"`` is on where the softmax's negatives come from
    the batch, the catalogues too large for the full softmax, where the logQ-corrected towers
    learn popularity and little more (docs/results/ranking_preset.md), and off over the full
    catalogue, whose softmax learns ``log p(a | u)`` without help.

    >>> resolve_popularity_prior("auto", in_batch=True), resolve_popularity_prior(False, True)
    (True, False)
    """
    return in_batch if popularity_prior == "auto" else bool(popularity_prior)


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
    log_prior: Tensor | None = None,
) -> Tensor:
    """``softmax``: the users' (B, d) cross-entropy of their logged items (B,) against the whole
    catalogue (n_items, d), over the rows with a positive reward (0 when there is none).
    ``log_prior`` (n_items,): the popularity prior's ``log q`` added to every item's logit."""
    logits = user_embeddings @ item_embeddings.T / temperature
    if log_prior is not None:
        logits = logits + log_prior
    per_row = F.cross_entropy(logits, logged_items, reduction="none")
    positive = (rewards > 0).to(per_row.dtype)
    return (per_row * positive).sum() / positive.sum().clamp(min=1.0)


def in_batch_softmax_loss(
    user_embeddings: Tensor,
    item_embeddings: Tensor,
    logged_items: Tensor,
    rewards: Tensor,
    log_q: Tensor,
    temperature: float = 1.0,
    uniform_items: Tensor | None = None,
    uniform_embeddings: Tensor | None = None,
    prior: bool = False,
    first_row: int = 0,
) -> Tensor:
    """``softmax`` with in-batch negatives and the logQ correction (module docstring): the
    users' (B, d) logged items (B,), whose embeddings are ``item_embeddings`` (B, d), against the
    other rows' items; ``log_q`` (n_items,) is the log of each item's share of the logged rows.
    ``uniform_items`` (M,) drawn uniformly from the ``len(log_q)`` items, with embeddings
    ``uniform_embeddings`` (M, d), are mixed into every row's negatives. ``prior``: every
    logit carries the popularity prior ``log q`` (module docstring). Over the rows with a
    positive reward (0 when there is none). ``first_row``: the users are the batch's rows from
    ``first_row`` on (``rewards`` theirs), as when data-parallel workers each take a share of the
    batch and gather its items (``recsim_ft.parallel``)."""
    scores = user_embeddings @ item_embeddings.T / temperature  # [b, c]: user b, row c's item
    positive_scores = scores.diagonal(first_row)
    own_items = logged_items[first_row : first_row + len(user_embeddings)]
    negative = logged_items[None, :] != own_items[:, None]  # other rows, other items
    n_negatives = negative.sum(dim=1, keepdim=True).clamp(min=1)
    candidates = logged_items
    if uniform_items is not None and len(uniform_items):
        candidates = torch.cat([logged_items, uniform_items])
        scores = torch.cat([scores, user_embeddings @ uniform_embeddings.T / temperature], dim=1)
        negative = candidates[None, :] != own_items[:, None]
    # log of candidate c's expected count among row b's batch negatives, n_b q_c / (1 - q_a)
    log_positive_q = log_q[own_items]
    correction = (
        n_negatives.log() + log_q[candidates][None, :] - torch.log1p(-log_positive_q.exp())[:, None]
    )
    if len(candidates) > len(logged_items):  # plus its expected uniform draws, M / N
        share = math.log(len(uniform_items) / len(log_q))
        correction = torch.logaddexp(correction, torch.full_like(correction, share))
    if prior:
        positive_scores = positive_scores + log_positive_q
        correction = correction - log_q[candidates][None, :]
    corrected = (scores - correction).masked_fill(~negative, float("-inf"))
    denominator = torch.logsumexp(torch.cat([positive_scores[:, None], corrected], dim=1), dim=1)
    per_row = denominator - positive_scores
    positive = (rewards > 0).to(per_row.dtype)
    return (per_row * positive).sum() / positive.sum().clamp(min=1.0)
