"""Experiments: single runs, sweeps over (setting, agent, seed), and the paper's tables.

One *run* trains (or fits) one agent on one env setting with one seed and evaluates it on the
env's test users. It writes its own directory::

    config.json   what was run (the RunSpec, model and train configs)
    metrics.json  the evaluation metrics, fit time, parameter count
    curve.csv     the training curve (two-tower agents)
    items.csv     per item: times liked by the test users, recommended minus liked (paper Fig. 5)
    model.safetensors  the trained model (two-tower agents)
    DONE          written last: the run is finished

Each file is written under a temporary name and renamed, and ``DONE`` comes last, so a sweep that
is killed and restarted reuses every finished run and redoes only the others; a run that fails
leaves ``error.txt`` (its traceback) and does not stop the sweep.

A *sweep* (``reproduce``) runs every (setting, agent, seed) of a paper table, in-process, in a
process pool (``jobs``), or as Ray tasks, and summarises the runs: mean and t-based 95%
confidence interval per metric, the paper's number beside ours, a paired test FT-Mamba vs
FT-Transformer on the per-seed metrics (the two agents of one seed share data and test users),
and figures (paper Fig. 4/6: HR@k through training; Fig. 5: recommended minus liked).

Seeds: run seed ``s`` derives three independent streams (data, training, test users) with
``numpy.random.SeedSequence(s)``, so the data and test users of one seed are the same for every
agent, and never overlap by construction.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_ft.envs.base import SPLITS
from recsim_ft.fileio import atomic_path
from recsim_ft.metrics import METRICS as METRIC_FAMILIES
from recsim_ft.paper_results import METRICS as PAPER_METRICS
from recsim_ft.paper_results import paper_value

EMBEDDERS = ("mamba", "transformer", "mlp")
BASELINES = ("oracle", "popularity", "random")
AGENTS = EMBEDDERS + BASELINES
#: The agents of a paper table, in table order.
TABLE_AGENTS = ("mamba", "transformer", "oracle", "popularity", "random")
#: the agents ``tune`` searches a learning rate for by default: the two the paper compares
TUNE_AGENTS = ("mamba", "transformer")
AGENT_LABELS = {"mamba": "FT-Mamba", "transformer": "FT-Transformer", "mlp": "MLP two-tower"}
DONE_MARKER = "DONE"
ERROR_FILE = "error.txt"


# -- settings and run specifications -----------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One env configuration of a paper table (a row group).

    ``seed_kwarg`` names an env kwarg that receives the run seed, for settings whose env itself
    is re-drawn per seed (the vaccine messages). ``ks`` are the cut-offs evaluated (the env adds
    its own extra metrics, e.g. H&M's MAP@12).
    """

    name: str
    label: str
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    seed_kwarg: str | None = None
    ks: tuple[int, ...] = (1, 5, 10)


#: Table II: (clusters, messages) of the paper's vaccine settings.
VACCINE_SETTINGS = ((25, 25), (25, 50), (25, 100), (50, 50), (50, 100), (100, 100))


def table_settings(table: int, hm_data: str | os.PathLike | None = None) -> list[Setting]:
    """The env settings of the paper's Table I (Spotify, H&M) or Table II (vaccine).

    Without ``hm_data`` the H&M setting uses the env's synthetic stand-in (the Kaggle data is
    not redistributable); with it, the Kaggle files in that directory.
    """
    if table == 1:
        hm_kwargs = {} if hm_data is None else {"data_dir": os.fspath(hm_data)}
        hm_label = "H&M" if hm_data is not None else "H&M (synthetic)"
        return [
            Setting("spotify", "Spotify", "Spotify-v0"),
            Setting("hm", hm_label, "HMFashion-v0", hm_kwargs),
        ]
    if table == 2:
        return [
            Setting(f"k{k}_m{m}", f"Vaccine k={k}, messages={m}", "VaccineMessaging-v0",
                    {"clusters": k, "messages": m}, seed_kwarg="seed")
            for k, m in VACCINE_SETTINGS
        ]
    raise ValueError(f"table must be 1 or 2, got {table!r}")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run (saved as ``config.json``; a finished run is reused
    only when its saved spec equals the requested one)."""

    env_id: str
    agent: str = "mamba"
    seed: int = 0
    env_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    setting: str = ""
    preset: str = "paper"
    n_samples: int | None = None
    steps: int | None = None
    lr: float | None = None
    eval_every: int | None = None
    eval_users: int = 100
    ks: tuple[int, ...] = (1, 5, 10)
    device: str = "cpu"
    data: str | None = None
    split: str = "test"
    model: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise ValueError(f"unknown agent {self.agent!r}; choose from {AGENTS}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.model:
            from recsim_ft.models.presets import make_config

            try:
                make_config(self.preset, **self.model)
            except TypeError as err:  # an unknown option
                raise ValueError(str(err)) from None
        if self.preset not in ("paper", "quick"):
            raise ValueError(f"unknown preset {self.preset!r}; choose 'paper' or 'quick'")
        for name in ("n_samples", "steps", "eval_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        d["ks"] = tuple(d["ks"])
        return cls(**d)

    def relative_dir(self) -> Path:
        agent = self.agent if self.lr is None else f"{self.agent}-lr{self.lr:g}"
        return Path(self.setting or self.env_id) / agent / f"seed{self.seed}"


def derived_seeds(seed: int) -> tuple[int, int, int]:
    """(data, training, test-users) seeds of run seed ``seed``: independent streams.

    >>> derived_seeds(0) == derived_seeds(0) and len(set(derived_seeds(0))) == 3
    True
    """
    data, train, test = np.random.SeedSequence(seed).generate_state(3)
    return int(data), int(train), int(test)


def table_specs(settings: Sequence[Setting], seeds: Iterable[int], agents: Sequence[str] = TABLE_AGENTS,
                **options: Any) -> list[RunSpec]:
    """Every (setting, agent, seed) run of a table; ``options`` are RunSpec fields (steps, ...)."""
    specs = []
    for setting in settings:
        for seed in seeds:
            kwargs = dict(setting.env_kwargs)
            if setting.seed_kwarg is not None:
                kwargs[setting.seed_kwarg] = seed
            for agent in agents:
                specs.append(RunSpec(setting.env_id, agent, seed, kwargs, setting.name, ks=setting.ks, **options))
    return specs


# -- one run ------------------------------------------------------------------------------------
def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` via a temporary file and a rename (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None):
    """``gym.make(env_id, **env_kwargs).unwrapped``, with errors that name the bad id or kwarg.

    ``env_id`` may be ``"module:EnvId"`` (Gymnasium imports the module first), which lets sweep
    workers build envs registered outside recsim-ft.
    """
    import gymnasium as gym

    import recsim_ft  # noqa: F401  (registers the env ids)

    try:
        return gym.make(env_id, **(env_kwargs or {})).unwrapped
    except (gym.error.Error, ModuleNotFoundError) as err:
        raise ValueError(f"unknown env id {env_id!r} ({err}); recsim-ft envs: {', '.join(recsim_ft.ENV_IDS)}") from None
    except TypeError as err:
        raise ValueError(f"bad kwargs {env_kwargs!r} for {env_id}: {err}") from None


MODEL_FILE = "model.safetensors"


def _evaluate_agent(agent, env, spec: RunSpec, n_users: int, test_seed: int) -> dict[str, float]:
    """All metrics at ``spec.ks`` plus the env's own extras (H&M: MAP@12), as floats."""
    from recsim_ft.evaluate import evaluate

    metrics = evaluate(agent, env, n_users=n_users, seed=test_seed, ks=spec.ks, split=spec.split)
    return {k: float(v) for k, v in metrics.items()}


def run(spec: RunSpec, run_dir: str | os.PathLike, resume: bool = False, progress: bool = False,
        keep_checkpoint: bool = True) -> dict[str, float]:
    """Fit and evaluate the agent of ``spec``, writing the run directory; returns the metrics.

    ``resume`` continues an interrupted two-tower training from its checkpoint in ``run_dir``;
    ``keep_checkpoint=False`` deletes the checkpoint once the run is finished (sweeps).
    """
    from recsim_ft.agents import OracleAgent, PopularityAgent, RandomAgent
    from recsim_ft.data import InteractionLog, collect
    from recsim_ft.evaluate import recommended_minus_liked

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data_seed, train_seed, test_seed = derived_seeds(spec.seed)
    env = make_env(spec.env_id, spec.env_kwargs)
    config: dict[str, Any] = {"spec": spec.to_dict(),
                              "seeds": {"data": data_seed, "train": train_seed, "test": test_seed}}
    write_atomic(run_dir / "config.json", _json(config))

    def logged_data():
        if spec.data is not None:
            return InteractionLog.load(spec.data)
        return collect(env, n=spec.n_samples or env.train_defaults.n_samples, seed=data_seed)

    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if spec.agent in EMBEDDERS:
        from recsim_ft.agents import TwoTowerAgent
        from recsim_ft.train import CHECKPOINT_NAME, TrainConfig

        # the train seed also seeds the initial weights
        train_config = TrainConfig(lr=spec.lr, steps=spec.steps, seed=train_seed, eval_users=spec.eval_users,
                                   eval_seed=test_seed, eval_split=spec.split, ks=spec.ks, device=spec.device,
                                   **({} if spec.eval_every is None else {"eval_every": spec.eval_every}))
        agent = TwoTowerAgent(env, spec.agent, spec.preset, train_config, **spec.model)
        agent.fit(logged_data(), out_dir=run_dir, resume=resume, progress=progress)
        result = agent.result_
        config.update(model=asdict(agent.model_.config), train=asdict(result.config))
        write_atomic(run_dir / "config.json", _json(config))
        write_atomic(run_dir / "curve.csv", result.curve.to_csv(index=False))
        agent.save(run_dir / MODEL_FILE, overwrite=True)
        extra["n_params"] = sum(p.numel() for p in agent.model_.parameters() if p.requires_grad)
        extra["train_steps_per_s"] = result.steps_per_s
    elif spec.agent == "popularity":
        # share of positive rewards per item: equals the mean reward for 0/1 rewards, and is the
        # stronger popularity ranking on Spotify's -1/0/+1 rewards (PAPER.md's reference point)
        agent = PopularityAgent(env, by="positive_rate").fit(logged_data())
    elif spec.agent == "oracle":
        agent = OracleAgent(env)
    else:
        agent = RandomAgent(env, seed=train_seed)
    fit_seconds = time.perf_counter() - start

    metrics = _evaluate_agent(agent, env, spec, spec.eval_users, test_seed)
    users = env.eval_users(spec.split, spec.eval_users, test_seed)
    items = pd.DataFrame({"item": np.arange(env.n_items), "liked": env.relevant(users).sum(axis=0),
                          "recommended_minus_liked": recommended_minus_liked(agent, env, spec.eval_users,
                                                                            test_seed, spec.split)})
    write_atomic(run_dir / "items.csv", items.to_csv(index=False))
    write_atomic(run_dir / "metrics.json", _json({"metrics": metrics, "fit_seconds": fit_seconds, **extra}))
    write_atomic(run_dir / DONE_MARKER, _json({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    if spec.agent in EMBEDDERS and not keep_checkpoint:
        (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    return metrics


def evaluate_run(run_dir: str | os.PathLike, n_users: int | None = None, seed: int | None = None) -> dict[str, float]:
    """Re-evaluate the saved model of a two-tower run on ``n_users`` test users drawn with ``seed``
    (default: the run's own test users)."""
    from recsim_ft.agents import TwoTowerAgent

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    spec = RunSpec.from_dict(config["spec"])
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no saved model ({MODEL_FILE}); is the run finished "
                                f"and a two-tower run (agent {spec.agent!r})?")
    env = make_env(spec.env_id, spec.env_kwargs)
    agent = TwoTowerAgent.load(model_path, env)
    test_seed = config["seeds"]["test"] if seed is None else seed
    return _evaluate_agent(agent, env, spec, n_users or spec.eval_users, test_seed)


# -- sweeps -------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    """What happened to one run of a sweep: ``status`` is ``done``, ``reused`` or ``failed``."""

    spec: RunSpec
    run_dir: Path
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0


def finished(spec: RunSpec, run_dir: Path) -> bool:
    """True when ``run_dir`` holds a finished run of ``spec``; an error when it holds another's."""
    if not (run_dir / DONE_MARKER).exists():
        return False
    config = json.loads((run_dir / "config.json").read_text())
    saved = RunSpec.from_dict(config["spec"]).to_dict()
    changed = sorted(k for k in saved.keys() | spec.to_dict().keys() if saved.get(k) != spec.to_dict().get(k))
    if spec.agent in EMBEDDERS and "model" in config:
        # the same spec builds another model when a default changed between versions
        from recsim_ft.models.presets import config_from_dict, make_config

        built = asdict(config_from_dict(config["model"]))
        wanted = asdict(make_config(spec.preset, spec.agent, **spec.model))
        changed += sorted(f"model.{k}" for k in wanted if k != "seed" and built.get(k) != wanted[k])
    if changed:
        raise ValueError(f"{run_dir} holds a finished run with different settings ({', '.join(changed)}); "
                         "write the sweep to another --out directory")
    return True


def _read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def run_safely(spec: RunSpec, run_dir: Path, threads: int | None = None) -> RunOutcome:
    """Run ``spec`` into ``run_dir``; an exception is saved to ``error.txt`` and returned, not raised.

    The sweep workers call this (``threads`` caps torch's intra-op threads per worker).
    """
    if threads is not None and spec.agent in EMBEDDERS:  # baselines never load torch
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        # a directory without DONE but with a checkpoint is an interrupted run: continue it
        metrics = run(spec, run_dir, resume=True, keep_checkpoint=False)
    except Exception as err:  # one failing run must not stop the sweep
        write_atomic(run_dir / ERROR_FILE, traceback.format_exc())
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        return RunOutcome(spec, run_dir, "failed", error=message, seconds=time.perf_counter() - start)
    return RunOutcome(spec, run_dir, "done", metrics, seconds=time.perf_counter() - start)


def _ray_task(spec: RunSpec) -> tuple[RunOutcome, dict[str, bytes]]:
    """Run ``spec`` in a scratch directory on a Ray worker and return its files, so the driver
    writes the same result files whether or not the cluster shares a file system."""
    with tempfile.TemporaryDirectory() as scratch:
        outcome = run_safely(spec, Path(scratch), threads=1)
        files = {p.name: p.read_bytes() for p in Path(scratch).iterdir() if p.is_file()}
    return outcome, files


def _run_local(pending: list[tuple[RunSpec, Path]], jobs: int) -> Iterator[RunOutcome]:
    if jobs == 1:
        for spec, run_dir in pending:
            yield run_safely(spec, run_dir)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    # spawn, not fork: forking a process whose torch thread pools are running can deadlock
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_safely, spec, run_dir, threads) for spec, run_dir in pending]
        for future in as_completed(futures):
            yield future.result()


def _run_ray(pending: list[tuple[RunSpec, Path]], address: str | None) -> Iterator[RunOutcome]:
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--executor ray needs Ray: pip install 'recsim-ft[ray]'") from err
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    task = ray.remote(num_cpus=1)(_ray_task)
    run_dirs = {}
    for spec, run_dir in pending:
        run_dirs[task.remote(spec)] = run_dir
    refs = list(run_dirs)
    while refs:
        (ref,), refs = ray.wait(refs, num_returns=1)
        outcome, files = ray.get(ref)
        run_dir = run_dirs[ref]
        for name in sorted(files, key=lambda n: n == DONE_MARKER):  # DONE last
            write_atomic(run_dir / name, files[name])
        yield replace(outcome, run_dir=run_dir)


def sweep(specs: Sequence[RunSpec], out: str | os.PathLike, jobs: int = 1, executor: str = "local",
          address: str | None = None, progress: bool = True) -> list[RunOutcome]:
    """Run every spec into ``out/runs/<setting>/<agent>/seed<k>``, reusing finished runs.

    Failed runs are returned with their error (the traceback is in their ``error.txt``); the
    other runs are unaffected.
    """
    from tqdm.auto import tqdm

    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    out = Path(out)
    outcomes, pending = [], []
    for spec in specs:
        run_dir = out / "runs" / spec.relative_dir()
        if finished(spec, run_dir):
            outcomes.append(RunOutcome(spec, run_dir, "reused", _read_metrics(run_dir)))
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            pending.append((spec, run_dir))
    results = _run_ray(pending, address) if executor == "ray" else _run_local(pending, jobs)
    bar = tqdm(results, total=len(pending), desc="runs", unit="run", disable=not progress or not pending)
    for outcome in bar:
        outcomes.append(outcome)
        bar.set_postfix_str(f"{outcome.spec.setting}/{outcome.spec.agent}/seed{outcome.spec.seed} {outcome.status}")
    order = {spec: i for i, spec in enumerate(specs)}
    return sorted(outcomes, key=lambda o: order[o.spec])


# -- statistics ----------------------------------------------------------------------------------
def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the t-based ``confidence`` interval of the mean (NaN bounds for fewer than 2 values).

    >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    >>> m, round(lo, 3), round(hi, 3)
    (2.0, -0.484, 4.484)
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return mean, math.nan, math.nan
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired comparison of ``a`` and ``b`` (same seeds): mean difference ``a - b``, paired t-test
    (``scipy.stats.ttest_rel``) and Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) p-values.

    A p-value is NaN when the test is undefined (fewer than 2 pairs, or all differences zero).
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    diff = a - b
    result = {"n_pairs": int(a.size), "mean_diff": float(diff.mean()) if a.size else math.nan,
              "t_stat": math.nan, "t_pvalue": math.nan, "wilcoxon_stat": math.nan, "wilcoxon_pvalue": math.nan}
    if a.size < 2 or not np.any(diff != 0):
        return result
    t = stats.ttest_rel(a, b)
    result.update(t_stat=float(t.statistic), t_pvalue=float(t.pvalue))
    w = stats.wilcoxon(a, b)
    result.update(wilcoxon_stat=float(w.statistic), wilcoxon_pvalue=float(w.pvalue))
    return result


def _metric_order(name: str) -> tuple[int, int]:
    """Table order of a metric ``"NAME@k"``: ``recsim_ft.metrics.METRICS`` order, then k. Fresh
    metrics come in this order, but a reused run's come back key-sorted from its metrics.json; one
    order keeps a continued sweep's tables identical to an uninterrupted one's."""
    family, _, k = name.partition("@")
    return (METRIC_FAMILIES.index(family) if family in METRIC_FAMILIES else len(METRIC_FAMILIES), int(k))


def runs_frame(outcomes: Iterable[RunOutcome]) -> pd.DataFrame:
    """One row per (run, metric) of the successful runs: setting, agent, seed, metric, value."""
    rows = [
        {"setting": o.spec.setting, "agent": o.spec.agent, "seed": o.spec.seed, "metric": metric, "value": value}
        for o in outcomes if o.status != "failed"
        for metric, value in sorted(((m, v) for m, v in o.metrics.items() if "@" in m),
                                    key=lambda item: _metric_order(item[0]))
    ]
    return pd.DataFrame(rows, columns=["setting", "agent", "seed", "metric", "value"])


def summarize(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (setting, agent, metric): n, mean, CI bounds, and the paper's mean where it has one."""
    rows = []
    for (setting, agent, metric), group in runs.groupby(["setting", "agent", "metric"], sort=False):
        mean, low, high = mean_ci(group["value"].to_numpy(), confidence)
        rows.append({"setting": setting, "agent": agent, "metric": metric, "n": len(group), "mean": mean,
                     "ci_low": low, "ci_high": high, "paper": paper_value(setting, agent, metric)})
    return pd.DataFrame(rows, columns=["setting", "agent", "metric", "n", "mean", "ci_low", "ci_high", "paper"])


def paired_tests(runs: pd.DataFrame, a: str = "mamba", b: str = "transformer") -> pd.DataFrame:
    """Per (setting, metric): paired test of agent ``a`` vs ``b`` over the seeds both finished."""
    rows = []
    for (setting, metric), group in runs.groupby(["setting", "metric"], sort=False):
        wide = group.pivot_table(index="seed", columns="agent", values="value")
        if a not in wide or b not in wide:
            continue
        pairs = wide[[a, b]].dropna()
        rows.append({"setting": setting, "metric": metric, **paired_test(pairs[a], pairs[b])})
    return pd.DataFrame(rows)


# -- reports ---------------------------------------------------------------------------------------
def _table_columns(metrics: Iterable[str]) -> list[str]:
    """The paper's columns (plus MAP@12 where measured) when present, else every metric; the CSV
    files keep every metric."""
    present = set(metrics)
    return [m for m in (*PAPER_METRICS, "MAP@12") if m in present] or sorted(present)


def markdown_table(summary: pd.DataFrame, tests: pd.DataFrame, labels: dict[str, str] | None = None,
                   a: str = "mamba", b: str = "transformer") -> str:
    """The results as Markdown: per setting, mean ± CI half-width per agent, the paper's row under
    each agent it reports, and the paired-test p-values."""
    labels = labels or {}
    lines = []
    for setting, group in summary.groupby("setting", sort=False):
        metrics = _table_columns(group["metric"])
        n_seeds = int(group["n"].max())
        lines += [f"### {labels.get(setting, setting)} ({n_seeds} seed{'s' if n_seeds != 1 else ''}; mean ± 95% CI half-width)", "",
                  "| agent | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        cells = group.set_index(["agent", "metric"])
        agents = [x for x in TABLE_AGENTS if x in set(group["agent"])] + sorted(set(group["agent"]) - set(TABLE_AGENTS))
        for agent in agents:
            row = []
            for metric in metrics:
                if (agent, metric) not in cells.index:
                    row.append("")
                    continue
                cell = cells.loc[(agent, metric)]
                half = (cell["ci_high"] - cell["ci_low"]) / 2
                row.append(f"{cell['mean']:.3f}" + ("" if math.isnan(half) else f" ± {half:.3f}"))
            lines.append(f"| {AGENT_LABELS.get(agent, agent)} | " + " | ".join(row) + " |")
            paper = [cells.loc[(agent, m), "paper"] if (agent, m) in cells.index else None for m in metrics]
            if any(p is not None and not pd.isna(p) for p in paper):
                lines.append("| &nbsp;&nbsp;paper | " + " | ".join("" if p is None or pd.isna(p) else f"{p:.3f}"
                                                              for p in paper) + " |")
        here = tests[tests["setting"] == setting] if len(tests) else tests
        if len(here):
            here = here.set_index("metric")
            lines += ["", f"Paired tests, {AGENT_LABELS.get(a, a)} − {AGENT_LABELS.get(b, b)} over seeds "
                      "(paired t-test `scipy.stats.ttest_rel`; Wilcoxon signed-rank `scipy.stats.wilcoxon`):", "",
                      "| metric | mean diff | t-test p | Wilcoxon p |", "|---|---|---|---|"]
            for metric in [m for m in metrics if m in here.index]:
                t = here.loc[metric]
                lines.append(f"| {metric} | {t['mean_diff']:+.3f} | {_p(t['t_pvalue'])} | {_p(t['wilcoxon_pvalue'])} |")
        lines.append("")
    return "\n".join(lines)


def _p(p: float) -> str:
    return "n/a" if pd.isna(p) else f"{p:.3g}"


def _figures(outcomes: Sequence[RunOutcome], out: Path, stem: str, labels: dict[str, str]) -> list[Path]:
    """Fig. 4/6 (HR@k through training) and Fig. 5 (recommended minus liked, items ranked by likes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [o for o in outcomes if o.status != "failed" and o.spec.agent in EMBEDDERS]
    settings = list(dict.fromkeys(o.spec.setting for o in ok))
    if not settings:
        return []
    paths = []
    curves = {}
    for o in ok:
        path = o.run_dir / "curve.csv"
        if path.exists():
            curves[o.spec.setting, o.spec.agent, o.spec.seed] = pd.read_csv(path)
    hr_columns = sorted({c for c in (c for df in curves.values() for c in df.columns) if c.startswith("HR@")},
                        key=lambda c: int(c[3:]))
    if curves and hr_columns:
        fig, axes = plt.subplots(len(settings), len(hr_columns), squeeze=False,
                                 figsize=(3.2 * len(hr_columns), 2.6 * len(settings)))
        for i, setting in enumerate(settings):
            for j, column in enumerate(hr_columns):
                ax = axes[i, j]
                for agent in EMBEDDERS:
                    frames = [df[["step", column]].dropna() for (s, a, _), df in curves.items()
                              if s == setting and a == agent and column in df]
                    if frames:
                        mean = pd.concat(frames).groupby("step")[column].mean()
                        ax.plot(mean.index, mean.to_numpy(), label=AGENT_LABELS[agent])
                for agent, style in (("popularity", ":"), ("random", "--")):
                    values = [o.metrics[column] for o in outcomes if o.status != "failed"
                              and o.spec.setting == setting and o.spec.agent == agent and column in o.metrics]
                    if values:
                        ax.axhline(np.mean(values), color="grey", ls=style, lw=1, label=agent)
                ax.set_title(f"{labels.get(setting, setting)}: {column}", fontsize=8)
                ax.set_xlabel("training step")
                ax.set_ylim(0, 1.02)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / f"{stem}_hr_curves.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

    fig, axes = plt.subplots(1, len(settings), squeeze=False, figsize=(4.5 * len(settings), 3))
    for ax, setting in zip(axes[0], settings, strict=True):
        for agent in EMBEDDERS:
            ranked = []
            for o in ok:
                if o.spec.setting == setting and o.spec.agent == agent and (o.run_dir / "items.csv").exists():
                    items = pd.read_csv(o.run_dir / "items.csv").sort_values("liked", ascending=False, kind="stable")
                    ranked.append(items["recommended_minus_liked"].to_numpy())
            if ranked:
                ax.plot(np.arange(1, len(ranked[0]) + 1), np.mean(ranked, axis=0), label=AGENT_LABELS[agent])
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(labels.get(setting, setting), fontsize=9)
        ax.set_xlabel("item rank by number of likes")
        ax.set_ylabel("recommended − liked")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / f"{stem}_fig5.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


@dataclass
class Report:
    """The outputs of ``reproduce``: the outcomes, the summary frames and the files written."""

    outcomes: list[RunOutcome]
    summary: pd.DataFrame
    tests: pd.DataFrame
    markdown: str
    files: list[Path]
    notes: list[str]

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def report(outcomes: Sequence[RunOutcome], out: str | os.PathLike, stem: str,
           labels: dict[str, str] | None = None, figures: bool = True) -> Report:
    """Write ``<stem>.md``, ``<stem>.csv`` (summary), ``<stem>_paired.csv``, ``<stem>_runs.csv``
    (every run's metrics) and the figures into ``out``."""
    out = Path(out)
    labels = labels or {}
    runs = runs_frame(outcomes)
    summary, tests = summarize(runs), paired_tests(runs)
    markdown = markdown_table(summary, tests, labels)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        markdown += "\n### Failed runs\n\n" + "\n".join(
            f"- `{o.run_dir}`: {o.error} (traceback in `{o.run_dir / ERROR_FILE}`)" for o in failed) + "\n"
    files = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}_paired.csv", out / f"{stem}_runs.csv"]
    for path, text in zip(files, (markdown, summary.to_csv(index=False), tests.to_csv(index=False),
                                  runs.to_csv(index=False)), strict=True):
        write_atomic(path, text)
    notes = []
    if figures:
        try:
            files += _figures(outcomes, out, stem, labels)
        except ImportError:
            notes.append("matplotlib is not installed: figures skipped (pip install 'recsim-ft[plot]')")
    return Report(list(outcomes), summary, tests, markdown, files, notes)


def reproduce(table: int, out: str | os.PathLike, seeds: int = 5, settings: Sequence[Setting] | None = None,
              agents: Sequence[str] = TABLE_AGENTS, jobs: int = 1, executor: str = "local",
              address: str | None = None, progress: bool = True, figures: bool = True,
              **options: Any) -> Report:
    """Run (or continue) the sweep of the paper's Table ``table`` and write its report into ``out``.

    ``settings`` defaults to ``table_settings(table)``; ``options`` are RunSpec fields
    (``preset``, ``steps``, ``n_samples``, ``eval_every``, ``eval_users``, ...).
    """
    settings = table_settings(table) if settings is None else list(settings)
    specs = table_specs(settings, range(seeds), agents, **options)
    outcomes = sweep(specs, out, jobs=jobs, executor=executor, address=address, progress=progress)
    return report(outcomes, out, f"table{table}", {s.name: s.label for s in settings}, figures=figures)


# -- learning-rate search on validation users --------------------------------------------------------
@dataclass
class TuneReport:
    """A learning-rate search: ``table`` has one row per (setting, agent, lr) with the mean and CI
    of ``metric`` on the validation users; ``best`` maps (setting, agent) to the chosen lr."""

    outcomes: list[RunOutcome]
    metric: str
    table: pd.DataFrame
    best: dict[tuple[str, str], float]
    markdown: str
    files: list[Path]

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def tune(settings: Sequence[Setting], out: str | os.PathLike, lrs: Sequence[float],
         agents: Sequence[str] = TUNE_AGENTS, seeds: int = 2, first_seed: int = 1000,
         metric: str = "NDCG@10", jobs: int = 1, executor: str = "local", address: str | None = None, progress: bool = True,
         **options: Any) -> TuneReport:
    """Choose the learning rate of each (setting, embedder) on **validation** users, as the paper
    did ("learning rates ... chosen through validation using a few seeds").

    Every (setting, agent, lr, seed) run trains with the paper's protocol otherwise and is scored
    on ``env.validation_users``, never on the test users, with seeds ``first_seed, ...``
    (by default not the seeds ``reproduce`` reports, so no training log is shared either); the
    lr with the best mean ``metric`` wins (ties: the smaller lr). Writes ``tune.md`` / ``tune.csv`` / ``tune.json`` into ``out``;
    re-running continues the search like ``reproduce``.
    """
    if not lrs:
        raise ValueError("give at least one learning rate")
    bad = [a for a in agents if a not in EMBEDDERS]
    if bad:
        raise ValueError(f"only two-tower agents have a learning rate; got {bad}, choose from {EMBEDDERS}")
    specs = [replace(spec, lr=float(lr), split="validation")
             for lr in lrs
             for spec in table_specs(settings, range(first_seed, first_seed + seeds), agents, **options)]
    outcomes = sweep(specs, out, jobs=jobs, executor=executor, address=address, progress=progress)
    rows = []
    for (setting, agent, lr), group in _group_runs(outcomes, metric):
        mean, low, high = mean_ci(group, 0.95)
        rows.append({"setting": setting, "agent": agent, "lr": lr, "n": len(group), "mean": mean,
                     "ci_low": low, "ci_high": high})
    table = pd.DataFrame(rows, columns=["setting", "agent", "lr", "n", "mean", "ci_low", "ci_high"])
    setting_order = {s.name: i for i, s in enumerate(settings)}
    table = table.sort_values(["setting", "agent", "lr"], key=lambda col: col.map(setting_order)
                              if col.name == "setting" else col, kind="stable").reset_index(drop=True)
    best = {}
    for (setting, agent), group in table.groupby(["setting", "agent"], sort=False):
        ranked = group.sort_values(["mean", "lr"], ascending=[False, True], kind="stable")
        best[(setting, agent)] = float(ranked["lr"].iloc[0])
    table["chosen"] = [best.get((r.setting, r.agent)) == r.lr for r in table.itertuples()]
    labels = {s.name: s.label for s in settings}
    lines = [f"Learning-rate search: mean {metric} on {options.get('eval_users', 100)} validation users "
             f"(never the test users), 95% CI over seeds; chosen = best mean"
             + (f"; model options {options['model']}" if options.get("model") else "") + ".", "",
             f"| setting | embedder | lr | seeds | {metric} | chosen |", "| --- | --- | --- | --- | --- | --- |"]
    for r in table.itertuples():
        ci = "" if math.isnan(r.ci_low) else f" ± {(r.ci_high - r.ci_low) / 2:.3f}"
        lines.append(f"| {labels.get(r.setting, r.setting)} | {AGENT_LABELS.get(r.agent, r.agent)} | {r.lr:g} | "
                     f"{r.n} | {r.mean:.3f}{ci} | {'yes' if r.chosen else ''} |")
    out = Path(out)
    markdown = "\n".join(lines) + "\n"
    files = [out / "tune.md", out / "tune.csv", out / "tune.json"]
    write_atomic(files[0], markdown)
    write_atomic(files[1], table.to_csv(index=False))
    write_atomic(files[2], _json({"metric": metric, "best": [{"setting": s, "agent": a, "lr": lr}
                                                           for (s, a), lr in best.items()]}))
    return TuneReport(outcomes, metric, table, best, markdown, files)


def _group_runs(outcomes: Iterable[RunOutcome], metric: str) -> Iterator[tuple[tuple[str, str, float], list[float]]]:
    """``metric`` of the finished runs grouped by (setting, agent, lr), in sweep order."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for o in outcomes:
        if o.status == "failed":
            continue
        if metric not in o.metrics:
            raise ValueError(f"metric {metric!r} was not measured; choose from {sorted(o.metrics)}")
        groups.setdefault((o.spec.setting, o.spec.agent, o.spec.lr), []).append(o.metrics[metric])
    return iter(groups.items())


__all__ = [
    "AGENTS", "BASELINES", "EMBEDDERS", "Report", "RunOutcome", "RunSpec", "Setting", "derived_seeds",
    "make_env", "mean_ci", "paired_test", "paired_tests", "report", "reproduce", "run", "run_safely",
    "summarize", "sweep", "table_settings", "table_specs", "tune", "TuneReport",
]
