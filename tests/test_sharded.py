"""Exact retrieval sharded over Ray workers (``recsim_ft.retrieval.sharded``): the same arrays as
one process, bad input refused by name; on a local Ray runtime of 2 CPUs, started once for the
module and shut down after; skipped where Ray is not installed."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from recsim_ft.agents import TwoTowerAgent
from recsim_ft.data import collect
from recsim_ft.parallel import check_address, start_ray
from recsim_ft.retrieval import ItemEmbeddings, embed_rows
from recsim_ft.retrieval.sharded import sharded_top_k
from recsim_ft.train import TrainConfig

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained():
    env = gym.make("HMFashion-v0", n_items=500, n_customers=20_000)
    config = TrainConfig(steps=5, eval_every=None)
    agent = TwoTowerAgent(env, "mlp", "quick", config).fit(collect(env, n=2_000, seed=0))
    return agent.model_, env.unwrapped.item_table(), env.unwrapped.customers()


def test_sharded_top_k_is_the_single_process_answer(local_ray, trained):
    model, item_table, users = trained
    items = ItemEmbeddings.from_model(model, item_table)
    ids, scores = items.top_k(embed_rows(model, users), 12)
    # 20,000 users in 3 blocks over 2 workers, the last one short
    sharded_ids, sharded_scores = sharded_top_k(model, item_table, users, 12, 2, block_rows=8192)
    np.testing.assert_array_equal(sharded_ids, ids)
    np.testing.assert_array_equal(sharded_scores, scores)
    few = users[:10]
    np.testing.assert_array_equal(sharded_top_k(model, item_table, few, 3)[0], ids[:10, :3])


def test_bad_sharding_is_refused_by_name(local_ray, trained):
    model, item_table, users = trained
    with pytest.raises(ValueError, match="block_rows must be a multiple of 4,096"):
        sharded_top_k(model, item_table, users, 12, block_rows=5000)
    with pytest.raises(ValueError, match="k must be an integer in \\[1, 500\\]"):
        sharded_top_k(model, item_table, users, 501)
    with pytest.raises(ValueError, match="workers=3 but the Ray cluster has 2 CPU"):
        start_ray(3)


@pytest.mark.timeout(60)  # a hang, not a slow answer, fails this test
def test_an_address_nobody_answers_is_refused_not_waited_for():
    with pytest.raises(ConnectionError, match="no Ray cluster answers at 127.0.0.1:9"):
        check_address("127.0.0.1:9")
    with pytest.raises(ValueError, match="address must be host:port"):
        check_address("nowhere")


def test_the_competition_ranks_on_ray_as_in_one_process(local_ray):
    """``rank_articles(workers=2)``: the customers in blocks across Ray workers, the same
    articles as one process."""
    from recsim_ft.competition import competition_config, fit_two_tower, rank_articles
    from recsim_ft.envs.hm.data import read_features, read_transactions
    from recsim_ft.envs.hm.synthetic import synthetic_files

    files = synthetic_files(2_000, seed=0, dynamics=True)
    transactions, features = read_transactions(files), read_features(files)
    config = competition_config(steps=3, batch_size=64)
    model = fit_two_tower(transactions, features, "mlp", config, None, model_preset="quick")
    customers = np.arange(0, 2_000, 3)
    alone = rank_articles(model, features, customers, block=4096)
    sharded = rank_articles(model, features, customers, block=4096, workers=2)
    np.testing.assert_array_equal(sharded, alone)
