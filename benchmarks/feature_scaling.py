"""One tower's train step (forward + backward + Adam) and peak memory against the number of
feature tokens, FT-Mamba vs FT-Transformer, paper config.

    python benchmarks/feature_scaling.py [--tokens 16 64 256 1024 4096] [--batch-size 8] [--steps 3]
    python benchmarks/feature_scaling.py --device cuda --tokens 256 1024 4096 16384 --steps 10
    python benchmarks/feature_scaling.py --threads 1 --batch-size 32 --precision fp32 bf16 \
        --tokens 2 4 8 16 32 64 128 256 512 1024 2048 4096         # the crossover curve

On CPU each (embedder, n_tokens) runs in a fresh subprocess so its peak memory is its own:
memory is the growth of the process's peak resident set size (``ru_maxrss``) over the resident
size just before the first step, i.e. everything the step allocated (activations, gradients,
optimizer state), as the OS saw it. On CUDA it is the same growth of torch's peak allocated
device memory (reset per candidate, in one process). Time is the median of ``--steps`` steps
after one warm-up step (on CUDA between device synchronisations). Prints a table, the fitted
log-log exponents (time ~ tokens^k over the largest three sizes; wall and CPU time) and the
Transformer / Mamba ratios at 1,024 and 4,096 tokens, then one JSON line. With ``--precision fp32
bf16`` both models run at each precision (bf16: ``recsim_ft.precision``'s autocast, as the
trainer's ``--precision bf16``), and the JSON line gives per precision the crossover: the fewest
tokens from which FT-Mamba's step is faster than FT-Transformer's at every larger size measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def measure(
    embedder: str,
    n_tokens: int,
    batch_size: int,
    steps: int,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, float]:
    """One tower with ``n_tokens - 1`` numeric features + [CLS] (on CPU: in a child process)."""
    import torch

    from recsim_ft.models import FeatureTensors
    from recsim_ft.models.presets import make_config
    from recsim_ft.models.two_tower import Tower
    from recsim_ft.precision import autocast
    from recsim_ft.schema import Feature, Schema
    from recsim_ft.train import make_optimizer

    torch.manual_seed(0)
    schema = Schema(tuple(Feature(f"x{j}", "numeric") for j in range(n_tokens - 1)))
    config = make_config("paper", embedder)
    cuda = device.startswith("cuda")
    tower = Tower(schema, config).to(device)
    optimizer = make_optimizer(tower, lr=1e-4)
    x = FeatureTensors(
        torch.randn(batch_size, n_tokens - 1, device=device),
        torch.zeros(batch_size, 0, dtype=torch.int64, device=device),
    )
    target = torch.randn(batch_size, config.d_out, device=device)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/statm") as f:
            before = int(f.read().split()[1]) * resource.getpagesize()
    times, cpu_times = [], []
    for step in range(steps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        with autocast(precision, torch.device(device)):
            out = tower(x)
        loss = torch.nn.functional.mse_loss(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "seconds": statistics.median(times),
        "cpu_seconds": statistics.median(cpu_times),
        "peak_mib": max(peak - before, 0) / 2**20,
    }


def loglog_exponent(sizes: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32"], help="each, in turn"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("EMBEDDER", "TOKENS", "PRECISION"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        embedder, n_tokens, precision = args.child
        print(
            json.dumps(
                measure(embedder, int(n_tokens), args.batch_size, args.steps, "cpu", precision)
            )
        )
        return

    from recsim_ft import cpu

    results: dict[str, dict[int, dict[str, float]]] = {
        f"{e}{'' if p == 'fp32' else '-' + p}": {}
        for p in args.precision
        for e in ("mamba", "transformer")
    }
    print(
        f"{cpu.describe()}; {args.device}, batch {args.batch_size}, median of {args.steps} steps; "
        "memory = peak growth of the step"
    )
    for n in sorted(args.tokens):
        for candidate in results:  # interleaved, so background load hits all alike
            embedder, _, precision = candidate.partition("-")
            precision = precision or "fp32"
            if args.device != "cpu":
                results[candidate][n] = measure(
                    embedder, n, args.batch_size, args.steps, args.device, precision
                )
                continue
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    embedder,
                    str(n),
                    precision,
                    "--batch-size",
                    str(args.batch_size),
                    "--steps",
                    str(args.steps),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[candidate][n] = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{n:>6} tokens  "
            + "  ".join(
                f"{c} {r[n]['seconds']:.4f} s {r[n]['peak_mib']:.0f} MiB"
                for c, r in results.items()
            ),
            flush=True,
        )

    sizes = sorted(args.tokens)[-3:]
    summary: dict[str, object] = {
        "cpu": cpu.cpu_model(),
        "cpu_bf16_units": list(cpu.bf16_units()),
        "batch_size": args.batch_size,
        "results": {e: {str(n): r for n, r in res.items()} for e, res in results.items()},
    }
    for precision in args.precision:
        tag = "" if precision == "fp32" else "-" + precision
        mamba, transformer = results["mamba" + tag], results["transformer" + tag]
        faster = [mamba[n]["seconds"] < transformer[n]["seconds"] for n in sorted(args.tokens)]
        from_here = [all(faster[i:]) for i in range(len(faster))]
        summary[f"crossover_tokens_{precision}"] = (
            sorted(args.tokens)[from_here.index(True)] if any(from_here) else None
        )
    for embedder, res in results.items():
        for key in ("seconds", "cpu_seconds"):
            summary[f"{embedder}_{key}_exponent"] = round(
                loglog_exponent(sizes, [res[n][key] for n in sizes]), 3
            )
        summary[f"{embedder}_memory_exponent"] = round(
            loglog_exponent(sizes, [max(res[n]["peak_mib"], 1e-3) for n in sizes]), 3
        )
    results = {k: v for k, v in results.items() if k in ("mamba", "transformer")}
    for n in (1024, 4096):
        if n not in args.tokens or not results:
            continue
        for key in ("seconds", "cpu_seconds"):
            summary[f"transformer_over_mamba_{key}_at_{n}"] = round(
                results["transformer"][n][key] / results["mamba"][n][key], 3
            )
        summary[f"transformer_over_mamba_memory_at_{n}"] = round(
            results["transformer"][n]["peak_mib"] / max(results["mamba"][n]["peak_mib"], 1e-3), 3
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
