"""What to run: the paper's table settings, and the ``RunSpec`` that determines one run.

Seeds: run seed ``s`` derives three independent streams (data, training, test users) with
``numpy.random.SeedSequence(s)``, so the data and test users of one seed are the same for every
agent, and never overlap by construction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsim_ft.agents.registry import REGISTRY, entry, names, trains_model
from recsim_ft.checks import check_choice, check_int
from recsim_ft.models.presets import PRESETS, make_config
from recsim_ft.precision import resolve_precision
from recsim_ft.protocol import protocol_of
from recsim_ft.train import PRESET_FIELDS, TrainConfig, run_options

#: Views of the agent registry (``recsim_ft.agents.registry``, where each agent is declared):
#: every agent in table order, the strong baselines (what a default tabular model gets from the
#: same log in seconds, beside every model in every table), the agents of a paper table, those
#: ``tune`` searches by default, each agent's table label and its hyperparameters' grid.
AGENTS = tuple(REGISTRY)
STRONG_BASELINES = names(strong=True)
TABLE_AGENTS = names(table=True)
TUNE_AGENTS = names(tuned=True)
AGENT_LABELS = {name: e.label for name, e in REGISTRY.items()}
BASELINE_GRIDS = {name: e.grid for name, e in REGISTRY.items() if e.grid}


def agent_label(row: str) -> str:
    """The table label of a row key (``RunSpec.row``): ``"FT-Mamba"``, or with the preset and
    precision of a model trained otherwise than the paper in fp32, ``"FT-Mamba (ranking)"``.

    >>> agent_label("mamba-ranking"), agent_label("gbdt"), agent_label("mamba-ranking-bf16")
    ('FT-Mamba (ranking)', 'GBDT', 'FT-Mamba (ranking, bf16)')
    >>> agent_label("mamba-ranking-bestHR@1"), agent_label("transformer-ranking-laststep")
    ('FT-Mamba (ranking, early stopping on HR@1)', 'FT-Transformer (ranking, no early stopping)')
    """
    agent, _, variant = row.partition("-")
    label = REGISTRY[agent].label if agent in REGISTRY else agent
    return f"{label} ({', '.join(map(_variant_label, variant.split('-')))})" if variant else label


def _variant_label(part: str) -> str:
    """A row key's variant word as a table says it (early stopping spelled out)."""
    if part == "laststep":
        return "no early stopping"
    return f"early stopping on {part.removeprefix('best')}" if part.startswith("best") else part


def row_order(row: str) -> tuple[int, int, str]:
    """Table order of a row key: the registry's order, each model's paper preset before its
    others."""
    agent, _, preset = row.partition("-")
    order = list(REGISTRY)
    position = order.index(agent) if agent in order else len(order)
    return (position, int(bool(preset)), preset)


@dataclass(frozen=True)
class Setting:
    """One env configuration of a paper table (a row group).

    ``seed_kwarg`` names an env kwarg that receives the run seed, for settings whose env itself
    is re-drawn per seed (the vaccine messages). ``ks`` are the cut-offs evaluated (the env's
    protocol adds its own metrics, e.g. H&M's MAP@12; see ``recsim_ft.protocol``).
    """

    name: str
    label: str
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    seed_kwarg: str | None = None
    ks: tuple[int, ...] = (1, 5, 10)


#: Table II: (clusters, messages) of the paper's vaccine settings.
VACCINE_SETTINGS = ((25, 25), (25, 50), (25, 100), (50, 50), (50, 100), (100, 100))


def table_settings(
    table: int, hm_data: str | os.PathLike | None = None, extra: bool = False
) -> list[Setting]:
    """The env settings of the paper's Table I (Spotify, H&M) or Table II (vaccine).

    Without ``hm_data`` the H&M setting uses the env's synthetic stand-in (the Kaggle data is
    not redistributable); with it, the Kaggle files in that directory. ``extra``: also the
    settings beyond the paper's, which run only when named (``--settings hm_20k``: H&M with
    20,000 articles, where popularity is a strong baseline and the catalogue too large for the
    full softmax; ``hm_ids`` and ``hm_20k_ids``: those articles described by ``prod_name`` and
    ``article_id``, so that the towers, like the tabular models' item index, can tell apart
    articles that share a name; docs/results/hm100_diagnosis.md says why).
    """
    if table == 1:
        hm_kwargs = {} if hm_data is None else {"data_dir": os.fspath(hm_data)}
        hm_label = "H&M" if hm_data is not None else "H&M (synthetic)"
        ids = {**hm_kwargs, "item_features": ["prod_name", "article_id"]}
        return [
            Setting("spotify", "Spotify", "Spotify-v0"),
            Setting("hm", hm_label, "HMFashion-v0", hm_kwargs),
            *(
                [
                    Setting(
                        "hm_20k",
                        f"{hm_label}, 20,000 articles",
                        "HMFashion-v0",
                        {**hm_kwargs, "n_items": 20_000},
                    ),
                    Setting("hm_ids", f"{hm_label}, prod_name and article_id", "HMFashion-v0", ids),
                    Setting(
                        "hm_20k_ids",
                        f"{hm_label}, 20,000 articles, prod_name and article_id",
                        "HMFashion-v0",
                        {**ids, "n_items": 20_000},
                    ),
                ]
                if extra
                else []
            ),
        ]
    if table == 2:
        return [
            Setting(
                f"k{k}_m{m}",
                f"Vaccine k={k}, messages={m}",
                "VaccineMessaging-v0",
                {"clusters": k, "messages": m},
                seed_kwarg="seed",
            )
            for k, m in VACCINE_SETTINGS
        ]
    raise ValueError(f"table must be 1 or 2, got {table!r}")


@dataclass(frozen=True, init=False)
class RunSpec:
    """Everything that determines one run (saved as ``config.json``; a finished run is reused
    only when its saved spec equals the requested one).

    ``train`` is the run's training and evaluation (``recsim_ft.train.TrainConfig``); its run
    options (``recsim_ft.train.run_options``) are given as keywords
    (``RunSpec("Spotify-v0", "mamba", 0, steps=100)``), and those left ``None`` take the
    preset's (``TrainConfig.from_preset``), where ``lr=None`` and ``steps=None`` remain the env's
    protocol (``recsim_ft.protocol``) and one pass over the log, as ``n_samples=None`` is the
    protocol's, and ``select_metric="none"`` is no early stopping (what a preset without it
    gives). The seeds of ``train`` are drawn per run (``derived_seeds``). A baseline trains
    nothing: only the evaluation options of ``train`` apply to it. ``model`` holds two-tower
    model options over the preset, ``params`` the hyperparameters of a strong baseline (those of
    its registry entry's ``grid``; unset ones take the agent's defaults)."""

    env_id: str
    agent: str = "mamba"
    seed: int = 0
    env_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    setting: str = ""
    preset: str = "paper"
    n_samples: int | None = None
    data: str | None = None
    model: dict[str, Any] = field(default_factory=dict, hash=False)
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    train: TrainConfig = field(default_factory=TrainConfig, hash=False)

    def __init__(
        self,
        env_id: str,
        agent: str = "mamba",
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        setting: str = "",
        preset: str = "paper",
        n_samples: int | None = None,
        data: str | None = None,
        model: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        train: TrainConfig | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(run_options()))
        if unknown:
            raise TypeError(
                f"RunSpec has no option {', '.join(map(repr, unknown))}; the run options are "
                f"{tuple(run_options())}"
            )
        entry(agent)  # a registered agent
        check_choice("preset", preset, tuple(PRESETS))
        given = {name: value for name, value in options.items() if value is not None}
        if not trains_model(agent):  # a baseline has no preset and trains nothing: one spec
            preset = "paper"
            given = {k: v for k, v in given.items() if k not in PRESET_FIELDS}
        if train is None:
            train = TrainConfig.from_preset(preset, **given)
        elif given:
            train = replace(train, **given)
        if not trains_model(agent):
            train = replace(
                TrainConfig(),
                **{k: getattr(train, k) for k in run_options() if k not in PRESET_FIELDS},
            )
        # no early stopping is "none", so that a saved run says it ran without it whatever a
        # later preset's select_metric is; "auto" precision is named by what this machine runs,
        # so its directory says it
        train = train.checked(protocol_of(env_id))
        if train.precision == "auto":
            train = replace(
                train, precision=resolve_precision("auto", torch.device(train.device))[0]
            )
        train = replace(train, select_metric=train.select_metric or "none")
        for name, value in (
            ("env_id", env_id),
            ("agent", agent),
            ("seed", check_int("seed", seed, low=0)),
            ("env_kwargs", dict(env_kwargs or {})),
            ("setting", setting),
            ("preset", preset),
            ("n_samples", check_int("n_samples", n_samples, low=1, allow_none=True)),
            ("data", data),
            ("model", dict(model or {})),
            ("params", dict(params or {})),
            ("train", train),
        ):
            object.__setattr__(self, name, value)
        if self.model:
            try:
                make_config(self.preset, **self.model)
            except TypeError as err:  # an unknown option
                raise ValueError(str(err)) from None
        allowed = REGISTRY[self.agent].grid
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(
                f"agent {self.agent!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
                + (f"choose from {tuple(allowed)}" if allowed else "it takes none")
            )
        for key, value in self.params.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"{self.agent} hyperparameter {key} must be a number, got {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The spec as ``config.json`` saves it: its fields and its run options side by side
        (a baseline's training options as ``None``)."""
        spec = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "train"}
        for name in run_options():
            trained = self.trains_model or name not in PRESET_FIELDS
            spec[name] = getattr(self.train, name) if trained else None
        return json.loads(json.dumps(spec))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        """The spec ``to_dict`` saved, or one saved by an earlier version (its evaluation split
        as ``split``, no early stopping as null, evaluation every 500 steps as null)."""
        d = dict(d)
        if "split" in d:
            d["eval_split"] = d.pop("split")
        if d.get("ks") is not None:
            d["ks"] = tuple(d["ks"])
        d["select_metric"] = d.get("select_metric") or "none"
        return cls(**d)

    @property
    def trains_model(self) -> bool:
        """Whether the run trains a two-tower model (its agent's registry entry says)."""
        return trains_model(self.agent)

    @property
    def row(self) -> str:
        """The row of a results table this run belongs to: the agent, and for a model trained
        with a preset other than the paper's, at a precision other than fp32, with the
        popularity prior on or off or with early stopping other than its preset's, those after
        it (``"mamba-ranking"``, ``"mamba-bf16"``, ``"mamba-ranking-prior"``,
        ``"mamba-ranking-noprior"``, ``"mamba-ranking-bestHR@1"``, ``"mamba-ranking-laststep"``:
        the last step's weights where the preset selects)."""
        if not self.trains_model:
            return self.agent
        train, preset = self.train, _preset_training(self.preset)
        variant = [
            v for v, base in ((self.preset, "paper"), (train.precision, "fp32")) if v != base
        ]
        if train.select_metric != preset.select_metric:
            select = ["laststep" if train.select_metric == "none" else f"best{train.select_metric}"]
        else:
            select = []
        return "-".join([self.agent, *variant, *self._prior_variant(), *select])

    def _prior_variant(self) -> list[str]:
        """``["prior"]`` with the popularity prior, ``["noprior"]`` without it where the preset
        would add it (``"auto"`` resolves only in training, so it is named in the directory)."""
        if self.train.popularity_prior is True:
            return ["prior"]
        preset_prior = _preset_training(self.preset).popularity_prior
        return (
            ["noprior"]
            if self.train.popularity_prior is False and preset_prior is not False
            else []
        )

    def train_steps(self) -> int:
        """The training steps of this run (0 for a baseline): ``steps``, else one pass over the
        logged events (for a run on a ``data`` file, the trainer counts that file's rows; with
        the softmax loss it passes over the positive rows only, so this is an upper bound)."""
        if not self.trains_model:
            return 0
        if self.train.steps is not None:
            return self.train.steps
        n_samples = self.n_samples or protocol_of(self.env_id).n_samples
        return n_samples // self.train.batch_size

    def relative_dir(self) -> Path:
        """``setting/agent[-preset][-what differs from the preset's training]/seedN``: the
        paper's preset and training keep the directory names of earlier sweeps."""
        agent = self.row
        if self.trains_model:
            preset = _preset_training(self.preset)
            for name, option in run_options().items():
                value = getattr(self.train, name)
                if option.tag is not None and value != getattr(preset, name):
                    agent += (
                        f"-{option.tag}{value if isinstance(value, str) else format(value, 'g')}"
                    )
            if self.train.popularity_prior == "auto" != preset.popularity_prior:  # True, False: row
                agent += "-autoprior"
        agent += "".join(f"-{key}{value:g}" for key, value in sorted(self.params.items()))
        return Path(self.setting or self.env_id) / agent / f"seed{self.seed}"


def _preset_training(preset: str) -> TrainConfig:
    """The training of ``preset`` as a ``RunSpec`` holds it: no early stopping is
    ``select_metric="none"``."""
    training = TrainConfig.from_preset(preset)
    return replace(training, select_metric=training.select_metric or "none")


def derived_seeds(seed: int) -> tuple[int, int, int]:
    """(data, training, test-users) seeds of run seed ``seed``: independent streams.

    >>> derived_seeds(0) == derived_seeds(0) and len(set(derived_seeds(0))) == 3
    True
    """
    data, train, test = np.random.SeedSequence(seed).generate_state(3)
    return int(data), int(train), int(test)


def table_specs(
    settings: Sequence[Setting],
    seeds: Iterable[int],
    agents: Sequence[str] = TABLE_AGENTS,
    agent_params: dict[str, dict[str, Any]] | None = None,
    tuned: dict[str, dict[str, dict[str, Any]]] | None = None,
    **options: Any,
) -> list[RunSpec]:
    """Every (setting, agent, seed) run of a table; ``options`` are RunSpec fields (steps, ...),
    ``agent_params`` the hyperparameters of a strong baseline by agent (``RunSpec.params``),
    ``tuned`` those of one setting (``{setting: {agent: params}}``, as ``tune`` chose them),
    which take precedence."""
    agent_params, tuned = agent_params or {}, tuned or {}
    unused = sorted(set(agent_params) - set(agents))
    if unused:
        raise ValueError(f"hyperparameters given for {unused}, which this sweep does not run")
    specs = []
    for setting in settings:
        for seed in seeds:
            kwargs = dict(setting.env_kwargs)
            if setting.seed_kwarg is not None:
                kwargs[setting.seed_kwarg] = seed
            for agent in agents:
                specs.append(
                    RunSpec(
                        setting.env_id,
                        agent,
                        seed,
                        kwargs,
                        setting.name,
                        ks=setting.ks,
                        params=tuned.get(setting.name, {}).get(agent, agent_params.get(agent, {})),
                        **options,
                    )
                )
    return specs
