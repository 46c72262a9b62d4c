"""Training curves with the state of both towers, on validation users only (issue 16).

Trains two-tower models exactly as ``recsim-ft tune`` does (the run seed's data and weights, the
trainer's step and sample order, the paper's protocol) and every ``--every`` steps records, on
the validation users and the env's item table: the training loss, HR@1 / NDCG@10, the norms and
the spread over rows of the embedder outputs (before the head) and of the tower outputs (after
it), the score matrix (overall spread, spread over items within a user, spread over users within
an item), and the gradient norm of each part of each tower (mean over the steps in between).

    python scripts/diagnose_plateau.py --setting spotify --embedder transformer \\
        --seeds 1000-1009 --steps 1500 --every 100 --out results/diagnosis/spotify.csv

``--summarize FILE...`` prints one line per run of such CSV files instead: the state at step 0
and on the plateau (step 500), the first step at which a tower's embedder got exactly zero
gradient (its head dead for every row), and the first step with a training loss below
``LEFT_PLATEAU_LOSS``.

``--model key=value`` overrides ``ModelConfig`` fields, as ``recsim-ft tune --model`` does;
``--probe key=value`` tries a change without a ``ModelConfig`` field for it (see ``PROBES``).
The test users are never drawn.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

from recsim_ft.cli import parse_env_kwargs
from recsim_ft.data import collect
from recsim_ft.envs import make_env
from recsim_ft.evaluate import evaluate
from recsim_ft.experiments.specs import derived_seeds, table_settings
from recsim_ft.models import FeatureTensors, TwoTower
from recsim_ft.protocol import protocol_for
from recsim_ft.train import TrainStep, _ModelScorer, _permutation, make_optimizer

PARTS = ("tokenizer", "embedder", "head")
#: Changes tried on a built model: ``head_scale`` multiplies the last head Linear of both towers
#: at initialisation; ``cls_scale`` the [CLS] token's weight and bias in both tokenizers;
#: ``score_bias=1`` adds a learnable scalar to every score; ``warmup`` raises the lr linearly
#: from 0 over that many steps; ``head_activation`` (gelu, leaky_relu) replaces the head's ReLUs.
PROBES = ("head_scale", "cls_scale", "score_bias", "warmup", "head_activation")
ACTIVATIONS = {"gelu": torch.nn.GELU, "leaky_relu": torch.nn.LeakyReLU}


def apply_probes(model: TwoTower, probes: dict) -> list[torch.nn.Parameter]:
    """Apply the initialisation probes to ``model``; returns extra parameters to train."""
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; choose from {PROBES}")
    with torch.no_grad():
        for tower in (model.user_tower, model.item_tower):
            last = tower.head[-1] if isinstance(tower.head[-1], torch.nn.Linear) else tower.head[-2]
            last.weight.mul_(probes.get("head_scale", 1.0))
            last.bias.mul_(probes.get("head_scale", 1.0))
            tower.tokenizer.numeric_weight[-1].mul_(probes.get("cls_scale", 1.0))
            tower.tokenizer.numeric_bias[-1].mul_(probes.get("cls_scale", 1.0))
            if "head_activation" in probes:
                for i, module in enumerate(tower.head):
                    if isinstance(module, torch.nn.ReLU):
                        tower.head[i] = ACTIVATIONS[probes["head_activation"]]()
    if not probes.get("score_bias"):
        return []
    bias = torch.nn.Parameter(torch.zeros(()))
    score_logged = model.score_logged
    model.score_logged = lambda *args: score_logged(*args) + bias  # ranking is unchanged
    return [bias]


#: A mean training loss below this has left the plateau (Spotify: the plateau's loss is the
#: rewards' variance, 0.577, where every score is about 0).
LEFT_PLATEAU_LOSS = 0.5


def summarize(paths: list[Path]) -> pd.DataFrame:
    """One row per (file, embedder, seed) of diagnosis CSV files (see the module docstring)."""
    rows = []
    for path in paths:
        for (embedder, seed), run in pd.read_csv(path).groupby(["embedder", "seed"], sort=False):
            start, plateau = run.iloc[0], run[run["step"] == 500].iloc[0]
            dead = {
                side: run.loc[run[f"grad_{side}_embedder"] == 0, "step"].min()
                for side in ("user", "item")
            }
            rows.append(
                {
                    "run": path.stem,
                    "embedder": embedder,
                    "seed": seed,
                    "user_rel_0": start["user_hidden_rel"],
                    "item_rel_0": start["item_hidden_rel"],
                    "score_mean_0": start["score_mean"],
                    "loss_500": plateau["loss"],
                    "user_norm_500": plateau["user_out_norm"],
                    "item_norm_500": plateau["item_out_norm"],
                    "score_std_500": plateau["score_std"],
                    "grad_user_500": plateau["grad_user_embedder"],
                    "grad_item_500": plateau["grad_item_embedder"],
                    "user_head_dead_at": dead["user"],
                    "item_head_dead_at": dead["item"],
                    "left_plateau_at": run.loc[run["loss"] < LEFT_PLATEAU_LOSS, "step"].min(),
                    "last_step": run["step"].iloc[-1],
                    "last_HR@1": run["HR@1"].iloc[-1],
                }
            )
    return pd.DataFrame(rows)


def seed_list(text: str) -> list[int]:
    """``1000-1009`` or ``1000,1003``."""
    if "-" in text:
        first, last = (int(x) for x in text.split("-"))
        return list(range(first, last + 1))
    return [int(x) for x in text.split(",")]


def row_stats(prefix: str, x: torch.Tensor) -> dict[str, float]:
    """Mean row norm, the spread over rows (root of the summed per-dimension variances) and that
    spread relative to the mean norm (0: every row the same vector)."""
    norm = x.norm(dim=1).mean().item()
    spread = x.var(dim=0, unbiased=False).sum().sqrt().item()
    return {f"{prefix}_norm": norm, f"{prefix}_spread": spread, f"{prefix}_rel": spread / norm}


def tower_state(model: TwoTower, users: FeatureTensors, items: FeatureTensors) -> dict[str, float]:
    """Embedder and tower outputs of the validation users and all items, the share of the head's
    hidden units that are positive for at least one row (alive) and on average (active), and the
    scores."""
    state: dict[str, float] = {}
    with torch.no_grad():
        outputs = {}
        for side, tower, rows in (
            ("user", model.user_tower, users),
            ("item", model.item_tower, items),
        ):
            hidden = tower.embedder(tower.tokenizer(rows))
            outputs[side] = tower.head(hidden)
            state |= row_stats(f"{side}_hidden", hidden)
            pre_activation = tower.head[0](hidden)  # the head's first Linear, before its ReLU
            state[f"{side}_head_alive"] = (pre_activation > 0).any(dim=0).float().mean().item()
            state[f"{side}_head_active"] = (pre_activation > 0).float().mean().item()
            state |= row_stats(f"{side}_out", outputs[side])
        scores = outputs["user"] @ outputs["item"].T
    state |= {
        "score_mean": scores.mean().item(),
        "score_std": scores.std(unbiased=False).item(),
        "score_std_over_items": scores.std(dim=1, unbiased=False).mean().item(),
        "score_std_over_users": scores.std(dim=0, unbiased=False).mean().item(),
    }
    return state


def gradient_norms(model: TwoTower) -> dict[str, float]:
    """Squared gradient norm of each (tower, part) after a step."""
    norms = {}
    for side, tower in (("user", model.user_tower), ("item", model.item_tower)):
        for part in PARTS:
            grads = [p.grad for p in getattr(tower, part).parameters() if p.grad is not None]
            norms[f"grad_{side}_{part}"] = sum(float(g.pow(2).sum()) for g in grads)
    return norms


def diagnose(
    setting_name: str,
    embedder: str,
    seed: int,
    steps: int,
    every: int,
    model_options: dict,
    lr: float | None,
    probes: dict,
) -> pd.DataFrame:
    """The curve of one (setting, embedder, seed) run, one row per ``every`` steps."""
    setting = {s.name: s for s in (*table_settings(1), *table_settings(2))}[setting_name]
    kwargs = dict(setting.env_kwargs)
    if setting.seed_kwarg is not None:
        kwargs[setting.seed_kwarg] = seed
    env = make_env(setting.env_id, kwargs)
    protocol = protocol_for(env)
    data_seed, train_seed, eval_seed = derived_seeds(seed)
    log = collect(env, n=protocol.n_samples, seed=data_seed)
    model = TwoTower.from_env(env, embedder, "paper", seed=train_seed, **model_options)
    extra = apply_probes(model, probes)
    lr = protocol.lr if lr is None else lr
    users = FeatureTensors.from_batch(log.users)
    item_table = FeatureTensors.from_batch(log.item_table)
    actions, rewards = torch.as_tensor(log.actions), torch.as_tensor(log.rewards)
    validation = FeatureTensors.from_batch(env.validation_users(100, eval_seed))
    scorer = _ModelScorer(model, item_table)
    optimizer = make_optimizer(model, lr)
    if extra:
        optimizer.add_param_group({"params": extra})
    warmup = int(probes.get("warmup", 0))
    step_once = TrainStep(model, optimizer, users, item_table, actions, rewards, batch_size=32)
    steps_per_pass = len(log) // 32

    def record(step: int, losses: list[float], grads: dict[str, float]) -> dict:
        model.eval()
        metrics = evaluate(scorer, env, 100, eval_seed, (1, 10), ("HR", "NDCG"), "validation")
        state = tower_state(model, validation, item_table)
        model.train()
        n = max(len(losses), 1)
        return {
            "setting": setting_name,
            "embedder": embedder,
            "seed": seed,
            "lr": lr,
            "probes": " ".join(f"{k}={v}" for k, v in sorted(probes.items())),
            "step": step,
            "loss": sum(losses) / n if losses else math.nan,
            "HR@1": metrics["HR@1"],
            "NDCG@10": metrics["NDCG@10"],
            **state,
            **{k: math.sqrt(v / n) for k, v in grads.items()},
        }

    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_seed)
        rows.append(record(0, [], {}))
        model.train()
        losses: list[float] = []
        grads: dict[str, float] = {}
        order = _permutation(len(log), train_seed, 0)
        for step in range(1, steps + 1):
            epoch, position = divmod(step - 1, steps_per_pass)
            if position == 0 and step > 1:
                order = _permutation(len(log), train_seed, epoch)
            if warmup:
                for group in optimizer.param_groups:
                    group["lr"] = lr * min(1.0, step / warmup)
            losses.append(float(step_once(order[position * 32 : (position + 1) * 32])))
            for k, v in gradient_norms(model).items():
                grads[k] = grads.get(k, 0.0) + v
            if step % every == 0 or step == steps:
                rows.append(record(step, losses, grads))
                losses, grads = [], {}
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="spotify", help="spotify, hm, k25_m25, ...")
    parser.add_argument("--embedder", nargs="+", default=["transformer"])
    parser.add_argument("--seeds", type=seed_list, default=seed_list("1000-1001"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=None, help="default: the paper's for the env")
    parser.add_argument("--model", nargs="*", default=[], help="ModelConfig overrides, key=value")
    parser.add_argument("--probe", nargs="*", default=[], help=f"key=value of {PROBES}")
    parser.add_argument("--out", type=Path, help="CSV file to write")
    parser.add_argument("--summarize", type=Path, nargs="+", help="diagnosis CSV files to read")
    args = parser.parse_args()
    if args.summarize:
        table = summarize(args.summarize)
        print("| " + " | ".join(table.columns) + " |")
        print("|---" * len(table.columns) + "|")
        for row in table.itertuples(index=False):
            print(
                "| "
                + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row)
                + " |"
            )
        return
    if args.out is None:
        parser.error("--out is required unless --summarize is given")
    torch.set_num_threads(1)
    model_options = parse_env_kwargs(args.model, "--model")
    probes = parse_env_kwargs(args.probe, "--probe")
    frames = []
    for embedder in args.embedder:
        for seed in args.seeds:
            started = time.perf_counter()
            frame = diagnose(
                args.setting, embedder, seed, args.steps, args.every, model_options, args.lr, probes
            )
            frames.append(frame)
            last = frame.iloc[-1]
            print(
                f"{embedder} seed {seed}: loss {last['loss']:.4f} HR@1 {last['HR@1']:.3f} "
                f"user_hidden_rel {last['user_hidden_rel']:.4f} "
                f"score_std_over_users {last['score_std_over_users']:.4f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pd.concat(frames).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
