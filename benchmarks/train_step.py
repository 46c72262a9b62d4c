"""Train-step time of the whole two-tower model: our FT-Mamba, our FT-Transformer and mambapy's
Mamba in the same towers, paper config, batch 32, forward + backward + Adam step.

    python benchmarks/train_step.py [--steps 30] [--threads N]

Candidates are interleaved step by step (so background load hits them alike) and the median
step time is reported. Last line: one JSON object with ``mamba_over_transformer`` (step-time
ratio, worst shape set; target <= 0.5) and ``mambapy_over_mamba`` (speed-up, worst shape set;
target >= 6), plus the figures per shape set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn

from recsim_ft.envs.base import Batch, Feature, Schema
from recsim_ft.models import FeatureTensors, TwoTower
from recsim_ft.train import make_optimizer


def shape_sets() -> dict[str, tuple[Schema, Schema, Batch]]:
    """Schemas and item table with the shapes of the Spotify and H&M envs."""
    spotify_users = Schema(tuple(Feature(f"genre_{j}", "numeric", low=0, high=1) for j in range(20)))
    spotify_items = Schema((Feature("song", "categorical", tuple(map(str, range(50)))),))
    hm_users = Schema((
        Feature("age", "numeric", low=16, high=99),
        Feature("FN", "categorical", ("0", "1")),
        Feature("Active", "categorical", ("0", "1")),
        Feature("club_member_status", "categorical", ("ACTIVE", "PRE-CREATE", "LEFT CLUB", "?")),
        Feature("fashion_news_frequency", "categorical", ("NONE", "Regularly", "Monthly", "?")),
    ))
    hm_items = Schema((Feature("prod_name", "categorical", tuple(f"name{i}" for i in range(90))),))
    rng = np.random.default_rng(0)
    return {
        "spotify": (spotify_users, spotify_items,
                    Batch(np.zeros((50, 0)), np.arange(50)[:, None], np.arange(50))),
        "hm": (hm_users, hm_items,
               Batch(np.zeros((100, 0)), rng.integers(0, 90, (100, 1)), np.arange(100))),
    }


def random_users(schema: Schema, n: int, rng: np.random.Generator) -> Batch:
    numeric = rng.integers(0, 2, (n, schema.n_numeric)).astype(np.float32)
    categorical = np.stack([rng.integers(0, c, n) for c in schema.cardinalities], 1) \
        if schema.n_categorical else np.zeros((n, 0), np.int64)
    return Batch(numeric, categorical, np.arange(n))


class MambapyEmbedder(nn.Module):
    """mambapy's ``Mamba`` (same width, layers, d_state, d_conv, expand) reading the last token."""

    def __init__(self, d_model: int, n_layers: int, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        from mambapy.mamba import Mamba, MambaConfig

        self.mamba = Mamba(MambaConfig(d_model=d_model, n_layers=n_layers, d_state=d_state,
                                       d_conv=d_conv, expand_factor=expand))
        self.d_out = d_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mamba(tokens)[:, -1]


def build_models(user_schema: Schema, item_schema: Schema) -> dict[str, TwoTower]:
    models = {kind: TwoTower.from_schemas(user_schema, item_schema, kind, "paper")
              for kind in ("mamba", "transformer")}
    mambapy = TwoTower.from_schemas(user_schema, item_schema, "mamba", "paper")
    c = mambapy.config
    for tower in (mambapy.user_tower, mambapy.item_tower):
        tower.embedder = MambapyEmbedder(c.d_token, c.mamba_layers, c.d_state, c.d_conv, c.expand)
    models["mambapy"] = mambapy
    return models


def time_steps(models: dict[str, TwoTower], users: list[FeatureTensors], items: list[FeatureTensors],
               targets: list[torch.Tensor], warmup: int) -> dict[str, float]:
    """Median seconds per train step of each model, the models interleaved step by step."""
    optimizers = {k: make_optimizer(m, lr=1e-4) for k, m in models.items()}  # the trainer's Adam
    times: dict[str, list[float]] = {k: [] for k in models}
    for step, (u, i, y) in enumerate(zip(users, items, targets, strict=True)):
        for kind, model in models.items():
            start = time.perf_counter()
            loss = nn.functional.mse_loss(model(u, i), y)
            optimizers[kind].zero_grad()
            loss.backward()
            optimizers[kind].step()
            if step >= warmup:
                times[kind].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model and shape set")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    report: dict[str, dict[str, float]] = {}
    for name, (user_schema, item_schema, item_table) in shape_sets().items():
        models = build_models(user_schema, item_schema)
        n = args.steps + args.warmup
        users = [FeatureTensors.from_batch(random_users(user_schema, args.batch_size, rng)) for _ in range(n)]
        items = [FeatureTensors.from_batch(item_table[rng.integers(0, len(item_table), args.batch_size)])
                 for _ in range(n)]
        targets = [torch.as_tensor(rng.integers(-1, 2, args.batch_size), dtype=torch.float32) for _ in range(n)]
        t = time_steps(models, users, items, targets, args.warmup)
        report[name] = {f"{k}_ms": round(v * 1e3, 2) for k, v in t.items()}
        report[name]["mamba_over_transformer"] = round(t["mamba"] / t["transformer"], 3)
        report[name]["mambapy_over_mamba"] = round(t["mambapy"] / t["mamba"], 2)
        print(f"{name:8s} " + "  ".join(f"{k} {v}" for k, v in report[name].items()))
    summary = {
        "mamba_over_transformer": max(r["mamba_over_transformer"] for r in report.values()),
        "mambapy_over_mamba": min(r["mambapy_over_mamba"] for r in report.values()),
        **report,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
