"""Row-wise (sparse) updates of the id tables (``TrainConfig.id_updates="sparse"``): a step moves
only the rows its batch looked up, the run trains, resumes bit for bit and names the option in
its checkpoint, and the model gives dense gradients again after training."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from conftest import interrupted_at_step
from recsim_ft.data import collect
from recsim_ft.models import FeatureTensors, TwoTower
from recsim_ft.train import (
    CHECKPOINT_NAME,
    RowWiseAdam,
    TrainConfig,
    id_tables,
    make_optimizer,
    row_wise_ids,
    train,
)

#: the ranking preset's loss on a catalogue with an id table (5,000 articles)
SOFTMAX = dict(loss="softmax", negatives="batch", popularity_prior=True)


@pytest.fixture(scope="module")
def hm(one_torch_thread):
    env = gym.make("HMFashion-v0", n_items=5_000, n_customers=2_000)
    return env, collect(env, n=2_560, seed=0)


def _table(model):
    (table,) = id_tables(model)
    return table.weight.detach().clone()


def _step(model, optimizer, items, rows):
    optimizer.zero_grad(set_to_none=True)
    model.item_tower(FeatureTensors(*(t[rows] for t in items))).pow(2).mean().backward()
    optimizer.step()


def _moved(before, after):
    return set((before != after).any(dim=1).nonzero().squeeze(1).tolist())


@pytest.mark.parametrize("id_updates", ["dense", "sparse"])
def test_a_sparse_step_moves_only_the_rows_its_batch_looked_up(hm, id_updates):
    """Adam moves a row the batch did not look up by its momentum; SparseAdam leaves it."""
    env, log = hm
    items = FeatureTensors.from_batch(log.item_table, "cpu")
    first, second = torch.arange(0, 40), torch.arange(2_000, 2_040)

    def fresh():
        model = TwoTower.from_env(env, "mlp", "quick", seed=0)
        return model, make_optimizer(model, 1e-2, id_updates=id_updates)

    model, optimizer = fresh()
    start = _table(model)
    with row_wise_ids(model, id_updates == "sparse"):
        _step(model, optimizer, items, second)
    looked_up = _moved(start, _table(model))  # by the second batch, from the start

    model, optimizer = fresh()
    with row_wise_ids(model, id_updates == "sparse"):
        _step(model, optimizer, items, first)
        after_first = _table(model)
        _step(model, optimizer, items, second)
    moved = _moved(after_first, _table(model))
    assert len(looked_up) < len(id_tables(model)[0].weight) // 10
    if id_updates == "sparse":
        assert isinstance(optimizer, RowWiseAdam) and moved == looked_up
    else:
        assert moved > looked_up  # the first batch's rows move on
    assert not id_tables(model)[0].sparse  # dense gradients again after the block


def test_a_sparse_run_trains_and_resumes_bit_for_bit(hm, tmp_path):
    env, log = hm
    config = TrainConfig(
        steps=12,
        batch_size=64,
        eval_every=6,
        eval_users=40,
        checkpoint_every=4,
        schedule="cosine",
        id_updates="sparse",
        **SOFTMAX,
    )

    def fit(out_dir=None, resume=False, config=config):
        model = TwoTower.from_env(env, "mlp", "quick", seed=0)
        return train(model, log, env, config, out_dir, resume, progress=False)

    reference = fit()
    start = _table(TwoTower.from_env(env, "mlp", "quick", seed=0))
    assert _moved(start, _table(reference.model))  # the id table trained
    assert not id_tables(reference.model)[0].sparse
    with interrupted_at_step(10):
        fit(tmp_path)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 8
    resumed = fit(tmp_path, resume=True)
    for a, b in zip(
        reference.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert resumed.curve.equals(reference.curve)
    dense = TrainConfig(**{**config.__dict__, "id_updates": "dense"})
    with pytest.raises(ValueError, match=r"differ in \['id_updates'\]"):
        fit(tmp_path, resume=True, config=dense)


def test_a_bad_id_updates_value_is_named():
    with pytest.raises(ValueError, match="id_updates must be one of .*'sparse'.*got 'lazy'"):
        TrainConfig(id_updates="lazy").checked()
