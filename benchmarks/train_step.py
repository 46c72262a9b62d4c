"""Train-step time of the whole two-tower model, paper config: our FT-Mamba, our FT-Transformer
and, where asked, the same FT-Mamba on other kernel paths and mambapy's Mamba in the same towers.

    python benchmarks/train_step.py [--threads N] [--steps 30]                  # CPU, batch 32
    python benchmarks/train_step.py --device cuda --batch-sizes 32 2048         # GPU, CUDA graphs
    python benchmarks/train_step.py --threads 1 --against 767476d              # vs an older commit
    python benchmarks/train_step.py --threads 1 --precision fp32 bf16          # both precisions

Every candidate runs the trainer's own step (``recsim_ft.train.TrainStep``: scores of logged
pairs, MSE, backward, fused Adam; on CUDA captured once as a CUDA graph and replayed, unless
``--no-cuda-graph``). Candidates take turns, a block of ``--block`` steps each, for ``--steps``
rounds, so background load hits them alike; the figure is the median over rounds of the block's
wall time per step (on CUDA, between two device synchronisations: the throughput a training run
sees). Last line: one JSON object with ``mamba_over_transformer`` (step-time ratio, worst shape
set and batch; target <= 0.5), ``mambapy_over_mamba`` where mambapy ran (target >= 6), the CPU
(model and bf16 units, ``recsim_ft.cpu``), and the figures per shape set and batch size.

``--against COMMIT`` adds FT-Mamba and FT-Transformer as that commit's package builds them (its
``recsim_ft`` exported by ``git archive`` and imported under another name), taking turns with
today's, so a speed-up is a ratio measured side by side in one run
(``mamba_over_<commit>``: today's step time over the commit's).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

import recsim_ft
from recsim_ft import cpu
from recsim_ft.models import FeatureTensors, TwoTower
from recsim_ft.schema import Batch, Feature, Schema
from recsim_ft.train import TrainStep, make_optimizer


def package_at(commit: str) -> SimpleNamespace:
    """The classes this benchmark uses, from ``recsim_ft`` as it was at ``commit``: exported
    into a temporary folder and renamed so that it imports beside today's package."""
    name = "recsim_ft_" + "".join(c for c in commit if c.isalnum())
    root = Path(tempfile.mkdtemp(prefix="recsim_ft_at_"))
    repo = Path(recsim_ft.__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", commit, "recsim_ft"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    (root / "recsim_ft").rename(root / name)
    for source in (root / name).rglob("*.py"):
        text = source.read_text()
        source.write_text(text.replace("recsim_ft.", f"{name}.").replace("recsim_ft ", f"{name} "))
    sys.path.insert(0, str(root))
    modules = {m: importlib.import_module(f"{name}.{m}") for m in ("models", "schema", "train")}
    return SimpleNamespace(
        FeatureTensors=modules["models"].FeatureTensors,
        TwoTower=modules["models"].TwoTower,
        Batch=modules["schema"].Batch,
        Feature=modules["schema"].Feature,
        Schema=modules["schema"].Schema,
        TrainStep=modules["train"].TrainStep,
        make_optimizer=modules["train"].make_optimizer,
    )


#: Today's package, in the form of :func:`package_at`'s.
TODAY = SimpleNamespace(
    FeatureTensors=FeatureTensors,
    TwoTower=TwoTower,
    Batch=Batch,
    Feature=Feature,
    Schema=Schema,
    TrainStep=TrainStep,
    make_optimizer=make_optimizer,
)


def shape_sets(pkg: SimpleNamespace = TODAY) -> dict[str, tuple[Schema, Schema, Batch]]:
    """Schemas and item table with the shapes of the Spotify and H&M envs."""
    Schema, Feature, Batch = pkg.Schema, pkg.Feature, pkg.Batch  # noqa: N806 (classes)
    spotify_users = Schema(
        tuple(Feature(f"genre_{j}", "numeric", low=0, high=1) for j in range(20))
    )
    spotify_items = Schema((Feature("song", "categorical", tuple(map(str, range(50)))),))
    hm_users = Schema(
        (
            Feature("age", "numeric", low=16, high=99),
            Feature("FN", "categorical", ("0", "1")),
            Feature("Active", "categorical", ("0", "1")),
            Feature(
                "club_member_status", "categorical", ("ACTIVE", "PRE-CREATE", "LEFT CLUB", "?")
            ),
            Feature("fashion_news_frequency", "categorical", ("NONE", "Regularly", "Monthly", "?")),
        )
    )
    hm_items = Schema((Feature("prod_name", "categorical", tuple(f"name{i}" for i in range(90))),))
    rng = np.random.default_rng(0)
    return {
        "spotify": (
            spotify_users,
            spotify_items,
            Batch(np.zeros((50, 0)), np.arange(50)[:, None], np.arange(50)),
        ),
        "hm": (
            hm_users,
            hm_items,
            Batch(np.zeros((100, 0)), rng.integers(0, 90, (100, 1)), np.arange(100)),
        ),
    }


def random_users(
    schema: Schema, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fields of a ``Batch`` of ``n`` random users (any package's ``Batch`` takes them)."""
    numeric = rng.integers(0, 2, (n, schema.n_numeric)).astype(np.float32)
    categorical = (
        np.stack([rng.integers(0, c, n) for c in schema.cardinalities], 1)
        if schema.n_categorical
        else np.zeros((n, 0), np.int64)
    )
    return numeric, categorical, np.arange(n)


class MambapyEmbedder(nn.Module):
    """mambapy's ``Mamba`` (same width, layers, d_state, d_conv, expand) reading the last token."""

    def __init__(self, d_model: int, n_layers: int, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        from mambapy.mamba import Mamba, MambaConfig

        self.mamba = Mamba(
            MambaConfig(
                d_model=d_model,
                n_layers=n_layers,
                d_state=d_state,
                d_conv=d_conv,
                expand_factor=expand,
            )
        )
        self.d_out = d_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mamba(tokens)[:, -1]


def build_model(
    candidate: str, user_schema: Schema, item_schema: Schema, pkg: SimpleNamespace = TODAY
) -> TwoTower:
    """``transformer``, ``mamba`` (the automatic kernel path), ``mamba-<path>`` (a forced path of
    ``recsim_ft.models.mamba.KERNEL_PATHS``) or ``mambapy``, built by ``pkg``'s ``TwoTower``;
    ``<candidate>+compile``: its embedders under ``torch.compile`` (the user tower's shapes
    fixed, the de-duplicated item tower's dynamic)."""
    if candidate.endswith("+compile"):
        model = build_model(candidate.removesuffix("+compile"), user_schema, item_schema, pkg)
        model.user_tower.embedder = torch.compile(model.user_tower.embedder, dynamic=False)
        model.item_tower.embedder = torch.compile(model.item_tower.embedder, dynamic=True)
        return model
    TwoTower = pkg.TwoTower  # noqa: N806 (a class)
    if candidate == "transformer":
        return TwoTower.from_schemas(user_schema, item_schema, "transformer", "paper")
    if candidate.startswith("mamba-"):
        return TwoTower.from_schemas(
            user_schema, item_schema, "mamba", "paper", kernels=candidate[6:]
        )
    model = TwoTower.from_schemas(user_schema, item_schema, "mamba", "paper")
    if candidate == "mambapy":
        c = model.config
        for tower in (model.user_tower, model.item_tower):
            tower.embedder = MambapyEmbedder(
                c.d_token, c.mamba_layers, c.d_state, c.d_conv, c.expand
            )
    return model


def time_steps(
    steps: dict[str, TrainStep],
    n_rows: int,
    batch_size: int,
    rounds: int,
    block: int,
    warmup: int,
    device: torch.device,
) -> dict[str, float]:
    """Median seconds per step of each candidate, candidates taking turns a block at a time."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for round_ in range(warmup + rounds):
        indices = [
            torch.randint(0, n_rows, (batch_size,), generator=generator).to(device)
            for _ in range(block)
        ]
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            for index in indices:
                step(index)
            sync()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) / block)
    return {k: statistics.median(v) for k, v in times.items()}


def profile_steps(
    step: TrainStep, n_rows: int, batch_size: int, n: int, device: torch.device
) -> str:
    """torch.profiler's table of the ops and kernels of ``n`` eager steps (a graph's replay hides
    its kernels), sorted by device time on CUDA."""
    from torch.profiler import ProfilerActivity, profile

    eager = type(step)(  # the candidate's own package's TrainStep
        step.model,
        step.optimizer,
        step.users,
        step.item_table,
        step.actions,
        step.rewards,
        batch_size,
    )
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(n):
            eager(torch.randint(0, n_rows, (batch_size,), device=device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=30, help="timed rounds per candidate")
    parser.add_argument(
        "--block", type=int, default=None, help="steps per turn (default: 1 on CPU, 20 on CUDA)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed rounds first (CUDA graphs are captured then)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        help="transformer, mamba, mamba-<kernel path>, mambapy, any of them +compile (default: "
        "transformer mamba "
        "mambapy on CPU; transformer mamba mamba-torch on CUDA)",
    )
    parser.add_argument("--no-cuda-graph", action="store_true", help="eager steps on CUDA")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=("fp32", "bf16"),
        default=["fp32"],
        help="training precision of each candidate; several: each candidate at each, side by "
        "side (a candidate at bf16 is named candidate-bf16)",
    )
    parser.add_argument(
        "--against",
        metavar="COMMIT",
        help="also time FT-Mamba and FT-Transformer as COMMIT built them, side by side",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after timing, profile N eager steps of each candidate and print its top kernels",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    candidates = args.candidates or (
        ["transformer", "mamba", "mamba-torch"]
        if device.type == "cuda"
        else ["transformer", "mamba", "mambapy"]
    )
    block = args.block or (20 if device.type == "cuda" else 1)
    graphs = device.type == "cuda" and not args.no_cuda_graph
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(
        f"{cpu.describe()}; torch {torch.__version__}, {where}, CUDA graphs "
        f"{'on' if graphs else 'off'}, median of {args.steps} rounds of {block} step(s) after "
        f"{args.warmup} warm-up rounds"
    )
    packages = {"": TODAY}
    if args.against:
        packages[f"@{args.against}"] = package_at(args.against)
    report: dict[str, dict[str, float]] = {}
    for name in shape_sets():
        for batch_size in args.batch_sizes:
            n_rows = max(4096, 4 * batch_size)
            user_fields = random_users(shape_sets()[name][0], n_rows, rng)
            actions = torch.as_tensor(
                rng.integers(0, len(shape_sets()[name][2]), n_rows), device=device
            )
            rewards = torch.as_tensor(
                rng.integers(-1, 2, n_rows), dtype=torch.float32, device=device
            )
            steps = {}
            for suffix, pkg in packages.items():
                user_schema, item_schema, item_table = shape_sets(pkg)[name]
                users = pkg.FeatureTensors.from_batch(pkg.Batch(*user_fields), device)
                items = pkg.FeatureTensors.from_batch(item_table, device)
                for candidate in candidates if not suffix else ("transformer", "mamba"):
                    for precision in args.precision if not suffix else ["fp32"]:
                        model = build_model(candidate, user_schema, item_schema, pkg).to(device)
                        optimizer = pkg.make_optimizer(model, lr=1e-4, capturable=graphs)
                        tag = "" if precision == "fp32" else f"-{precision}"
                        steps[candidate + tag + suffix] = pkg.TrainStep(
                            model,
                            optimizer,
                            users,
                            items,
                            actions,
                            rewards,
                            batch_size,
                            graphs,
                            **({"precision": precision} if tag else {}),
                        )
            t = time_steps(steps, n_rows, batch_size, args.steps, block, args.warmup, device)
            if args.profile:
                for candidate, step in steps.items():
                    print(
                        f"-- profile: {name}, batch {batch_size}, {candidate}\n"
                        + profile_steps(step, n_rows, batch_size, args.profile, device)
                    )
            key = f"{name}_b{batch_size}"
            report[key] = {f"{k}_ms": round(v * 1e3, 3) for k, v in t.items()}
            if "transformer" in t and "mamba" in t:
                report[key]["mamba_over_transformer"] = round(t["mamba"] / t["transformer"], 3)
            if "mambapy" in t and "mamba" in t:
                report[key]["mambapy_over_mamba"] = round(t["mambapy"] / t["mamba"], 2)
            for precision in args.precision:
                for candidate in ("transformer", "mamba"):
                    if precision != "fp32" and f"{candidate}-{precision}" in t:
                        report[key][f"{candidate}_{precision}_over_fp32"] = round(
                            t[f"{candidate}-{precision}"] / t[candidate], 3
                        )
                if precision != "fp32" and {
                    f"mamba-{precision}",
                    f"transformer-{precision}",
                } <= set(t):
                    report[key][f"mamba_over_transformer_{precision}"] = round(
                        t[f"mamba-{precision}"] / t[f"transformer-{precision}"], 3
                    )
            if args.against:
                for candidate in ("transformer", "mamba"):
                    report[key][f"{candidate}_over_{args.against}"] = round(
                        t[candidate] / t[f"{candidate}@{args.against}"], 3
                    )
            print(f"{key:14s} " + "  ".join(f"{k} {v}" for k, v in report[key].items()), flush=True)
    summary: dict[str, object] = {
        "device": where,
        "cpu": cpu.cpu_model(),
        "cpu_bf16_units": list(cpu.bf16_units()),
        "cuda_graphs": graphs,
    }
    for ratio, worst in (("mamba_over_transformer", max), ("mambapy_over_mamba", min)):
        values = [r[ratio] for r in report.values() if ratio in r]
        if values:
            summary[ratio] = worst(values)
    print(json.dumps({**summary, **report}))


if __name__ == "__main__":
    main()
