"""One tower's train step (forward + backward + Adam) and peak memory against the number of
feature tokens, FT-Mamba vs FT-Transformer, paper config.

    python benchmarks/feature_scaling.py [--tokens 16 64 256 1024 4096] [--batch-size 8] [--steps 3]
    python benchmarks/feature_scaling.py --device cuda --tokens 256 1024 4096 16384 --steps 10

On CPU each (embedder, n_tokens) runs in a fresh subprocess so its peak memory is its own:
memory is the growth of the process's peak resident set size (``ru_maxrss``) over the resident
size just before the first step, i.e. everything the step allocated (activations, gradients,
optimizer state), as the OS saw it. On CUDA it is the same growth of torch's peak allocated
device memory (reset per candidate, in one process). Time is the median of ``--steps`` steps
after one warm-up step (on CUDA between device synchronisations). Prints a table, the fitted
log-log exponents (time ~ tokens^k over the largest three sizes; wall and CPU time) and the
Transformer / Mamba ratios at 1,024 and 4,096 tokens, then one JSON line.
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
    embedder: str, n_tokens: int, batch_size: int, steps: int, device: str = "cpu"
) -> dict[str, float]:
    """One tower with ``n_tokens - 1`` numeric features + [CLS] (on CPU: in a child process)."""
    import torch

    from recsim_ft.models import FeatureTensors
    from recsim_ft.models.presets import make_config
    from recsim_ft.models.two_tower import Tower
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
        loss = torch.nn.functional.mse_loss(tower(x), target)
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
    parser.add_argument("--child", nargs=2, metavar=("EMBEDDER", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.batch_size, args.steps)))
        return

    results: dict[str, dict[int, dict[str, float]]] = {"mamba": {}, "transformer": {}}
    print(
        f"{args.device}, batch {args.batch_size}, median of {args.steps} steps; "
        "memory = peak growth of the step"
    )
    print(
        f"{'tokens':>7} {'mamba s':>9} {'cpu s':>7} {'MiB':>7} "
        f"{'transf. s':>10} {'cpu s':>7} {'MiB':>7}"
    )
    for n in sorted(args.tokens):
        for embedder in results:  # interleaved, so background load hits both alike
            if args.device != "cpu":
                results[embedder][n] = measure(
                    embedder, n, args.batch_size, args.steps, args.device
                )
                continue
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    embedder,
                    str(n),
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
            results[embedder][n] = json.loads(out.stdout.strip().splitlines()[-1])
        m, t = results["mamba"][n], results["transformer"][n]
        print(
            f"{n:>7} {m['seconds']:>9.3f} {m['cpu_seconds']:>7.3f} {m['peak_mib']:>7.1f} "
            f"{t['seconds']:>10.3f} {t['cpu_seconds']:>7.3f} {t['peak_mib']:>7.1f}"
        )

    sizes = sorted(args.tokens)[-3:]
    summary: dict[str, object] = {
        "batch_size": args.batch_size,
        "results": {e: {str(n): r for n, r in res.items()} for e, res in results.items()},
    }
    for embedder, res in results.items():
        for key in ("seconds", "cpu_seconds"):
            summary[f"{embedder}_{key}_exponent"] = round(
                loglog_exponent(sizes, [res[n][key] for n in sizes]), 3
            )
        summary[f"{embedder}_memory_exponent"] = round(
            loglog_exponent(sizes, [max(res[n]["peak_mib"], 1e-3) for n in sizes]), 3
        )
    for n in (1024, 4096):
        if n not in args.tokens:
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
