"""What every example shares: the command-line flags, refusing to overwrite saved outputs, tables,
and a clear message when an optional dependency is missing.

Not part of the package: the examples import it as a sibling module (``python examples/x.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def needs_extra(extra: str) -> Iterator[None]:
    """Imports in this block come from recsim-ft's optional dependency group ``extra``: when one
    is missing the script stops with the command that installs it, not with a traceback."""
    try:
        yield
    except ModuleNotFoundError as err:
        raise SystemExit(
            f"{Path(sys.argv[0]).name} needs {err.name}, which comes with recsim-ft's '{extra}' "
            f'extra: pip install "recsim-ft[{extra}]" (in a clone of the repository: '
            f'pip install -e ".[{extra}]")'
        ) from None


def example_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the flags of every example: ``--smoke``, ``--seed``, ``--out``,
    ``--overwrite``."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny settings that run in seconds (a wiring check); flags you give still win",
    )
    parser.add_argument(
        "--seed",
        type=at_least(0),
        default=0,
        help="seed of the data, the weights and the test users",
    )
    parser.add_argument(
        "--out", type=Path, help="directory for the results table (CSV) and figures"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    return parser


def parse_example_args(
    parser: argparse.ArgumentParser, smoke: dict[str, object]
) -> argparse.Namespace:
    """The command line, where ``--smoke`` changes the defaults of the flags in ``smoke`` (keyed
    by destination) and never a value the user gave: ``--smoke --steps 50`` trains 50 steps."""
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args()
    return args


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``low``; argparse's error names the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def output_paths(out: Path | None, names: list[str], overwrite: bool) -> dict[str, Path]:
    """The files an example will write, checked before any work is done: an existing file is an
    error unless ``overwrite`` (nothing a user saved is replaced silently), and a figure needs
    matplotlib (the ``plot`` extra)."""
    if out is None:
        return {}
    if any(name.endswith(".png") for name in names):
        with needs_extra("plot"):
            import matplotlib  # noqa: F401  (pandas draws the figures with it)
    paths = {name: out / name for name in names}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise SystemExit(
            f"refusing to overwrite {existing}; pass --overwrite or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    return paths


def print_table(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title}\n{table.to_string(float_format=lambda x: f'{x:.3f}')}\n", flush=True)
