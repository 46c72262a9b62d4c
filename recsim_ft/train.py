"""Train a two-tower model on an interaction log with the paper's protocol.

Defaults follow the paper: MSE between the predicted score and the logged reward, Adam, batch 32,
one pass over the log (160,000 samples = 5,000 steps) and the paper's learning rate for the env
(``recsim_ft.protocol``: 1e-4 for Spotify and H&M, 1e-5 for vaccine). Ranking metrics on the
env's test users (``recsim_ft.evaluate.evaluate``) are recorded every ``eval_every`` steps as a
curve. With ``out_dir`` the run saves its resume state (a *checkpoint*: weights, optimizer, RNG
and curve) every ``checkpoint_every`` steps and when it is interrupted (Ctrl-C), and
``resume=True`` continues from the last one to the same final weights and metrics, bit for bit,
as an uninterrupted run with the same seed.

>>> import gymnasium as gym
>>> from recsim_ft.data import collect
>>> from recsim_ft.models import TwoTower
>>> env = gym.make("Spotify-v0")
>>> log = collect(env, n=640, seed=0)  # 640 rows = 20 steps of 32
>>> model = TwoTower.from_env(env, "mlp", "quick")
>>> result = train(model, log, env, TrainConfig(eval_every=10), progress=False)
>>> result.curve[["step", "HR@1"]].shape, result.config.lr
((3, 2), 0.0001)
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from torch import nn

from recsim_ft.checks import check_choice, check_float, check_int
from recsim_ft.data import InteractionLog
from recsim_ft.evaluate import evaluate
from recsim_ft.fileio import atomic_path
from recsim_ft.losses import (
    FULL_SOFTMAX_MAX_ITEMS,
    LOSSES,
    NEGATIVES,
    check_loss_log,
    check_popularity_prior,
    in_batch_softmax_loss,
    pair_loss,
    resolve_popularity_prior,
    softmax_loss,
    softmax_negatives,
)
from recsim_ft.metrics import metric_names
from recsim_ft.models import FeatureTensors, TwoTower
from recsim_ft.models.presets import preset_of
from recsim_ft.parallel import SPARSE_ROWS, DataParallel, train_on_ray
from recsim_ft.precision import PRECISIONS, autocast, resolve_precision
from recsim_ft.progress import progress_bar
from recsim_ft.protocol import DEFAULT_PROTOCOL, SPLITS, Protocol, protocol_for
from recsim_ft.schema import Batch
from recsim_ft.threads import torch_threads

#: What ``train(progress=...)`` takes: ``True`` draws a progress bar, ``False`` draws none, ``None``
#: draws one where a user can see it (a terminal or a notebook) and elsewhere (a log file, a
#: captured stream) writes a line every 10 seconds once training has lasted that long
#: (``recsim_ft.progress``), and a function is called as ``progress(steps_done, steps_total)``
#: when training starts and after every step (how a sweep's worker processes report to the
#: sweep's bars).
Progress = bool | None | Callable[[int, int], None]

#: File name of the checkpoint (the resume state) inside ``out_dir``.
CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_VERSION = 3  # 3: the log's fingerprint is InteractionLog.content_digest()
#: Learning-rate schedules: ``constant`` (the paper's), or ``cosine``: a linear warm-up over the
#: first 5% of the steps, then a cosine decay towards 0 over the rest (see :func:`scheduled_lr`).
SCHEDULES = ("constant", "cosine")
#: How the rows of the id tables (embedding tables of ``SPARSE_ROWS`` rows or more, such as H&M's
#: 105,542 articles) are updated: ``dense``, Adam over the whole table every step (the rows the
#: batch did not touch move too, by their momentum); ``sparse``, row-wise: their gradients are
#: sparse and ``torch.optim.SparseAdam`` updates only the rows the batch touched ("lazy" Adam, as
#: large recommenders train their id tables), so a step's cost no longer grows with the table.
ID_UPDATES = ("dense", "sparse")
#: Settings that must match for a checkpoint to be resumed (the rest only changes speed or logging).
_RESUME_KEYS = (
    "precision",
    "loss",
    "temperature",
    "negatives",
    "uniform_negatives",
    "popularity_prior",
    "workers",
    "id_updates",
    "lr",
    "schedule",
    "batch_size",
    "steps",
    "seed",
    "eval_every",
    "eval_users",
    "eval_seed",
    "eval_split",
    "ks",
    "metrics",
    "select_metric",
    "select_users",
)


@dataclass(frozen=True)
class Option:
    """How a :class:`TrainConfig` field is set from outside the trainer; a field without one is
    set per run by the caller (seeds) or only in code.

    Such a field is a *run option*: a ``RunSpec`` carries it (saved in a run's ``config.json``)
    and the commands ``train``, ``reproduce`` and ``tune`` take it as ``--the-name``, with
    ``help`` and the default the command line adds to it. ``preset``: a preset's training may set
    it (``recsim_ft.models.presets.Preset.training``); ``tune --grid`` searches it, and a run
    directory's name carries ``tag`` and the value where it differs from the preset's
    (``tag=None``: ``RunSpec.row`` names it instead). ``parse`` reads the command line's text
    (raising ``ValueError``); ``none`` says what ``None`` means; ``many``: one or more values;
    ``alone``: the text the option stands for when given without a value; ``flag``: its name on
    the command line where it is not ``--the-name``, ``old_flags`` earlier names that still
    work, with a warning.
    """

    help: str
    parse: Callable[[str], Any] = str
    preset: bool = False
    tag: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    many: bool = False
    none: str = "none"
    alone: str | None = None
    flag: str | None = None
    old_flags: tuple[str, ...] = ()


def _option(default: Any, help: str, **option: Any) -> Any:
    """A ``TrainConfig`` field that is a run option (:class:`Option`)."""
    return field(default=default, metadata={"option": Option(help, **option)})


def parse_count(text: str, low: int = 1) -> int:
    """A count on the command line: an integer of at least ``low``.

    >>> parse_count("32"), parse_count("0", low=0)
    (32, 0)
    """
    try:
        return check_int("the value", int(text), low=low)
    except ValueError:
        expected = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"expected {expected}, got {text!r}") from None


def parse_popularity_prior(text: str) -> bool | str:
    """``on``, ``off`` or ``auto`` as ``TrainConfig.popularity_prior`` takes it."""
    values = {"on": True, "off": False, "auto": "auto"}
    if text not in values:
        raise ValueError(f"expected one of on, off, auto, got {text!r}")
    return values[text]


@dataclass
class TrainConfig:
    """Every setting of a training run, and the one place each is declared: its default, its
    check (:meth:`check`) and, for a run option, its help line (:class:`Option`, in the field's
    metadata), from which ``RunSpec`` and the command line's options are made. ``None`` means
    "the paper's protocol for this env" (``recsim_ft.protocol``).

    ``lr=None`` takes the protocol's learning rate; ``steps=None`` makes one pass over the log
    (longer runs reshuffle every pass). ``eval_every=None`` / ``checkpoint_every=None`` evaluate /
    checkpoint only at the end. ``metrics`` and ``ks`` go to ``recsim_ft.metrics.ranking_metrics``;
    ``metrics=None`` is the protocol's (every family, plus H&M's Kaggle MAP@12), as
    ``recsim_ft.evaluate`` uses. ``eval_split="validation"`` evaluates on ``env.validation_users``
    instead of the test users (for choosing hyperparameters, as ``recsim-ft tune`` does).
    ``cuda_graph``: on CUDA, replay
    each training step as a captured CUDA graph (see :class:`TrainStep`); no effect on CPU.
    ``threads``: torch's CPU threads while training (None: ``recsim_ft.threads.default_threads``,
    one unless ``RECSIM_FT_THREADS`` says otherwise; see that module for why).
    ``workers``: train data-parallel on that many Ray Train workers, each with ``threads``
    threads (``recsim_ft.parallel`` says how the batch, the learning rate and the seeds go).
    ``id_updates``: how the id tables' rows are updated, see ``ID_UPDATES``.
    ``loss``: ``"mse"`` (the paper's), ``"bce"`` or ``"softmax"`` with its ``temperature`` and
    ``negatives`` (``"auto"``, ``"catalogue"`` or ``"batch"``: in-batch with the logQ
    correction), with ``uniform_negatives`` items drawn uniformly per step mixed into the
    in-batch negatives; ``popularity_prior`` (softmax only) adds the log's popularity ``log q``
    to every item's logit, so the towers learn what popularity does not explain and the model
    ranks by its scores plus ``T log q`` (``TwoTower.item_prior``); ``"auto"``: only with
    in-batch negatives (``recsim_ft.losses.resolve_popularity_prior``; the result's config says
    what was run); ``recsim_ft.losses`` has their equations. ``schedule``: see ``SCHEDULES``.
    ``precision``: ``"fp32"``, ``"bf16"`` (the towers' matrix products in bfloat16 under
    autocast; weights, Adam, losses and the Mamba scan in float32) or ``"auto"`` (bf16 only where
    the CPU has AMX or AVX512-BF16, or on a CUDA device with bf16; see ``recsim_ft.precision``).
    ``select_metric`` (e.g. ``"NDCG@10"``, one of the evaluated metrics): early stopping; at
    every evaluation the model is also scored on ``select_users`` validation users, drawn with a
    seed of their own and never the users that score the run (``RecEnv.selection_users``; so a
    run evaluated on validation users, as ``tune``'s are, is not scored on the users that chose
    its weights, and on H&M's finite pool of customers no test user chooses), and the run ends
    with the weights of the evaluation where that metric was highest (the earliest on a tie),
    its metrics the final ones; ``None`` or ``"none"``: the last step's weights.
    ``TrainConfig.from_preset("ranking")`` is the training of a preset
    (``recsim_ft.models.presets.PRESETS``).

    The run options with a ``tag`` come first, in the order a run directory's name lists them.
    """

    lr: float | None = _option(
        None,
        "learning rate",
        parse=float,
        preset=True,
        tag="lr",
        metavar="LR",
        none="the paper's for the env, see recsim_ft.protocol",
    )
    batch_size: int = _option(
        32, "training batch size", parse=parse_count, preset=True, tag="b", metavar="N"
    )
    loss: str = _option(
        "mse",
        "the two-tower models' training loss (see recsim_ft.losses)",
        preset=True,
        tag="",
        choices=LOSSES,
    )
    temperature: float = _option(
        1.0, "temperature of the softmax loss", parse=float, preset=True, tag="t", metavar="T"
    )
    uniform_negatives: int = _option(
        0,
        "items drawn uniformly per step and mixed into the in-batch softmax's negatives "
        "(see recsim_ft.losses)",
        parse=partial(parse_count, low=0),
        preset=True,
        tag="u",
        metavar="N",
    )
    schedule: str = _option(
        "constant", "learning-rate schedule", preset=True, tag="", choices=SCHEDULES
    )
    steps: int | None = _option(
        None,
        "training steps",
        parse=parse_count,
        preset=True,
        tag="s",
        metavar="N",
        none="one pass over the log, 5000 for 160000 events",
    )
    negatives: str = _option(
        "auto",
        "the softmax's negatives: the whole catalogue, the batch's items (with the logQ "
        "correction), or auto: the catalogue up to 4,096 items (see recsim_ft.losses)",
        preset=True,
        tag="neg",
        choices=NEGATIVES,
    )
    workers: int | None = _option(
        None,
        "train data-parallel on N Ray Train workers (the ray extra; the batch is divided among "
        "them, the learning rate stays; see recsim_ft.parallel)",
        parse=parse_count,
        tag="w",
        metavar="N",
        none="one process, without Ray",
    )
    id_updates: str = _option(
        "dense",
        "how the id tables' rows are updated: dense (Adam over every row) or sparse (only the "
        "rows a batch touched, SparseAdam: a step's cost no longer grows with the catalogue)",
        preset=True,
        tag="ids",
        choices=ID_UPDATES,
    )
    popularity_prior: bool | str = _option(
        False,
        "on: the softmax's logits carry the log's popularity log q, the towers learn what "
        "popularity does not explain and the model ranks by its scores plus T log q; auto: on "
        "only with in-batch negatives (catalogues beyond 4,096 items) (see recsim_ft.losses)",
        parse=parse_popularity_prior,
        preset=True,
        metavar="{on,off,auto}",
        alone="on",
    )
    select_metric: str | None = _option(
        None,
        "early stopping: at every evaluation also score 400 validation users (never the users "
        "that score the run) and end with the weights where this metric (e.g. NDCG@10) was "
        "highest; none: the last step's weights",
        preset=True,
        metavar="METRIC",
    )
    precision: str = _option(
        "fp32",
        "the two-tower models' training precision (bf16: matrix products in bfloat16, weights "
        "and the Mamba scan in float32; auto: bf16 where the CPU has AMX or AVX512-BF16 or on a "
        "CUDA GPU with bf16, else fp32; recsim-ft info says which)",
        preset=True,
        choices=PRECISIONS,
    )
    eval_every: int | None = _option(
        500, "evaluate every N steps", parse=parse_count, none="only at the end", metavar="N"
    )
    eval_users: int = _option(
        100,
        "users to evaluate on",
        parse=parse_count,
        metavar="N",
        flag="--users",
        old_flags=("--eval-users",),
    )
    eval_split: str = _option(
        "test",
        "the users to evaluate on: test (reported results) or validation (choosing "
        "hyperparameters, as recsim-ft tune does)",
        choices=SPLITS,
    )
    ks: tuple[int, ...] = _option(
        (1, 5, 10),
        "cut-offs of the evaluation metrics, at most the number of items",
        parse=parse_count,
        many=True,
        metavar="K",
    )
    device: str = _option("cpu", "cpu or cuda")
    seed: int = 0
    eval_seed: int = 0
    metrics: tuple[str, ...] | None = None
    checkpoint_every: int | None = 1000
    cuda_graph: bool = True
    threads: int | None = None
    select_users: int = 400

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> TrainConfig:
        """The training of ``preset`` (``recsim_ft.models.presets.PRESETS``), with any field
        overridden.

        >>> TrainConfig.from_preset("ranking", steps=10).loss, TrainConfig.from_preset("paper").loss
        ('softmax', 'mse')
        """
        return cls(**{**preset_of(preset).training, **overrides})

    def checked(self, protocol: Protocol = DEFAULT_PROTOCOL) -> TrainConfig:
        """A copy with every value checked, and numbers as Python's ``int`` and ``float`` (so it
        saves as JSON); ``protocol``: the metrics ``select_metric`` may name. The error names the
        field and the value."""
        check_choice("loss", self.loss, LOSSES)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("negatives", self.negatives, NEGATIVES)
        check_popularity_prior(self.loss, self.popularity_prior)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("id_updates", self.id_updates, ID_UPDATES)
        check_choice("eval_split", self.eval_split, SPLITS)
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ValueError(
                f"device must be a torch device such as 'cpu' or 'cuda', got {self.device!r}"
            ) from None
        ks = tuple(check_int("ks", k, low=1) for k in self.ks)
        batch_size = check_int("batch_size", self.batch_size, low=1)
        workers = check_int("workers", self.workers, low=1, allow_none=True)
        if workers is not None and batch_size % workers:
            raise ValueError(
                f"batch_size={batch_size} does not divide among workers={workers}: each worker "
                "takes an equal share of every batch; choose a multiple of the workers"
            )
        temperature = check_float("temperature", self.temperature, low=0, low_open=True)
        if temperature < np.finfo(np.float32).tiny:  # logits / T would be inf, the loss nan
            raise ValueError(
                f"temperature={self.temperature!r} underflows float32, in which the loss is "
                f"computed (smallest normal {np.finfo(np.float32).tiny:.3g}); use a larger one"
            )
        if self.select_metric not in (None, "none"):
            metrics = protocol.metrics if self.metrics is None else self.metrics
            check_choice("select_metric", self.select_metric, metric_names(metrics, ks))
        return replace(
            self,
            lr=check_float("lr", self.lr, low=0, low_open=True, allow_none=True),
            batch_size=batch_size,
            workers=workers,
            temperature=temperature,
            uniform_negatives=check_int("uniform_negatives", self.uniform_negatives, low=0),
            steps=check_int("steps", self.steps, low=1, allow_none=True),
            eval_every=check_int("eval_every", self.eval_every, low=1, allow_none=True),
            eval_users=check_int("eval_users", self.eval_users, low=1),
            ks=ks,
            checkpoint_every=check_int(
                "checkpoint_every", self.checkpoint_every, low=1, allow_none=True
            ),
            threads=check_int("threads", self.threads, low=1, allow_none=True),
            select_users=check_int("select_users", self.select_users, low=1),
        )

    def evaluation_users(self, env: gym.Env) -> tuple[Batch, Batch | None]:
        """The users the run is scored on during training (``eval_users`` of ``eval_split``) and,
        when it selects its weights (``select_metric``), the validation users it selects on:
        drawn before any step, so a pool too small for either is refused by the option's name
        (call it before collecting data to learn that first)."""
        rec_env = env.unwrapped
        try:
            scoring = rec_env.eval_users(self.eval_split, self.eval_users, self.eval_seed)
        except ValueError as err:
            raise ValueError(
                f"eval_users={self.eval_users} ({self.eval_split} users): {err}"
            ) from None
        if self.select_metric in (None, "none"):
            return scoring, None
        # a seed of their own, never the scoring users
        seed = int(np.random.SeedSequence([self.eval_seed, 1]).generate_state(1)[0])
        try:
            selecting = rec_env.selection_users(
                self.select_users, seed, self.eval_split, self.eval_users, self.eval_seed
            )
        except ValueError as err:
            raise ValueError(
                f"select_users={self.select_users} (validation users of select_metric="
                f"{self.select_metric!r}, besides eval_users={self.eval_users}): {err}"
            ) from None
        return scoring, selecting

    def resolve(self, n_samples: int, protocol: Protocol = DEFAULT_PROTOCOL) -> TrainConfig:
        """A checked copy (:meth:`checked`) with every ``None`` default taken from ``protocol``
        (and ``steps`` from the log's ``n_samples``)."""
        config = self.checked(protocol)
        if n_samples < config.batch_size:
            raise ValueError(
                f"the log has {n_samples} rows, fewer than batch_size={config.batch_size}"
            )
        return replace(
            config,
            lr=protocol.lr if config.lr is None else config.lr,
            steps=n_samples // config.batch_size if config.steps is None else config.steps,
            metrics=tuple(protocol.metrics if config.metrics is None else config.metrics),
            select_metric=None if config.select_metric == "none" else config.select_metric,
            precision=resolve_precision(config.precision, torch.device(config.device))[0],
        )


def run_options() -> dict[str, Option]:
    """The run options of ``TrainConfig`` (:class:`Option`) by field name, in field order."""
    return {f.name: f.metadata["option"] for f in fields(TrainConfig) if "option" in f.metadata}


#: The run options a preset's training may set (``Option.preset``), which ``tune --grid``
#: searches.
PRESET_FIELDS = tuple(name for name, option in run_options().items() if option.preset)


@dataclass
class TrainResult:
    """The trained model, its curve (one row per evaluation: step, mean training loss since the
    previous row, metrics) and the final metrics; timing covers this call only."""

    model: nn.Module
    curve: pd.DataFrame
    metrics: dict[str, float]
    config: TrainConfig
    wall_time_s: float
    steps_per_s: float
    checkpoint: Path | None = field(default=None)
    #: with ``config.select_metric``: the step whose weights the model has
    best_step: int | None = None


def make_optimizer(
    model: nn.Module, lr: float | torch.Tensor, capturable: bool = False, id_updates: str = "dense"
) -> torch.optim.Optimizer | RowWiseAdam:
    """The trainer's Adam: torch's fused implementation (one kernel for all parameters instead of
    a loop over them, so small models spend less time in the optimizer; same update rule).
    ``capturable``: its step count lives on the device, so a CUDA graph can capture the step.
    A tensor ``lr`` can be changed in place between steps (a schedule), also under a CUDA graph.
    ``id_updates="sparse"``: the id tables (:func:`id_tables`) get ``SparseAdam`` instead, in a
    :class:`RowWiseAdam`; train under :func:`row_wise_ids`, which gives them sparse gradients."""
    tables = [t.weight for t in id_tables(model)] if id_updates == "sparse" else []
    dense = [p for p in model.parameters() if not any(p is t for t in tables)]
    adam = torch.optim.Adam(dense, lr=lr, fused=True, capturable=capturable)
    return RowWiseAdam(adam, torch.optim.SparseAdam(tables, lr=lr)) if tables else adam


class RowWiseAdam:
    """Adam for the dense parameters and ``SparseAdam`` for the id tables, as one optimizer
    (``id_updates="sparse"``); both read the same learning rate (a schedule's tensor)."""

    def __init__(self, dense: torch.optim.Optimizer, rows: torch.optim.SparseAdam) -> None:
        self.parts = (dense, rows)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.parts for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, part_state in zip(self.parts, state["parts"], strict=True):
            part.load_state_dict(part_state)


def id_tables(model: nn.Module) -> list[nn.Embedding]:
    """The model's id tables: embeddings of ``SPARSE_ROWS`` rows or more (H&M's articles)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.Embedding) and m.num_embeddings >= SPARSE_ROWS
    ]


@contextmanager
def row_wise_ids(model: nn.Module, on: bool = True) -> Iterator[None]:
    """Within the block (``on``), the id tables give sparse gradients, of the rows a batch
    looked up only (``id_updates="sparse"``); after it, dense ones again."""
    tables = id_tables(model) if on else []
    for table in tables:
        table.sparse = True
    try:
        yield
    finally:
        for table in tables:
            table.sparse = False


def scheduled_lr(schedule: str, lr: float, step: int, steps: int) -> float:
    """The learning rate of step ``step`` (1, ..., ``steps``): a pure function of the step, so a
    resumed run needs no scheduler state.

    >>> [round(scheduled_lr("cosine", 1.0, s, 40), 3) for s in (1, 2, 3, 40)]
    [0.5, 1.0, 1.0, 0.002]
    """
    if schedule == "constant":
        return lr
    warmup = max(1, steps // 20)
    if step <= warmup:
        return lr * step / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup - 1) / (steps - warmup)))


class TrainStep:
    """One optimisation step on log rows ``index``: the ``loss`` of the batch
    (``recsim_ft.losses``: MSE of the logged pairs' scores against the rewards by default),
    backward, Adam. Returns the loss as a device tensor, without waiting for a
    GPU; on CUDA it is one buffer that the next step overwrites.

    With ``cuda_graph=True`` the first ``EAGER_STEPS`` steps run as usual (on a side stream, as
    CUDA graph capture requires), then one step is captured as a CUDA graph and every later step
    replays it: the same kernels on the same memory, without Python or launch overhead. The
    batch enters through a fixed index buffer, so the graph reads each new batch.
    """

    EAGER_STEPS = 3

    def __init__(
        self,
        model: TwoTower,
        optimizer: torch.optim.Optimizer,
        users: FeatureTensors,
        item_table: FeatureTensors,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        batch_size: int,
        cuda_graph: bool = False,
        loss: str = "mse",
        temperature: float = 1.0,
        log_q: torch.Tensor | None = None,
        uniform_negatives: int = 0,
        precision: str = "fp32",
        in_batch: bool | None = None,
        popularity_prior: bool = False,
        parallel: DataParallel | None = None,
    ) -> None:
        self.model, self.optimizer, self.parallel = model, optimizer, parallel
        # the forward's matrix products in bf16 (autocast), weights, Adam and losses in float32
        self.autocast = partial(autocast, precision, actions.device)
        # log_q: the items' log-frequencies among the softmax's rows, which the in-batch softmax
        # and the popularity prior need; in_batch (default: whether log_q is given): negatives
        # from the batch, else the catalogue
        self.loss_kind, self.temperature, self.log_q = loss, temperature, log_q
        self.in_batch = log_q is not None if in_batch is None else in_batch
        self.popularity_prior = popularity_prior
        self.uniform_negatives = uniform_negatives
        self.users, self.item_table, self.actions, self.rewards = (
            users,
            item_table,
            actions,
            rewards,
        )
        device = actions.device
        self.index = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self.loss = torch.zeros((), device=device)
        self.cuda_graph, self.eager_steps = cuda_graph, 0
        self.side_stream = torch.cuda.Stream(device) if cuda_graph else None
        self.graph: torch.cuda.CUDAGraph | None = None

    def _step(self) -> torch.Tensor:
        index = self.index
        users, actions, rewards = _rows(self.users, index), self.actions[index], self.rewards[index]
        model, low_precision = self.model, self.autocast  # the towers under it, the losses not
        if self.loss_kind == "softmax" and self.in_batch:
            uniform = uniform_embeddings = None
            if self.uniform_negatives:  # from the run's RNG: a resumed run draws the same items
                uniform = torch.randint(
                    len(self.log_q), (self.uniform_negatives,), device=actions.device
                )
                with low_precision():
                    uniform_embeddings = model.item_tower(_rows(self.item_table, uniform))
            with low_precision():
                user_embeddings = model.user_tower(users)
                item_embeddings = model.item_tower(_rows(self.item_table, actions))
            first_row = 0
            if self.parallel is not None:  # every worker's users against the whole batch's items
                item_embeddings, actions, first_row = self.parallel.gather(item_embeddings, actions)
            loss = in_batch_softmax_loss(
                user_embeddings,
                item_embeddings,
                actions,
                rewards,
                self.log_q,
                self.temperature,
                uniform,
                uniform_embeddings,
                self.popularity_prior,
                first_row,
            )
        elif self.loss_kind == "softmax":
            with low_precision():
                user_embeddings = model.user_tower(users)
                if self.parallel is None:
                    item_embeddings = model.item_tower(self.item_table)
                else:  # each worker embeds its share of the catalogue
                    item_embeddings = self.parallel.embed_shared(
                        lambda rows: model.item_tower(_rows(self.item_table, rows)),
                        self.item_table.n_rows,
                    )
            loss = softmax_loss(
                user_embeddings,
                item_embeddings,
                actions,
                rewards,
                self.temperature,
                self.log_q if self.popularity_prior else None,
            )
        else:
            with low_precision():
                scores = model.score_logged(users, actions, self.item_table)
            loss = pair_loss(self.loss_kind, scores, rewards)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.parallel is not None:
            loss = self.parallel.average(self.model, loss)
        self.optimizer.step()
        return loss.detach()

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graph:
            self.index = index
            return self._step()
        self.index.copy_(index)
        if self.graph is None:
            self.side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side_stream):
                self.loss.copy_(self._step())
            torch.cuda.current_stream().wait_stream(self.side_stream)
            self.eager_steps += 1
            if self.eager_steps == self.EAGER_STEPS:
                self.optimizer.zero_grad(set_to_none=True)  # the graph owns the gradients it writes
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.loss.copy_(self._step())
        else:
            self.graph.replay()
        return self.loss


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={name!r} was asked for but CUDA is not available; use device='cpu'"
        )
    return device


def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one pass, a pure function of (seed, epoch), so a resumed run needs no
    state."""
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    )
    return torch.randperm(n, generator=generator)


def _rows(features: FeatureTensors, index: torch.Tensor) -> FeatureTensors:
    return FeatureTensors(*(t[index] for t in features))


class _ModelScorer:
    """The model in training as an agent for ``recsim_ft.evaluate.evaluate``: it scores every
    item of the log's item table."""

    def __init__(self, model: TwoTower, item_table: FeatureTensors) -> None:
        self.model, self.item_table = model, item_table

    def score_items(self, users: Batch) -> np.ndarray:
        with torch.no_grad():
            return self.model.score_all(users, self.item_table).float().cpu().numpy()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write under a temporary name, then rename: a kill never leaves a half-written checkpoint
    (and Ctrl-C mid-write leaves no temporary file behind)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, config: TrainConfig, log_digest: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["version"]
    except Exception as err:  # torch raises many kinds for a damaged file; all mean the same here
        raise ValueError(
            f"checkpoint {path} is corrupted or not a recsim-ft checkpoint ({err}); "
            "delete it to train from scratch"
        ) from err
    return _checked_checkpoint(state, path, config, log_digest)


def _checked_checkpoint(
    state: dict[str, Any], path: Path | None, config: TrainConfig, log_digest: str
) -> dict[str, Any]:
    """``state``, refused unless this run (``config``, the log's digest) can resume it."""
    version = state["version"]
    if version != _CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has version {version}, this recsim-ft reads {_CHECKPOINT_VERSION}; "
            "delete it to train from scratch, or resume with the recsim-ft version that wrote it"
        )
    saved, wanted = state["config"], asdict(config)
    saved.setdefault("eval_split", "test")  # checkpoints written before validation splits existed
    saved.setdefault("loss", "mse")  # and before the losses
    saved.setdefault("temperature", 1.0)
    saved.setdefault("negatives", "auto")
    saved.setdefault("schedule", "constant")  # and before the schedules
    saved.setdefault("uniform_negatives", 0)
    saved.setdefault("popularity_prior", False)
    saved.setdefault("select_metric", None)  # and before early stopping
    saved.setdefault("select_users", 400)
    saved.setdefault("precision", "fp32")  # and before the precisions
    saved.setdefault("workers", None)  # and before training on several workers
    saved.setdefault("id_updates", "dense")  # and before row-wise id updates
    changed = [k for k in _RESUME_KEYS if _plain(saved[k]) != _plain(wanted[k])]
    if state["log_digest"] != log_digest:
        changed.append("the training log")
    if changed:
        raise ValueError(
            f"cannot resume from {path}: the run settings differ in {changed}; "
            "use another out_dir or the original settings"
        )
    return state


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


class _CtrlCAtStepEnd:
    """Within this block the first Ctrl-C (SIGINT) only sets ``requested``, so that training stops
    between two steps, where weights, optimizer, RNG and curve agree and can be checkpointed; a
    second Ctrl-C stops at once. Only in the main thread and only over Python's own handler
    (elsewhere Ctrl-C, or its absence, is left as it is)."""

    def __enter__(self) -> _CtrlCAtStepEnd:
        self.requested, self.previous = False, None
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            signal.default_int_handler(signum, frame)
        self.requested = True

    def __exit__(self, *exc_info: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(
    model: TwoTower,
    log: InteractionLog,
    env: gym.Env | None,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Progress = None,
    allow_env_mismatch: bool = False,
    address: str | None = None,
) -> TrainResult:
    """Fit ``model`` to ``log`` by MSE on the logged rewards; evaluate on ``env``'s test users.

    ``env`` must be the env the log was collected in (same id and kwargs), or a model trained on
    one problem would be scored on another; ``allow_env_mismatch=True`` accepts another env
    with the same features. The model must have the log's features. ``env=None`` trains on a
    log of no env (e.g. the H&M competition's transactions): nobody to evaluate or select on,
    so ``select_metric`` must be none, and the curve holds the training loss only.
    ``resume=True`` continues from ``out_dir/checkpoint.pt`` when it exists (a finished run
    returns at once) and starts from scratch when it does not; without ``resume`` an existing
    checkpoint is an error rather than silently replaced. Ctrl-C stops training at the end of
    the step under way, writes the checkpoint of that step (with ``out_dir``) and raises
    ``KeyboardInterrupt``. ``progress``: see :data:`Progress`. Randomness during training comes
    from ``config.seed`` only; the caller's global torch RNG is left untouched. The model's
    initial weights are the caller's business (``TwoTowerAgent`` seeds them from ``config.seed``).
    ``config.workers``: data-parallel on that many Ray Train workers (``recsim_ft.parallel``), on
    the cluster at ``address`` (else ``RAY_ADDRESS``, else a local runtime); the model is
    trained in place as in one process, and this process writes ``out_dir``.
    """
    config = config or TrainConfig()
    if config.workers is None:
        if address is not None:
            raise ValueError(
                f"address={address!r} names the Ray cluster to train on, and this run has no "
                "workers: set workers too"
            )
        return _train(model, log, env, config, out_dir, resume, progress, allow_env_mismatch)
    resolved = _prepared(model, log, env, config, allow_env_mismatch)[0]  # errors before Ray
    checkpoint = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if checkpoint is not None and checkpoint.exists():
        if not resume:
            raise _existing_checkpoint(checkpoint)
        _load_checkpoint(checkpoint, resolved, log.content_digest())  # refused here, by name
    report = progress if callable(progress) else None
    bar = progress_bar(
        False if report is not None else progress, total=resolved.steps, desc="train", unit="step"
    )
    with bar:
        result = train_on_ray(
            _train,
            model,
            log,
            env,
            config,
            checkpoint,
            resume,
            report or (lambda step, total: bar.update(step - bar.n)),
            address,
            out_dir=out_dir,
            progress=None,
            allow_env_mismatch=allow_env_mismatch,
        )
    trained = result.model
    model.set_item_prior(trained.item_prior if len(trained.item_prior) else None, trained.catalogue)
    model.load_state_dict(trained.state_dict())
    return replace(result, model=model.eval(), checkpoint=checkpoint)


def _existing_checkpoint(checkpoint: Path) -> FileExistsError:
    return FileExistsError(
        f"{checkpoint} already exists; pass resume=True to continue that run, "
        "or use another out_dir"
    )


def _prepared(
    model: TwoTower,
    log: InteractionLog,
    env: gym.Env | None,
    config: TrainConfig,
    allow_env_mismatch: bool,
) -> tuple[TrainConfig, bool, np.ndarray | None, int]:
    """``config`` resolved for this log and env (every input checked), whether the softmax's
    negatives come from the batch, the rows it trains on (the positive ones; None: all) and
    their count."""
    if env is None:
        if config.select_metric not in (None, "none"):
            raise ValueError(
                f"select_metric={config.select_metric!r} selects on an env's validation users, "
                "and this run has no env: pass select_metric='none'"
            )
    else:
        log.check_env(env, allow_env_mismatch)
    log.check_features("the model", model.user_schema, model.item_schema)
    check_loss_log(config.loss, log.rewards)
    in_batch = config.loss == "softmax" and (
        softmax_negatives(config.negatives, log.n_items) == "batch"
    )
    if check_int("uniform_negatives", config.uniform_negatives, low=0) and not in_batch:
        raise ValueError(
            f"uniform_negatives={config.uniform_negatives} mixes uniform items into the in-batch "
            f"softmax's negatives, and this run (loss {config.loss!r}, negatives "
            f"{config.negatives!r}, {log.n_items:,} items) has none: use loss='softmax' with "
            f"negatives='batch' (or 'auto' above {FULL_SOFTMAX_MAX_ITEMS:,} items), or "
            "uniform_negatives=0"
        )
    # the softmax learns which item a user chose: its batches are drawn from the positive rows
    positive_rows = np.flatnonzero(log.rewards > 0) if config.loss == "softmax" else None
    n_rows = len(log) if positive_rows is None else len(positive_rows)
    if (
        positive_rows is not None
        and isinstance(config.batch_size, int)
        and n_rows < config.batch_size
    ):
        raise ValueError(
            f"the softmax loss trains on the log's rows with a positive reward, {n_rows} here, "
            f"fewer than batch_size={config.batch_size}: collect more or lower the batch size"
        )
    prior = check_popularity_prior(config.loss, config.popularity_prior)
    config = replace(config, popularity_prior=resolve_popularity_prior(prior, in_batch))
    config = config.resolve(n_rows, DEFAULT_PROTOCOL if env is None else protocol_for(env))
    return config, in_batch, positive_rows, n_rows


def _train(
    model: TwoTower,
    log: InteractionLog,
    env: gym.Env | None,
    config: TrainConfig,
    out_dir: str | os.PathLike | None,
    resume: bool,
    progress: Progress,
    allow_env_mismatch: bool,
    parallel: DataParallel | None = None,
) -> TrainResult:
    """:func:`train` in this process, or as the worker ``parallel`` of a data-parallel run
    (``recsim_ft.parallel``: it reads and writes the checkpoint through the driver, only worker
    0 evaluates and reports)."""
    config, in_batch, positive_rows, n_rows = _prepared(model, log, env, config, allow_env_mismatch)
    main = parallel is None or parallel.main
    if parallel is not None:
        progress = (lambda step, total: parallel.send("progress", (step, total))) if main else False
    log_q = None
    if in_batch or config.popularity_prior:
        counts = np.bincount(log.actions[positive_rows], minlength=log.n_items)  # batch items
        log_q = torch.as_tensor(
            np.log(np.maximum(counts, 1) / n_rows), dtype=torch.float32, device=config.device
        )
    device = _device(config.device)
    model.to(device)
    # the prior the model ranks by: T log q (the logits' log q, on the scale of u . v)
    model.set_item_prior(
        config.temperature * log_q if config.popularity_prior else None, log.item_table.digest()
    )
    users = FeatureTensors.from_batch(log.users, device)
    item_table = FeatureTensors.from_batch(log.item_table, device)
    actions = torch.as_tensor(log.actions, device=device)
    rewards = torch.as_tensor(log.rewards, device=device)
    scorer = _ModelScorer(model, item_table)
    for tower, rows in ((model.user_tower, users), (model.item_tower, item_table)):
        tower.tokenizer.check_finite(rows)  # once here, never inside a step
    sparse_ids = config.id_updates == "sparse"
    # a sparse gradient's rows are found on the host: no CUDA graph captures them
    cuda_graph = device.type == "cuda" and config.cuda_graph and not sparse_ids
    scheduled = config.schedule != "constant"
    # a scheduled lr is a tensor set in place before each step (a CUDA graph reads it there)
    lr = torch.tensor(config.lr, device=device) if scheduled else config.lr
    optimizer = make_optimizer(model, lr, cuda_graph, config.id_updates)
    batch_size, steps_per_pass = config.batch_size, n_rows // config.batch_size
    training_rows = None if positive_rows is None else torch.as_tensor(positive_rows, device=device)

    def pass_order(epoch: int) -> torch.Tensor:
        """The log rows of pass ``epoch``, in the order the batches take them."""
        order = _permutation(n_rows, config.seed, epoch).to(device)
        return order if training_rows is None else training_rows[order]

    scoring_users, select_users = (None, None) if env is None else config.evaluation_users(env)

    def evaluate_model(users: Batch | None) -> dict[str, float]:
        if users is None or not main:  # no env: the curve is the training loss
            return {}
        model.eval()
        metrics = evaluate(
            scorer, env, len(users), config.eval_seed, config.ks, config.metrics, users=users
        )
        model.train()
        return metrics

    def evaluation_row(step: int, loss: float) -> dict[str, Any]:
        """The curve's row of an evaluation; with early stopping, keeps the best weights (and
        the curve has every metric on the validation users, so that what selecting on another
        metric would have chosen can be read from it)."""
        row = {"step": step, "loss": loss, **evaluate_model(scoring_users)}
        if config.select_metric is not None and main:
            validation = evaluate_model(select_users)
            row.update({f"validation {k}": v for k, v in validation.items()})
            value = validation[config.select_metric]
            if not best or value > best["value"]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best.update(step=step, value=value, model=state)
        return row

    checkpoint = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    log_digest = log.content_digest() if checkpoint is not None else ""
    start, curve, loss_sum, loss_count = 0, [], torch.zeros((), device=device), 0
    rng_states, best = {}, {}
    state = None
    if parallel is not None:  # the driver's: the one resumed, or the last a failed group sent
        state = parallel.last_checkpoint()
        if state is not None:
            state = _checked_checkpoint(state, checkpoint, config, log_digest)
    elif checkpoint is not None and checkpoint.exists():
        if not resume:
            raise _existing_checkpoint(checkpoint)
        state = _load_checkpoint(checkpoint, config, log_digest)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint {checkpoint} holds weights of another model: {err}"
            ) from err
        optimizer.load_state_dict(state["optimizer"])
        start, curve, loss_count = state["step"], state["curve"], state["loss_count"]
        loss_sum = state["loss_sum"].to(device)
        rng_states, best = state["rng"], state.get("best", {})

    started, first_step = time.perf_counter(), start
    rng_devices = [device] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=rng_devices),
        torch_threads(config.threads),
        row_wise_ids(model, sparse_ids),
    ):
        torch.manual_seed(config.seed if parallel is None else parallel.seed(config.seed))
        if rng_states:
            rank = 0 if parallel is None else parallel.rank
            torch.set_rng_state(rng_states.get("workers", [rng_states["cpu"]])[rank])
            if device.type == "cuda":
                torch.cuda.set_rng_state(rng_states["cuda"], device)
        model.train()
        order = pass_order(start // steps_per_pass)
        step_once = TrainStep(
            model,
            optimizer,
            users,
            item_table,
            actions,
            rewards,
            batch_size,
            cuda_graph,
            config.loss,
            config.temperature,
            log_q,
            config.uniform_negatives,
            config.precision,
            in_batch,
            config.popularity_prior,
            parallel,
        )

        def save_checkpoint(step: int) -> None:
            rng = {"cpu": torch.get_rng_state()}
            if parallel is not None:  # every worker's, gathered (all of them call this)
                rng["workers"] = parallel.gather_object(rng["cpu"])
            if device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(device)
            (_save_checkpoint if parallel is None else parallel.save)(
                checkpoint,
                {
                    "version": _CHECKPOINT_VERSION,
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng,
                    "curve": curve,
                    "loss_sum": loss_sum.cpu(),
                    "loss_count": loss_count,
                    "config": {k: _plain(v) for k, v in asdict(config).items()},
                    "log_digest": log_digest,
                    "best": best,
                },
            )

        report = progress if callable(progress) else None
        bar = progress_bar(
            False if report is not None else progress,
            total=config.steps,
            initial=start,
            desc="train",
            unit="step",
        )
        if report is not None:
            report(start, config.steps)
        completed, saved = start, start if curve else None  # a resumed run's checkpoint: start
        with bar, _CtrlCAtStepEnd() as ctrl_c:
            if not curve:
                curve.append(evaluation_row(0, math.nan))
            for step in range(start + 1, config.steps + 1):
                if ctrl_c.requested:
                    break
                epoch, position = divmod(step - 1, steps_per_pass)
                if position == 0 and step > 1:
                    order = pass_order(epoch)
                if scheduled:
                    lr_now = scheduled_lr(config.schedule, config.lr, step, config.steps)
                    for group in optimizer.param_groups:  # a resumed optimizer's own tensors
                        group["lr"].fill_(lr_now)
                batch = order[position * batch_size : (position + 1) * batch_size]
                loss = step_once(batch if parallel is None else parallel.share(batch))
                loss_sum, loss_count = loss_sum + loss, loss_count + 1

                bar.update()
                if report is not None:
                    report(step, config.steps)
                if not bar.disable and (step % 50 == 0 or step == config.steps):
                    rate = (step - first_step) * batch_size / (time.perf_counter() - started)
                    bar.set_postfix(
                        loss=f"{loss_sum.item() / loss_count:.4f}", samples_per_s=f"{rate:,.0f}"
                    )
                if step == config.steps or (config.eval_every and step % config.eval_every == 0):
                    mean_loss = loss_sum.item() / loss_count
                    if not math.isfinite(mean_loss):  # the weights are lost: say so, not NaN scores
                        scaled = (
                            ""
                            if config.loss != "softmax"
                            else (
                                f" or a higher temperature (now {config.temperature:g}: the logits "
                                "are divided by it, and may overflow float32)"
                            )
                        )
                        raise FloatingPointError(
                            f"training diverged: the mean loss up to step {step:,} is {mean_loss} "
                            f"(lr {config.lr:g}); train with a lower learning rate (--lr){scaled}"
                        )
                    curve.append(evaluation_row(step, mean_loss))
                    loss_sum, loss_count = torch.zeros((), device=device), 0
                if checkpoint is not None and (
                    step == config.steps
                    or (config.checkpoint_every and step % config.checkpoint_every == 0)
                ):
                    save_checkpoint(step)
                    saved = step
                completed = step
            if ctrl_c.requested:
                # Ctrl-C is only acted on between steps, so this checkpoint holds whole steps
                if checkpoint is not None and saved != completed:
                    save_checkpoint(completed)
                raise KeyboardInterrupt
    model.eval()
    wall = time.perf_counter() - started
    frame = pd.DataFrame(curve)
    last = curve[-1]
    if best:  # the best evaluation's weights, and its row's metrics
        model.load_state_dict(best["model"])
        last = next(row for row in curve if row["step"] == best["step"])
    final = {
        k: v
        for k, v in last.items()
        if k not in ("step", "loss") and not k.startswith("validation ")
    }
    result = TrainResult(
        model,
        frame,
        final,
        config,
        wall,
        (config.steps - first_step) / wall if wall > 0 else math.nan,
        checkpoint,
        best.get("step"),
    )
    if parallel is not None:
        parallel.send("result", result)
    return result
