"""What the commands share: one error type for bad input, the parsers of option values, the
options generated from ``TrainConfig`` (one per run option) and the option groups several
commands take."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from recsim_ft.checks import check_int
from recsim_ft.data import InteractionLog
from recsim_ft.envs import make_env
from recsim_ft.models import PRESETS
from recsim_ft.parallel import check_address
from recsim_ft.train import Option, TrainConfig, run_options


class UsageError(Exception):
    """Bad user input: reported as one line, exit status 2."""


def parse_env_kwargs(values: Sequence[str] | None, option: str = "--env-kwargs") -> dict[str, Any]:
    """``--env-kwargs`` (or ``option``) as one JSON object or ``key=value`` pairs (values parsed
    as JSON when they are JSON, ``True``/``False``/``None`` as Python's, else kept as strings).

    >>> parse_env_kwargs(['{"clusters": 25}'])
    {'clusters': 25}
    >>> parse_env_kwargs(["clusters=25", "data_dir=/tmp/hm", "p_match=0.9"])
    {'clusters': 25, 'data_dir': '/tmp/hm', 'p_match': 0.9}
    >>> parse_env_kwargs(["cache=False", "n_items=None", "session=true"])
    {'cache': False, 'n_items': None, 'session': True}
    """
    if not values:
        return {}
    if len(values) == 1 and values[0].lstrip().startswith("{"):
        try:
            kwargs = json.loads(values[0])
        except json.JSONDecodeError as err:
            raise UsageError(
                f"{option} is not valid JSON ({err.msg} at column {err.colno}): {values[0]}"
            ) from None
        if not isinstance(kwargs, dict):
            raise UsageError(f"{option} must be a JSON object, got {values[0]}")
        return kwargs
    kwargs = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects a JSON object or key=value pairs, got {item!r}")
        if key in kwargs:
            raise UsageError(
                f"{option} sets {key} twice ({kwargs[key]!r} and {raw!r}); give it once"
            )
        if raw in _PYTHON_CONSTANTS:  # cache=False as Python spells it, beside JSON's false
            kwargs[key] = _PYTHON_CONSTANTS[raw]
            continue
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    return kwargs


_PYTHON_CONSTANTS = {"True": True, "False": False, "None": None}


def make_env_or_fail(env_id: str, kwargs: dict[str, Any]):
    """The env, or a usage error naming the bad id or the bad ``--env-kwargs`` argument (the env's
    own argument checks name it, e.g. ``clusters must be a positive integer, got 'abc' (str)``)."""
    try:
        return make_env(env_id, kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None


def load_log(path: str) -> InteractionLog:
    try:
        return InteractionLog.load(path)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None


def distinct(option: str, values: Sequence[Any]) -> None:
    """Refuse a list option that names a value twice: a sweep would count its runs twice."""
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise UsageError(
            f"{option} names {', '.join(map(repr, repeated))} more than once; give each value once"
        )


def positive_int(text: str) -> int:
    """argparse type of the count options: the text as an integer, checked like every count."""
    try:
        return check_int("the value", int(text), low=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def non_negative_int(text: str) -> int:
    """argparse type of the options that may be 0."""
    try:
        return check_int("the value", int(text), low=0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None


def format_metrics(metrics: dict[str, float]) -> str:
    return "\n".join(
        f"{k:>10s}  {v:.4f}" if isinstance(v, float) else f"{k:>10s}  {v}"
        for k, v in metrics.items()
    )


def add_training_options(p: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """One ``--the-name`` option (or ``Option.flag``, with its ``old_flags`` as deprecated
    aliases) per run option of ``TrainConfig`` (``recsim_ft.train.Option``: its help line, its
    parser, and its default, the preset's where a preset may set it), but those in ``exclude``;
    every default is None, so ``training_options`` passes only what was given."""
    for name, option in run_options().items():
        if name in exclude:
            continue
        add_option(
            p,
            option.flag or "--" + name.replace("_", "-"),
            *option.old_flags,
            dest=name,
            type=_argument_type(option.parse),
            choices=option.choices,
            metavar=option.metavar,
            nargs="+" if option.many else None if option.alone is None else "?",
            const=option.alone,
            default=None,
            help=f"{option.help} ({_default_text(name, option)})",
        )


def _default_text(name: str, option: Option) -> str:
    """``default: 32``, or for an option a preset may set, every preset's value."""

    def text(value: Any) -> str:
        if value is None:
            return option.none
        if name == "popularity_prior" and isinstance(value, bool):
            return "on" if value else "off"
        return " ".join(map(str, value)) if isinstance(value, tuple) else f"{value}"

    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
    if not option.preset:
        return f"default: {text(default)}"
    values = {preset: TrainConfig.from_preset(preset) for preset in PRESETS}
    differs = {p: getattr(c, name) for p, c in values.items() if getattr(c, name) != default}
    if not differs:
        return f"default: the preset's, {text(default)}"
    return "default: the preset's; " + ", ".join(
        f"{preset}: {text(value)}" for preset, value in {"paper": default, **differs}.items()
    )


def _argument_type(parse: Any) -> Any:
    """``parse`` as an argparse type: its ``ValueError`` becomes argparse's usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options given on the command line (``add_training_options``), by field name."""
    given = {name: getattr(args, name, None) for name in run_options()}
    return {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in given.items()
        if value is not None
    }


class DeprecatedName(argparse.Action):
    """An option's old name: stores as the option does, and says on stderr to use ``new``."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"recsim-ft: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_option(p: argparse.ArgumentParser, flag: str, *old: str, **kwargs: Any) -> None:
    """``p.add_argument(flag, **kwargs)``, and each ``old`` name of it as a hidden alias that
    still works, with a warning."""
    action = p.add_argument(flag, **kwargs)
    for name in old:
        alias = {k: v for k, v in kwargs.items() if k not in ("help", "action", "default", "dest")}
        p.add_argument(
            name,
            dest=action.dest,
            action=DeprecatedName,
            new=flag,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
            **alias,
        )


def env_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--env",
        required=required,
        help="env id, e.g. Spotify-v0, HMFashion-v0, VaccineMessaging-v0",
    )
    p.add_argument(
        "--env-kwargs",
        nargs="+",
        metavar="KWARGS",
        help="env kwargs as a JSON object ('{\"clusters\": 25}') or key=value pairs",
    )


@contextmanager
def training_cluster(address: str | None, workers: int | None) -> Iterator[None]:
    """Within the block, training on ``--workers`` joins the Ray cluster at ``address`` (through
    ``RAY_ADDRESS``, Ray's own variable, which every run's process inherits); restored after."""
    if address is None:
        yield
        return
    if workers is None:
        raise UsageError(f"--address {address} names the Ray cluster of --workers: give --workers")
    try:
        check_address(address)
    except (ValueError, ConnectionError) as err:
        raise UsageError(f"--address: {err}") from None
    before = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    try:
        yield
    finally:
        if before is None:
            del os.environ["RAY_ADDRESS"]
        else:
            os.environ["RAY_ADDRESS"] = before


def threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads per run (default: 1, or RECSIM_FT_THREADS; more threads pay only on "
        "an idle machine, see recsim_ft/threads.py)",
    )


def model_options(
    p: argparse.ArgumentParser, several_presets: bool = False, exclude: Sequence[str] = ()
) -> None:
    """The options of a run of the models: the preset, the run options of ``TrainConfig`` but
    ``exclude``, the logged events, model options, progress and threads."""
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=["paper"] if several_presets else "paper",
        nargs="+" if several_presets else None,
        help="the model and its training (default: paper, the paper's model and protocol; "
        "ranking: the paper's model trained for ranking, see recsim_ft.models.presets; "
        "quick: a small model)"
        + (
            "; several: one row per model and preset (e.g. --preset paper ranking)"
            if several_presets
            else ""
        ),
    )
    add_training_options(p, exclude)
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="logged events to collect per run (default: the paper's, 160000)",
    )
    p.add_argument(
        "--model",
        nargs="+",
        metavar="KWARGS",
        help="model options over the preset, JSON or key=value (e.g. mamba_residual=true)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    threads_option(p)
