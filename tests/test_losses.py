"""The training losses: each against a hand computation, in the trainer, and the logs they
refuse."""

from __future__ import annotations

import dataclasses
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from toy_env import ToyEnv  # noqa: F401  (registers ToyRec-v0)

from conftest import interrupted_at_step
from recsim_ft.agents import TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.experiments import RunSpec
from recsim_ft.losses import (
    FULL_SOFTMAX_MAX_ITEMS,
    in_batch_softmax_loss,
    pair_loss,
    softmax_loss,
)
from recsim_ft.models import FeatureTensors, TwoTower
from recsim_ft.train import CHECKPOINT_NAME, TrainConfig, TrainStep, make_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pair_losses_by_hand():
    scores = torch.tensor([0.5, -1.0, 2.0])
    rewards = torch.tensor([1.0, 0.0, -1.0])  # Spotify's like, indifference, dislike
    mse = ((0.5 - 1) ** 2 + (-1 - 0) ** 2 + (2 + 1) ** 2) / 3
    assert pair_loss("mse", scores, rewards).item() == pytest.approx(mse)

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    # only the like is a 1: the dislike is a 0 like the indifference
    bce = -(math.log(sigmoid(0.5)) + math.log(1 - sigmoid(-1.0)) + math.log(1 - sigmoid(2.0))) / 3
    assert pair_loss("bce", scores, rewards).item() == pytest.approx(bce)


def test_softmax_by_hand_on_the_positive_rows_only():
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    logged = torch.tensor([0, 1, 2])
    rewards = torch.tensor([1.0, 0.0, 2.0])  # the second row chose nothing: it does not enter
    temperature = 0.5

    def row_loss(u, a):
        logits = [float(u @ v) / temperature for v in items]
        return -(logits[a] - math.log(sum(math.exp(x) for x in logits)))

    expected = (row_loss(users[0], 0) + row_loss(users[2], 2)) / 2
    value = softmax_loss(users, items, logged, rewards, temperature)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    none = softmax_loss(users, items, logged, torch.zeros(3), temperature)
    assert none.item() == 0.0  # a batch without a positive row teaches nothing


def test_in_batch_softmax_by_hand_with_the_logq_sign():
    """Negatives corrected by - log(n q_c / (1 - q_a)), the positive not at all, rows of the
    positive's own item left out; a wrong sign (+ log q) gives another number."""
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])
    items = torch.tensor([[1.0, 0.5], [0.2, 1.0], [1.0, 0.5], [-1.0, 0.3]])  # rows 0 and 2: item 0
    logged = torch.tensor([0, 1, 0, 2])
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0])  # row 2 is a negative only
    q = torch.tensor([0.5, 0.3, 0.2])

    def row_loss(b, sign=1.0):
        s = [float(users[b] @ items[c]) for c in range(4)]
        negatives = [c for c in range(4) if int(logged[c]) != int(logged[b])]
        qa = float(q[logged[b]])
        terms = [math.exp(s[b])] + [
            math.exp(s[c] - sign * math.log(len(negatives) * float(q[logged[c]]) / (1 - qa)))
            for c in negatives
        ]
        return math.log(sum(terms)) - s[b]

    value = in_batch_softmax_loss(users, items, logged, rewards, q.log()).item()
    assert value == pytest.approx((row_loss(0) + row_loss(1) + row_loss(3)) / 3, rel=1e-6)
    wrong = (row_loss(0, -1) + row_loss(1, -1) + row_loss(3, -1)) / 3
    assert abs(value - wrong) > 0.05


def _assert_unbiased_over_batches(item_table, user, q, n, uniform, generator, prior=False):
    """Over 4,000 batches of item 0 (the positive) and ``n`` other rows drawn from ``q`` (plus
    ``uniform`` items drawn uniformly), the corrected negatives' mass estimates the other items'
    mass of the full softmax of item 0 within 4 standard errors (with ``prior``: of the softmax
    whose logits carry ``log q``)."""
    offset = q.log() if prior else torch.zeros(len(q))
    m = len(item_table)
    estimates = []
    for _ in range(4000):
        others = torch.multinomial(q[1:] / q[1:].sum(), n, replacement=True, generator=generator)
        batch_items = torch.cat([torch.tensor([0]), others + 1])
        drawn = torch.randint(m, (uniform,), generator=generator) if uniform else None
        loss = in_batch_softmax_loss(
            user.expand(n + 1, 3),
            item_table[batch_items],
            batch_items,
            torch.tensor([1.0] + [0.0] * n),
            q.log(),
            1.0,
            drawn,
            None if drawn is None else item_table[drawn],
            prior,
        )
        estimates.append(math.exp(loss.item() + float(user @ item_table[0]) + float(offset[0])))
    # exp(s_0) + the other items' mass, which the batches estimate
    full = math.exp(torch.logsumexp(user @ item_table.T + offset, dim=1).item())
    standard_error = np.std(estimates) / math.sqrt(len(estimates))
    assert abs(np.mean(estimates) - full) < 4 * standard_error < 0.1 * full


def test_in_batch_softmax_estimates_the_catalogues_softmax():
    """Over many batches drawn from q, the corrected negatives' mass estimates the other items'
    mass of the full softmax (unbiased), which the wrong sign does not."""
    generator = torch.Generator().manual_seed(0)
    item_table = torch.randn(6, 3, generator=generator)
    user = torch.randn(1, 3, generator=generator)
    q = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    _assert_unbiased_over_batches(item_table, user, q, 5, 0, generator)


def test_mixed_uniform_negatives_by_hand():
    """With M uniform items mixed in, every candidate c is corrected by - log(n q_c / (1 - q_a)
    + M / N); a uniform draw of the positive's item is left out like a batch row of it."""
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -1.0]])
    items = torch.tensor([[1.0, 0.5], [0.2, 1.0], [-1.0, 0.3]])
    logged = torch.tensor([0, 1, 2])
    table = torch.tensor([[1.0, 0.5], [0.2, 1.0], [-1.0, 0.3], [0.7, 0.7]])  # 4 items
    uniform = torch.tensor([3, 0])  # item 0 is row 0's positive: left out of its negatives
    q = torch.tensor([0.4, 0.3, 0.2, 0.1])
    rewards = torch.ones(3)

    def row_loss(b):
        a, n, m = int(logged[b]), 2, 2
        candidates = [int(c) for c in logged] + [int(u) for u in uniform]
        embeddings = [items[c] for c in range(3)] + [table[int(u)] for u in uniform]
        terms = [math.exp(float(users[b] @ items[b]))]
        for c, v in zip(candidates, embeddings, strict=True):
            if c != a:
                expected = n * float(q[c]) / (1 - float(q[a])) + m / 4
                terms.append(math.exp(float(users[b] @ v)) / expected)
        return math.log(sum(terms)) - float(users[b] @ items[b])

    value = in_batch_softmax_loss(
        users, items, logged, rewards, q.log(), 1.0, uniform, table[uniform]
    ).item()
    assert value == pytest.approx(sum(row_loss(b) for b in range(3)) / 3, rel=1e-6)
    without = in_batch_softmax_loss(users, items, logged, rewards, q.log()).item()
    assert abs(value - without) > 0.01


def test_mixed_negatives_estimate_the_catalogues_softmax():
    """Batch negatives drawn from q plus uniform ones: the balance-heuristic correction keeps
    the estimate of the other items' mass unbiased, also for items the log rarely holds."""
    generator = torch.Generator().manual_seed(1)
    item_table = torch.randn(6, 3, generator=generator)
    item_table[5] *= 3  # a rarely logged item with a large score: batches alone rarely see it
    user = torch.randn(1, 3, generator=generator)
    q = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    _assert_unbiased_over_batches(item_table, user, q, 3, 2, generator)


def test_the_popularity_prior_by_hand():
    """With the prior every logit carries log q: in the catalogue's softmax plainly, in the
    batch's with each candidate corrected by - log e_c + log q_c (for batch rows alone the same
    log((1 - q_a) / n) for every candidate: no logQ correction) and the positive s_a + log q_a."""
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    logged = torch.tensor([0, 1, 2])
    rewards = torch.tensor([1.0, 0.0, 2.0])
    q = torch.tensor([0.6, 0.3, 0.1])

    def catalogue_row(b):
        logits = [float(users[b] @ v) / 0.5 + math.log(q[j]) for j, v in enumerate(items)]
        return math.log(sum(math.exp(x) for x in logits)) - logits[int(logged[b])]

    value = softmax_loss(users, items, logged, rewards, 0.5, q.log())
    assert value.item() == pytest.approx((catalogue_row(0) + catalogue_row(2)) / 2, rel=1e-6)

    def batch_row(b):
        a = int(logged[b])
        terms = [math.exp(float(users[b] @ items[b]) + math.log(q[a]))]
        terms += [
            math.exp(float(users[b] @ items[c]) + math.log((1 - q[a]) / 2))
            for c in range(3)
            if c != b
        ]
        return math.log(sum(terms)) - float(users[b] @ items[b]) - math.log(q[a])

    value = in_batch_softmax_loss(users, items, logged, rewards, q.log(), prior=True)
    assert value.item() == pytest.approx((batch_row(0) + batch_row(2)) / 2, rel=1e-6)
    corrected = in_batch_softmax_loss(users, items, logged, rewards, q.log())
    assert abs(value.item() - corrected.item()) > 0.05


@pytest.mark.parametrize("uniform", [0, 2])
def test_the_prior_in_batch_estimates_the_catalogues_softmax_with_the_prior(uniform):
    """Batches drawn from q (plus uniform items), with the prior: the estimate of the other
    items' mass is that of the catalogue's softmax whose logits carry log q, unbiased."""
    generator = torch.Generator().manual_seed(2)
    item_table = torch.randn(6, 3, generator=generator)
    user = torch.randn(1, 3, generator=generator)
    q = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    _assert_unbiased_over_batches(item_table, user, q, 4, uniform, generator, prior=True)


@pytest.mark.parametrize("negatives", ["catalogue", "batch"])
def test_the_popularity_prior_is_part_of_the_model(env, log, tmp_path, negatives):
    """The trained model ranks by its towers plus T log q of the log's positive rows, in every
    scoring path, keeps the prior in its file and resumes; the same seed, the same model."""
    config = TrainConfig(
        steps=20,
        lr=1e-3,
        loss="softmax",
        negatives=negatives,
        temperature=0.5,
        popularity_prior=True,
        eval_every=None,
        checkpoint_every=10,
    )
    agent = TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    model = agent.model_
    counts = np.bincount(log.actions[log.rewards > 0], minlength=log.n_items)
    expected = 0.5 * np.log(np.maximum(counts, 1) / counts.sum())
    np.testing.assert_allclose(model.item_prior.numpy(), expected, rtol=1e-6)
    users, items = log.users[:5], log.item_table
    with torch.no_grad():
        towers = model.embed_users(users) @ model.embed_items(items).T
        scores = model.score_all(users, items)
        paired = model(users, items[[2, 2, 0, 1, 3]])
    np.testing.assert_allclose(scores.numpy(), (towers + model.item_prior).numpy(), rtol=1e-6)
    np.testing.assert_allclose(paired.numpy(), scores.numpy()[range(5), [2, 2, 0, 1, 3]], rtol=1e-5)
    np.testing.assert_allclose(agent.score_items(users), scores.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="prior to each of its catalogue's 10 items"):
        model.score_all(users, items[[0, 1]])
    with pytest.raises(ValueError, match="as a Batch with their ids"):
        model(FeatureTensors.from_batch(users, "cpu"), FeatureTensors.from_batch(items[:5], "cpu"))
    loaded = TwoTower.load(model.save(tmp_path / "model.safetensors"))
    assert torch.equal(loaded.item_prior, model.item_prior)
    with torch.no_grad():
        assert torch.equal(loaded.score_all(users, items), scores)
    again = TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    assert torch.equal(again.model_.score_all(users, items).detach(), scores)
    with interrupted_at_step(16):
        TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path / "run")
    resumed = TwoTowerAgent(env, "mlp", "quick", config).fit(
        log, out_dir=tmp_path / "run", resume=True
    )
    with torch.no_grad():
        assert torch.equal(resumed.model_.score_all(users, items), scores)
    plain = dataclasses.replace(config, popularity_prior=False)
    with pytest.raises(ValueError, match="must be True, False or 'auto', got 'yes'"):
        TwoTowerAgent(env, "mlp", "quick", dataclasses.replace(config, popularity_prior="yes")).fit(
            log
        )
    with pytest.raises(ValueError, match=r"differ in \['popularity_prior'\]"):
        TwoTowerAgent(env, "mlp", "quick", plain).fit(log, out_dir=tmp_path / "run", resume=True)
    without = TwoTowerAgent(env, "mlp", "quick", plain).fit(log).model_
    assert len(without.item_prior) == 0
    with pytest.raises(ValueError, match="popularity_prior adds the log's popularity"):
        TwoTowerAgent(env, "mlp", "quick", dataclasses.replace(config, loss="mse")).fit(log)


@pytest.mark.parametrize(("negatives", "expected"), [("catalogue", False), ("batch", True)])
def test_the_ranking_presets_prior_is_on_with_in_batch_negatives_only(
    env, log, negatives, expected
):
    """``popularity_prior="auto"`` (the ranking preset's): the full softmax learns log p(a|u)
    alone, the in-batch one with the prior; the result's config says which ran."""
    config = TrainConfig.from_preset("ranking", steps=5, negatives=negatives, eval_every=None)
    assert config.popularity_prior == "auto"
    agent = TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    assert agent.result_.config.popularity_prior is expected
    assert len(agent.model_.item_prior) == (env.unwrapped.n_items if expected else 0)
    mse = TrainConfig(steps=5, popularity_prior="auto", eval_every=None)
    assert TwoTowerAgent(env, "mlp", "quick", mse).fit(log).result_.config.popularity_prior is False


def test_uniform_negatives_train_deterministically_resume_and_need_in_batch(env, log, tmp_path):
    config = TrainConfig(
        steps=20,
        lr=1e-3,
        loss="softmax",
        negatives="batch",
        uniform_negatives=4,
        eval_every=None,
        checkpoint_every=10,
    )
    a = TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    b = TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    for name, tensor in a.model_.state_dict().items():
        assert torch.equal(tensor, b.model_.state_dict()[name]), name
    plain = TwoTowerAgent(env, "mlp", "quick", dataclasses.replace(config, uniform_negatives=0))
    plain.fit(log)
    assert not torch.equal(  # the uniform items change the updates
        a.model_.state_dict()["user_tower.head.0.weight"],
        plain.model_.state_dict()["user_tower.head.0.weight"],
    )
    # interrupted after step 15 (checkpoint at 10), resumed: the same weights
    with interrupted_at_step(16):
        TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path)
    resumed = TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path, resume=True)
    for name, tensor in a.model_.state_dict().items():
        assert torch.equal(tensor, resumed.model_.state_dict()[name]), name
    for other in (
        dataclasses.replace(config, negatives="catalogue"),
        dataclasses.replace(config, loss="mse"),
    ):
        with pytest.raises(ValueError, match="uniform_negatives=4 mixes uniform items"):
            TwoTowerAgent(env, "mlp", "quick", other).fit(log)


@pytest.mark.parametrize("loss", ["mse", "bce", "softmax"])
def test_the_train_step_computes_its_loss(env, log, loss):
    model = TwoTower.from_env(env, "mlp", "quick", seed=0)
    users = FeatureTensors.from_batch(log.users, "cpu")
    table = FeatureTensors.from_batch(log.item_table, "cpu")
    actions, rewards = torch.as_tensor(log.actions), torch.as_tensor(log.rewards)
    index = torch.arange(16)
    with torch.no_grad():
        u = model.user_tower(FeatureTensors(users.numeric[:16], users.categorical[:16]))
        v = model.item_tower(table)
        scores = (u * v[actions[:16]]).sum(-1)
        expected = (
            softmax_loss(u, v, actions[:16], rewards[:16])
            if loss == "softmax"
            else pair_loss(loss, scores, rewards[:16])
        )
    step = TrainStep(
        model, make_optimizer(model, 1e-3), users, table, actions, rewards, 16, loss=loss
    )
    assert step(index).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("loss", "negatives"), [("bce", "auto"), ("softmax", "auto"), ("softmax", "batch")]
)
def test_every_loss_is_deterministic_and_learns(env, log, loss, negatives):
    def fit(seed):
        config = TrainConfig(
            steps=300, lr=1e-3, loss=loss, negatives=negatives, eval_every=None, seed=seed
        )
        return TwoTowerAgent(env, "mamba", "quick", config).fit(log)

    a, b = fit(0), fit(0)
    for name, tensor in a.model_.state_dict().items():
        assert torch.equal(tensor, b.model_.state_dict()[name]), name
    assert a.result_.curve.equals(b.result_.curve)
    assert a.result_.metrics["HR@1"] > 0.9  # popularity and chance: about 0.3


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_a_log_without_positive_rewards_is_refused(env, log, loss):
    flat = dataclasses.replace(log, rewards=np.zeros(len(log)))
    with pytest.raises(ValueError, match=f"loss '{loss}' learns from positive rewards"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=5, loss=loss)).fit(flat)
    TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=5, eval_every=None)).fit(flat)  # mse


def test_resume_refuses_another_loss_and_names_it(env, log, tmp_path):
    config = TrainConfig(steps=10, eval_every=None, loss="softmax")
    TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    with pytest.raises(ValueError, match=r"differ in \['loss'\]"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=10, eval_every=None)).fit(
            log, out_dir=tmp_path, resume=True
        )
    again = TwoTowerAgent(env, "mlp", "quick", config).fit(log, out_dir=tmp_path, resume=True)
    assert again.result_.config.loss == "softmax"


def test_bad_loss_settings_are_named(env, log):
    for config, message in (
        (TrainConfig(steps=5, loss="hinge"), "loss must be one of"),
        (TrainConfig(steps=5, loss="softmax", temperature=0), "temperature"),
        # 1/T would overflow float32: refused by name, never reported as a divergence
        (TrainConfig(steps=5, loss="softmax", temperature=1e-40), "temperature=1e-40 underflows"),
    ):
        with pytest.raises(ValueError, match=message):
            TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    big = gym.make("ToyRec-v0", n_items=FULL_SOFTMAX_MAX_ITEMS + 1)
    config = TrainConfig(steps=2, loss="softmax", negatives="catalogue", eval_every=None)
    with pytest.raises(ValueError, match="at most 4,096 items.*'batch'"):
        TwoTowerAgent(big, "mlp", "quick", config).fit(collect(big, n=64, seed=0))
    with pytest.raises(ValueError, match="negatives must be one of"):
        TwoTowerAgent(env, "mlp", "quick", TrainConfig(steps=2, negatives="all")).fit(log)


def test_runs_with_another_loss_get_their_own_directory():
    assert str(RunSpec("Spotify-v0", "mamba").relative_dir()) == "Spotify-v0/mamba/seed0"
    spec = RunSpec("Spotify-v0", "mamba", loss="softmax", temperature=0.1)
    assert str(spec.relative_dir()) == "Spotify-v0/mamba-softmax-t0.1/seed0"
    spec = RunSpec("Spotify-v0", "mamba", loss="bce", batch_size=128)
    assert str(spec.relative_dir()) == "Spotify-v0/mamba-b128-bce/seed0"
    assert spec.train_steps() == 160_000 // 128  # one pass over the paper's log
    with pytest.raises(ValueError, match="loss must be one of"):
        RunSpec("Spotify-v0", "mamba", loss="hinge")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        RunSpec("Spotify-v0", "mamba", batch_size=0)
    spec = RunSpec("Spotify-v0", "mamba", preset="ranking", popularity_prior=True)
    assert str(spec.relative_dir()) == "Spotify-v0/mamba-ranking-prior/seed0"
    saved = spec.to_dict()
    assert RunSpec.from_dict(saved) == spec
    del saved["popularity_prior"]  # a run saved before the option: the preset's, "auto"
    assert RunSpec.from_dict(saved) == RunSpec("Spotify-v0", "mamba", preset="ranking")
    with pytest.raises(ValueError, match="popularity_prior must be True, False or 'auto', got 1"):
        RunSpec("Spotify-v0", "mamba", popularity_prior=1)
    # the ranking preset's prior is "auto"; on and off are rows of their own, auto elsewhere named
    spec = RunSpec("Spotify-v0", "mamba", preset="ranking", popularity_prior=False)
    assert str(spec.relative_dir()) == "Spotify-v0/mamba-ranking-noprior/seed0"
    spec = RunSpec("Spotify-v0", "mamba", loss="softmax", popularity_prior="auto")
    assert str(spec.relative_dir()) == "Spotify-v0/mamba-softmax-autoprior/seed0"
    spec = RunSpec("Spotify-v0", "mamba", preset="ranking", select_metric="HR@1")
    assert str(spec.relative_dir()) == "Spotify-v0/mamba-ranking-bestHR@1/seed0"
    with pytest.raises(ValueError, match="select_metric must be one of"):
        RunSpec("Spotify-v0", "mamba", select_metric="MAP@12")  # not one Spotify evaluates


def test_a_saved_run_without_early_stopping_stays_without_it_when_a_preset_adds_it(monkeypatch):
    """Off is saved as ``"none"``; a run saved with null (or before the field) ran without early
    stopping, so a preset that later selects on validation users must not adopt it."""
    from recsim_ft.models.presets import PRESETS

    monkeypatch.delitem(PRESETS["ranking"].training, "select_metric", raising=False)  # before
    spec = RunSpec("Spotify-v0", "mamba", preset="ranking")
    assert spec.train.select_metric == "none"
    assert str(spec.relative_dir()) == "Spotify-v0/mamba-ranking/seed0"
    saved = spec.to_dict()
    old = {k: v for k, v in saved.items() if k != "select_metric"}
    assert RunSpec.from_dict(old) == RunSpec.from_dict({**saved, "select_metric": None}) == spec
    monkeypatch.setitem(PRESETS["ranking"].training, "select_metric", "HR@1")
    preset = RunSpec("Spotify-v0", "mamba", preset="ranking")
    assert preset.train.select_metric == "HR@1" and RunSpec.from_dict(old) != preset
    assert RunSpec.from_dict(old).row == "mamba-ranking-laststep"  # a row of its own
    assert str(RunSpec.from_dict(old).relative_dir()) == "Spotify-v0/mamba-ranking-laststep/seed0"
    assert RunSpec("Spotify-v0", "mamba", preset="ranking", select_metric="none") == spec
    assert RunSpec("Spotify-v0", "mamba", preset="ranking", select_metric="HR@1") == preset


def test_the_cli_trains_with_a_loss_and_batch_size(tmp_path):
    from recsim_ft.cli import main

    run = tmp_path / "run"
    argv = ["train", "--env", "toy_env:ToyRec-v0", "--embedder", "mlp", "--preset", "quick"]
    options = ["--n", "640", "--steps", "10", "--loss", "softmax", "--batch-size", "64"]
    options += ["--popularity-prior", "--select-metric", "HR@1", "--eval-every", "5"]
    assert main([*argv, *options, "--quiet", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    train = config["train"]
    assert (train["loss"], train["batch_size"], train["popularity_prior"]) == ("softmax", 64, True)
    assert train["select_metric"] == "HR@1"
    assert len(TwoTower.load(run).item_prior) == 10


def test_the_softmax_draws_its_batches_from_the_positive_rows(env, log):
    """Every row of a softmax batch is a choice: one pass is a pass over the positive rows."""
    positives = int((log.rewards > 0).sum())
    seen = []
    step = TrainStep.__call__

    def record(self, index):
        seen.append(index.clone())
        return step(self, index)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainStep, "__call__", record)
        config = TrainConfig(loss="softmax", batch_size=16, eval_every=None)
        agent = TwoTowerAgent(env, "mlp", "quick", config).fit(log)
    assert agent.result_.config.steps == positives // 16 == len(seen)
    rows = torch.cat(seen).numpy()
    assert (log.rewards[rows] > 0).all() and len(set(rows.tolist())) == len(rows)


def test_the_users_a_run_is_scored_on_are_checked_before_its_first_step(env, log):
    """A pool too small for the training's evaluation (or its selection) is named by option
    before any training, and before any data need be collected (``evaluation_users``)."""
    hm = gym.make("HMFashion-v0", n_items=100, n_customers=20_000)  # 337 in the test pool
    with pytest.raises(ValueError, match=r"eval_users=5000 \(test users\)"):
        TrainConfig(steps=5, eval_users=5_000).evaluation_users(hm)
    ranking = TrainConfig.from_preset("ranking", steps=5, select_users=300)
    with pytest.raises(ValueError, match="select_users=300 .*select_metric"):
        ranking.evaluation_users(hm)
    # more users than the machine holds: refused before any is drawn (it was an OOM kill)
    with pytest.raises(ValueError, match=r"1,000,000,000 test users needs about [\d,.]+ GiB"):
        TrainConfig(steps=5, eval_users=10**9).evaluation_users(env)
    scoring, selecting = TrainConfig.from_preset("ranking").evaluation_users(env)
    assert len(scoring) == 100 and len(selecting) == 400
    assert not set(scoring.ids) & set(selecting.ids)
