"""The ``recsim-ft`` command line: a thin layer over the library's envs, logs, models and
experiments.

One module per group of commands (``data``, ``runs``, ``competition``, ``sweeps``), each
command's parser beside its handler, each handler a call into the library; ``options`` holds
what they share, the training options generated from ``TrainConfig`` among them.

    recsim-ft collect   --env Spotify-v0 --n 160000 --seed 0 --out spotify.parquet
    recsim-ft params    --preset paper
    recsim-ft train     --env Spotify-v0 --embedder mamba --seed 0 --out runs/spotify-mamba
    recsim-ft evaluate  --run runs/spotify-mamba
    recsim-ft export    --run runs/spotify-mamba --out serving/spotify
    recsim-ft hm-competition --out results/competition
    recsim-ft reproduce --table 1 --settings spotify --seeds 2 --steps 1500 --out results/quick
    recsim-ft tune      --table 2 --settings k25_m25 --lrs 1e-5 1e-4 --seeds 2 --out results/tune
    recsim-ft info

Bad input (unknown env id, malformed kwargs, a missing file or run directory, an output that
already exists) ends with a one-line ``recsim-ft: error: ...`` and exit status 2. A count of
users is ``--users`` in every command (``--eval-users``, ``--n-users`` and ``--customers``
still work, with a warning).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from recsim_ft.cli import competition, data, runs, sweeps
from recsim_ft.cli.options import (
    UsageError,
    add_training_options,
    parse_env_kwargs,
    training_options,
)
from recsim_ft.cli.sweeps import DEFAULT_TUNE_LRS, parse_agent_params, parse_training_grid
from recsim_ft.threads import default_threads, use_threads

__all__ = [
    "DEFAULT_TUNE_LRS",
    "UsageError",
    "add_training_options",
    "build_parser",
    "main",
    "parse_agent_params",
    "parse_env_kwargs",
    "parse_training_grid",
    "training_options",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsim-ft", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for commands in (data, runs, competition, sweeps):
        commands.register(sub)
    return parser


def _threads_from_environment() -> int:
    try:
        return default_threads()
    except ValueError as err:
        raise UsageError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``recsim-ft``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's own usage errors (status 2)
        return int(exit_.code or 0)
    try:
        threads = getattr(args, "threads", None) or _threads_from_environment()
        with use_threads(threads):
            return args.func(args)
    except UsageError as err:
        print(f"recsim-ft: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as err:  # bad input found below the command layer
        if os.environ.get("RECSIM_FT_TRACEBACK"):
            raise
        print(
            f"recsim-ft: error: {err} (RECSIM_FT_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line on how to continue, no traceback
        print(
            args.interrupted(args) if hasattr(args, "interrupted") else "recsim-ft: interrupted",
            file=sys.stderr,
        )
        return 130
