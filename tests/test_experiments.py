"""Experiments: statistics against scipy and hand computations, the paper's numbers against the
paper's text, and a tiny sweep (reuse of finished runs, a failing run reported, report files)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recsim_ft import experiments
from recsim_ft.agents.registry import names
from recsim_ft.envs import make_env
from recsim_ft.experiments import TABLE_AGENTS, RunSpec, Setting, mean_ci, paired_test
from recsim_ft.paper_results import METRICS, TABLE_1, TABLE_2

PAPER_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "paper"
# "toy_env:" makes Gymnasium import tests/toy_env.py, also inside spawned sweep workers
TOY = "toy_env:ToyRec-v0"


# -- statistics ------------------------------------------------------------------------------------
def test_mean_ci_matches_the_t_formula():
    values = np.array([0.91, 0.95, 0.97, 0.93, 0.99])
    mean, low, high = mean_ci(values)
    half = 2.7764451051977987 * values.std(ddof=1) / math.sqrt(5)  # t(0.975, df=4)
    assert mean == pytest.approx(0.95)
    assert (low, high) == pytest.approx((0.95 - half, 0.95 + half))
    assert mean_ci([0.5])[0] == 0.5 and math.isnan(mean_ci([0.5])[1])
    assert mean_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))


def test_paired_test_matches_scipy_and_known_values():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.0, 12)
    b = a - rng.normal(0.05, 0.03, 12)
    result = paired_test(a, b)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(12))
    assert result["t_stat"] == pytest.approx(t)
    assert result["t_pvalue"] == pytest.approx(2 * stats.t.sf(abs(t), 11))
    assert result["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert result["mean_diff"] == pytest.approx(d.mean())
    # five positive differences: W = 0, exact two-sided p = 2 / 2**5
    known = paired_test([2, 3, 4, 5, 6], [1, 1, 1, 1, 1])
    assert known["wilcoxon_stat"] == 0 and known["wilcoxon_pvalue"] == pytest.approx(0.0625)


def test_paired_test_is_nan_when_undefined():
    assert math.isnan(paired_test([0.5], [0.4])["t_pvalue"])
    same = paired_test([0.5, 0.6], [0.5, 0.6])
    assert (
        same["mean_diff"] == 0
        and math.isnan(same["t_pvalue"])
        and math.isnan(same["wilcoxon_pvalue"])
    )
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([1, 2], [1])


# -- the paper's numbers ---------------------------------------------------------------------------
@pytest.mark.skipif(not PAPER_DIR.is_dir(), reason="shared/paper not available")
def test_paper_numbers_match_the_paper_text():
    """Tables I and II are tab-separated rows in the text; Table II leaves repeated k / m blank."""
    found = {}
    k = m = None
    for line in next(PAPER_DIR.glob("*.txt")).read_text().splitlines():
        fields = line.split("\t")
        if len(fields) == 11 and fields[1] in ("Mamba", "Transformer"):
            found["spotify" if fields[0] == "Spotify" else "hm", fields[1].lower()] = fields[2:]
        elif len(fields) == 12 and fields[2] in ("Mamba", "Transformer"):
            k, m = fields[0] or k, fields[1] or m
            found[f"k{k}_m{m}", fields[2].lower()] = fields[3:]
    assert len(found) == 2 * (len(TABLE_1) + len(TABLE_2))
    for (setting, embedder), values in found.items():
        row = {**TABLE_1, **TABLE_2}[setting][embedder]
        assert [row[metric] for metric in METRICS] == [float(v) for v in values], (
            setting,
            embedder,
        )


def test_table_settings():
    assert [s.name for s in experiments.table_settings(1)] == ["spotify", "hm"]
    *_, large, ids, large_ids = experiments.table_settings(1, extra=True)  # only when named
    assert (large.name, large.env_kwargs) == ("hm_20k", {"n_items": 20_000})
    assert ids.name == "hm_ids" and ids.env_kwargs["item_features"][-1] == "article_id"
    assert large_ids.env_kwargs == {**ids.env_kwargs, "n_items": 20_000}
    table2 = experiments.table_settings(2)
    assert [s.name for s in table2] == list(TABLE_2)
    assert table2[3].env_kwargs == {"clusters": 50, "messages": 50}
    specs = experiments.table_specs(table2[:1], seeds=range(2), agents=("mamba",))
    assert [s.env_kwargs["seed"] for s in specs] == [0, 1]  # messages re-sampled per seed
    with pytest.raises(ValueError, match="table must be 1 or 2"):
        experiments.table_settings(3)


def test_markdown_shows_the_paper_beside_ours():
    runs = pd.DataFrame(
        [
            {"setting": "spotify", "agent": agent, "seed": seed, "metric": "HR@1", "value": v}
            for agent, values in (
                ("mamba", (0.96, 0.98, 0.97)),
                ("transformer", (0.80, 0.90, 0.85)),
                ("oracle", (1.0, 1.0, 1.0)),
            )
            for seed, v in enumerate(values)
        ]
    )
    summary = experiments.summarize(runs)
    mamba = summary[summary.agent == "mamba"].iloc[0]
    assert (mamba["mean"], mamba["paper"]) == pytest.approx((0.97, 0.977))
    assert (mamba["min"], mamba["max"]) == (0.96, 0.98)
    assert summary[summary.agent == "oracle"]["paper"].isna().all()
    tests = experiments.paired_tests(runs)
    assert tests.iloc[0]["mean_diff"] == pytest.approx(0.12)
    markdown = experiments.markdown_table(
        summary, tests, {"spotify": "Spotify"}, users={"spotify": (94, 98, 100)}
    )
    assert "### Spotify (3 seeds; 94-98 test users of 100 per seed scored" in markdown
    assert "| FT-Mamba | 0.970 ± 0.025 |" in markdown and "paper | 0.977 |" in markdown
    assert "| oracle | 1.000 ± 0.000 |" in markdown and "Wilcoxon" in markdown
    assert experiments.reports.RANGE_NOTE not in markdown


def test_tables_of_two_seeds_show_the_range_not_a_useless_interval():
    """With 2 seeds a 95% half-width is 12.7 standard errors: the table shows the range."""
    runs = pd.DataFrame(
        [
            {"setting": "spotify", "agent": "mamba", "seed": seed, "metric": "HR@1", "value": v}
            for seed, v in enumerate((0.412, 0.798))
        ]
    )
    summary = experiments.summarize(runs)
    assert (summary["ci_high"] - summary["ci_low"]).item() / 2 > 1  # the interval it replaces
    markdown = experiments.markdown_table(summary, experiments.paired_tests(runs))
    assert "(2 seeds; mean (lowest–highest seed))" in markdown
    assert "| FT-Mamba | 0.605 (0.412–0.798) |" in markdown and "±" not in markdown
    assert experiments.reports.RANGE_NOTE in markdown


# -- sweeps ---------------------------------------------------------------------------------------
def _toy_settings() -> list[Setting]:
    return [
        Setting("toy", "Toy", TOY, {"n_items": 12, "n_groups": 3}),
        Setting("broken", "Broken", TOY, {"n_items": 12, "n_groups": 0}),
    ]  # the env refuses it


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    options = dict(preset="quick", steps=10, n_samples=320, eval_every=5, eval_users=40)
    report = experiments.reproduce(
        1, out, seeds=2, settings=_toy_settings(), progress=False, **options
    )
    return out, report, options


@pytest.fixture
def toy_sweep_copy(toy_sweep, tmp_path):
    """A copy of the toy sweep's results for a test to re-run into: (copy, first sweep's
    folder, its report, its options)."""
    import shutil

    first_out, first, options = toy_sweep
    out = tmp_path / "results"
    shutil.copytree(first_out, out)
    return out, first_out, first, options


def test_sweep_writes_the_table_and_reports_the_failure(toy_sweep):
    out, report, _ = toy_sweep
    for name in ("table1.md", "table1.csv", "table1_paired.csv", "table1_runs.csv"):
        assert (out / name).is_file()
    n_runs = 2 * len(TABLE_AGENTS)
    assert [o.status for o in report.outcomes if o.spec.setting == "toy"] == ["done"] * n_runs
    failed = report.failed
    assert len(failed) == n_runs and {o.spec.setting for o in failed} == {"broken"}
    assert "n_groups" in failed[0].error
    assert "Traceback" in (failed[0].run_dir / "error.txt").read_text()
    assert "Failed runs" in report.markdown and "broken" in report.markdown

    summary = pd.read_csv(out / "table1.csv")
    assert set(summary.setting) == {"toy"}
    # a preset other than the paper's names its rows
    assert set(summary.agent) == {
        f"{a}-quick" if a in ("mamba", "transformer") else a for a in TABLE_AGENTS
    }
    oracle = summary[(summary.agent == "oracle") & (summary.metric == "HR@1")]
    assert oracle["mean"].item() == 1.0  # the toy env's oracle is a perfect ranker
    assert (summary["n"] == 2).all()
    paired = pd.read_csv(out / "table1_paired.csv")
    assert (paired["n_pairs"] == 2).all()

    run_dir = out / "runs" / "toy" / "mamba-quick-s10" / "seed1"
    for name in (
        "config.json",
        "metrics.json",
        "curve.csv",
        "items.csv",
        "model.safetensors",
        "DONE",
    ):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint.pt").exists()
    curve = pd.read_csv(run_dir / "curve.csv")
    assert list(curve["step"]) == [0, 5, 10]
    items = pd.read_csv(run_dir / "items.csv")
    assert len(items) == 12 and items["recommended_minus_liked"].sum() == 0


def test_tables_show_costs_and_test_ft_mamba_against_the_gbdt(toy_sweep):
    out, report, _ = toy_sweep
    metrics = json.loads((out / "runs" / "toy" / "gbdt" / "seed0" / "metrics.json").read_text())
    assert metrics["fit_seconds"] > 0 and metrics["score_ms_per_1000_users"] > 0
    assert metrics["collect_seconds"] > 0  # timed apart from the fit
    assert "collect_seconds" not in json.loads(
        (out / "runs" / "toy" / "oracle" / "seed0" / "metrics.json").read_text()
    )  # the oracle reads no log
    markdown = (out / "table1.md").read_text()
    assert "| fit s | score ms / 1k users |" in markdown
    assert "Paired tests, FT-Mamba (quick) − GBDT" in markdown
    assert "Paired tests, FT-Mamba (quick) − FT-Transformer (quick)" in markdown
    paired = pd.read_csv(out / "table1_paired.csv")
    assert {
        ("mamba-quick", "transformer-quick"),
        ("mamba-quick", "gbdt"),
        ("transformer-quick", "gbdt"),
    } == set(zip(paired.a, paired.b, strict=True))
    costs = pd.read_csv(out / "table1_costs.csv")
    fit = costs[(costs.agent == "gbdt") & (costs.cost == "fit_seconds")]
    assert sorted(fit.seed) == [0, 1] and (fit.value > 0).all()
    assert f"| {fit.value.mean():.3g} |" in markdown.split("| GBDT |")[1].splitlines()[0]
    summary = pd.read_csv(out / "table1.csv")
    for agent in ("gbdt", "linear", "segment_popularity"):
        hr = summary[(summary.agent == agent) & (summary.metric == "HR@1")]["mean"].item()
        popularity = summary[(summary.agent == "popularity") & (summary.metric == "HR@1")]
        assert hr > popularity["mean"].item(), agent  # the toy env's groups need the user


def test_a_model_run_made_before_the_cost_columns_gets_its_scoring_cost(toy_sweep_copy):
    out, _, _, options = toy_sweep_copy
    path = out / "runs" / "toy" / "mamba-quick-s10" / "seed0" / "metrics.json"
    saved = json.loads(path.read_text())
    del saved["score_ms_per_1000_users"]
    path.write_text(json.dumps(saved))
    experiments.reproduce(
        1, out, seeds=1, settings=_toy_settings()[:1], agents=["random"], progress=False, **options
    )
    again = json.loads(path.read_text())
    assert again["score_ms_per_1000_users"] > 0
    assert again["metrics"] == saved["metrics"]


def test_popularity_by_share_runs_as_rows_of_their_own(toy_sweep_copy):
    """The share baselines (``names(paired=True)``) join a table on request: their own rows and
    run directories beside the rate-based ones, and the segment one is tunable."""
    out, _, _, options = toy_sweep_copy
    experiments.reproduce(
        1,
        out,
        seeds=1,
        settings=_toy_settings()[:1],
        agents=["popularity", *names(paired=True)],
        progress=False,
        **options,
    )
    for agent in names(paired=True):
        assert (out / "runs" / "toy" / agent / "seed0" / "metrics.json").is_file()
    markdown = (out / "table1.md").read_text()
    assert "| popularity (share) (1 seed) |" in markdown  # the toy sweep's others have 2
    assert "| segment popularity (share) (1 seed) |" in markdown
    summary = pd.read_csv(out / "table1.csv")
    hr = summary[summary.metric == "HR@1"].set_index("agent")["mean"]
    assert hr["segment_popularity_share"] > hr["popularity_share"]  # the toy's groups need the user
    assert "segment_popularity_share" in experiments.BASELINE_GRIDS


def test_a_table_rerun_at_bf16_shows_both_precisions_and_pairs_them(toy_sweep_copy):
    """``reproduce --precision bf16`` into the results of an fp32 sweep trains only the models
    at bf16 (the baselines are shared) and reports both precisions as rows of their own, each
    model at bf16 paired against itself at fp32."""
    out, _, _, options = toy_sweep_copy
    again = experiments.reproduce(
        1,
        out,
        seeds=2,
        settings=_toy_settings()[:1],
        agents=["mamba", "transformer", "gbdt"],
        progress=False,
        **{**options, "precision": "bf16"},
    )
    done = {(o.spec.row, o.status) for o in again.outcomes if o.status == "done"}
    assert done == {("mamba-quick-bf16", "done"), ("transformer-quick-bf16", "done")}
    rows = set(pd.read_csv(out / "table1.csv").agent)
    assert {"mamba-quick", "mamba-quick-bf16", "transformer-quick-bf16", "gbdt"} <= rows
    paired = pd.read_csv(out / "table1_paired.csv")
    assert {
        ("mamba-quick-bf16", "mamba-quick"),
        ("transformer-quick-bf16", "transformer-quick"),
    } <= set(zip(paired.a, paired.b, strict=True))
    assert "| FT-Mamba (quick, bf16) |" in (out / "table1.md").read_text()


def test_a_table_rerun_with_the_prior_or_early_stopping_shows_it_as_a_row_of_its_own(
    toy_sweep_copy,
):
    """``reproduce --preset ranking --popularity-prior`` (or ``--select-metric HR@1``) into a
    ranking sweep's results: the models with the prior (or early stopping) are rows of their own
    beside those without, paired with them."""
    out, _, _, options = toy_sweep_copy
    options = {k: v for k, v in options.items() if k != "preset"}
    options["batch_size"] = 16  # the toy log's positive rows are few
    # auto, the preset's: off over the toy's whole catalogue
    for change in (
        {"popularity_prior": "auto"},
        {"popularity_prior": True},
        {"select_metric": "HR@1"},
    ):
        experiments.reproduce(
            1,
            out,
            seeds=2,
            settings=_toy_settings()[:1],
            agents=["mamba", "popularity"],
            presets=["ranking"],
            progress=False,
            **change,
            **options,
        )
    assert (out / "runs" / "toy" / "mamba-ranking-prior-b16-s10" / "seed1" / "DONE").is_file()
    rows = set(pd.read_csv(out / "table1.csv").agent)
    assert {"mamba-ranking", "mamba-ranking-prior", "mamba-ranking-bestHR@1", "popularity"} <= rows
    paired = set(zip(*pd.read_csv(out / "table1_paired.csv")[["a", "b"]].T.values, strict=True))
    assert {
        ("mamba-ranking-prior", "mamba-ranking"),
        ("mamba-ranking-bestHR@1", "mamba-ranking"),
    } <= paired
    table = (out / "table1.md").read_text()
    assert "| FT-Mamba (ranking, prior) |" in table
    assert "| FT-Mamba (ranking, early stopping on HR@1) |" in table
    with pytest.raises(ValueError, match="popularity_prior adds the log's popularity.*'mse'"):
        experiments.RunSpec("Spotify-v0", "mamba", popularity_prior=True)


def test_sweep_figures(toy_sweep):
    out, report, _ = toy_sweep
    pytest.importorskip("matplotlib")
    for name in ("table1_hr_curves.png", "table1_fig5.png"):
        assert (out / name).stat().st_size > 1000


def test_rerunning_a_sweep_reuses_finished_runs(toy_sweep):
    out, first, options = toy_sweep
    done = out / "runs" / "toy" / "mamba-quick-s10" / "seed0" / "DONE"
    stamp = done.stat().st_mtime_ns
    again = experiments.reproduce(
        1, out, seeds=2, settings=_toy_settings()[:1], progress=False, **options
    )
    assert [o.status for o in again.outcomes] == ["reused"] * 2 * len(TABLE_AGENTS)
    assert done.stat().st_mtime_ns == stamp
    ours = {(o.spec.agent, o.spec.seed): o.metrics for o in first.outcomes if o.status == "done"}
    assert {(o.spec.agent, o.spec.seed): o.metrics for o in again.outcomes} == ours
    with pytest.raises(ValueError, match="different settings.*steps"):
        experiments.reproduce(
            1,
            out,
            seeds=1,
            settings=_toy_settings()[:1],
            progress=False,
            **{**options, "steps": 11},
        )


def test_rerunning_with_fewer_agents_keeps_every_finished_run_in_the_tables(
    toy_sweep_copy, monkeypatch
):
    """``--agents oracle random`` into a results directory of a full sweep: the tables and
    figures still cover every finished run there, never only the subset."""
    out, first_out, first, options = toy_sweep_copy
    again = experiments.reproduce(
        1,
        out,
        seeds=1,
        settings=_toy_settings()[:1],
        agents=("oracle", "random"),
        progress=False,
        **options,
    )
    assert sorted({o.spec.agent for o in again.outcomes}) == sorted(TABLE_AGENTS)
    assert {o.spec.seed for o in again.outcomes} == {0, 1}
    for name in ("table1.csv", "table1_runs.csv", "table1_paired.csv"):
        assert (out / name).read_bytes() == (first_out / name).read_bytes(), name
    assert "| FT-Mamba (quick) |" in (out / "table1.md").read_text()
    if importlib.util.find_spec("matplotlib"):
        assert {p.name for p in again.files} >= {"table1_hr_curves.png", "table1_fig5.png"}
        assert "recommended minus liked" in (out / "table1.md").read_text().lower()

    # figures that cannot be drawn again (no matplotlib) are removed, not left beside the table
    stale = out / "table1_fig5.png"
    stale.write_bytes(b"an earlier figure")

    def no_matplotlib(*args):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(experiments.reports, "paper_figures", no_matplotlib)
    again = experiments.reproduce(
        1,
        out,
        seeds=1,
        settings=_toy_settings()[:1],
        agents=("oracle",),
        progress=False,
        **options,
    )
    assert not stale.exists() and not (out / "table1_hr_curves.png").exists()
    assert any("matplotlib is not installed" in note for note in again.notes)
    assert any(f"removed {stale}" in note for note in again.notes)


def test_a_run_built_with_an_older_default_is_not_reused(toy_sweep, tmp_path):
    """A finished run from a version whose model defaults differed (its config has no
    mamba_residual: it was built with the residual) must not pass for one of this version."""
    import shutil

    out, _, options = toy_sweep
    spec = RunSpec(TOY, "mamba", 0, {"n_items": 12, "n_groups": 3}, "toy", **options)
    old = tmp_path / "old"
    shutil.copytree(out / "runs" / spec.relative_dir(), old)
    assert experiments.finished(spec, old)
    config = json.loads((old / "config.json").read_text())
    del config["model"]["mamba_residual"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model.mamba_residual"):
        experiments.finished(spec, old)


def test_same_seed_same_metrics_and_interrupted_run_is_redone(toy_sweep, tmp_path):
    out, first, options = toy_sweep
    spec = RunSpec(TOY, "mamba", 1, {"n_items": 12, "n_groups": 3}, "toy", **options)
    metrics = experiments.run(spec, tmp_path / "again")
    saved = out / "runs/toy/mamba-quick-s10/seed1/metrics.json"
    assert metrics == json.loads(saved.read_text())["metrics"]
    # a run directory without DONE (killed mid-run) is run again by the next sweep
    partial = tmp_path / "sweep" / "runs" / "toy" / "oracle" / "seed0"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    (outcome,) = experiments.sweep(
        [RunSpec(TOY, "oracle", 0, {"n_items": 12, "n_groups": 3}, "toy", **options)],
        tmp_path / "sweep",
        progress=False,
    )
    assert outcome.status == "done" and (partial / "DONE").is_file()


def test_parallel_sweep_gives_the_same_files(toy_sweep, tmp_path):
    out, first, options = toy_sweep
    specs = [
        RunSpec(TOY, agent, seed, {"n_items": 12, "n_groups": 3}, "toy", **options)
        for agent in ("popularity", "random")
        for seed in (0, 1)
    ]
    outcomes = experiments.sweep(specs, tmp_path, jobs=2, progress=False)
    assert [o.status for o in outcomes] == ["done"] * 4
    for o in outcomes:
        ours = (o.run_dir / "metrics.json").read_text()
        serial = (out / "runs" / o.spec.relative_dir() / "metrics.json").read_text()
        assert json.loads(ours)["metrics"] == json.loads(serial)["metrics"]


def test_sweep_progress_counts_the_training_steps_of_worker_processes(tmp_path, capsys):
    """The bar of a parallel sweep counts training steps (its ETA: steps left at the step rate),
    fed by the worker processes, with a bar per run in training."""
    specs = [
        RunSpec(
            TOY,
            agent,
            0,
            {"n_items": 12, "n_groups": 3},
            "toy",
            preset="quick",
            steps=30,
            n_samples=320,
            eval_users=40,
        )
        for agent in ("mlp", "transformer", "oracle")
    ]
    outcomes = experiments.sweep(specs, tmp_path, jobs=2, progress=True)
    assert [o.status for o in outcomes] == ["done"] * 3
    err = capsys.readouterr().err
    assert "runs 3/3 done, training steps: 100%" in err and "| 60/60 [" in err
    # the workers reported
    assert "toy/mlp-quick-s30/seed0:" in err and "toy/transformer-quick-s30/seed0:" in err


def test_sweep_progress_total_follows_the_runs(capsys):
    """The step total starts from the specs, drops the steps a checkpoint already holds and the
    steps a failed run will not take; a finished run counts all its steps."""
    specs = [RunSpec(TOY, "mlp", seed, steps=100) for seed in range(3)]
    with experiments.progress.SweepProgress([*specs, RunSpec(TOY, "oracle")]) as bars:
        assert (bars.steps.total, bars.steps.n) == (300, 0)
        bars.update(0, 40, 100)  # resumed from a checkpoint at step 40
        bars.update(0, 70, 100)
        assert (bars.steps.total, bars.steps.n) == (260, 30)
        bars.update(1, 0, 100)
        bars.update(1, 10, 100)
        bars.finish(1, "failed")
        assert (bars.steps.total, bars.steps.n) == (170, 40)
        bars.finish(0, "done")
        bars.finish(2, "done")  # finished without a report: all its steps count
        bars.finish(3, "done")
        assert (bars.steps.total, bars.steps.n) == (170, 170)
    assert "runs 4/4 done" in capsys.readouterr().err


def test_ray_executor(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    specs = [
        RunSpec(
            TOY,
            agent,
            seed,
            {"n_items": 12, "n_groups": 3},
            "toy",
            n_samples=640,
            eval_users=40,
            preset="quick",
        )
        for seed in (0, 1)
        for agent in ("popularity", "mlp")
    ]
    # Ray workers do not inherit sys.path: point them at tests/ for toy_env
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent)}},
    )
    try:
        outcomes = experiments.sweep(specs, tmp_path / "ray", executor="ray", progress=True)
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert "runs 4/4 done, training steps: 100%" in err and "| 40/40 [" in err
    assert "toy/mlp-quick/seed0:" in err  # the Ray task reported its steps through the Ray queue
    local = experiments.sweep(specs, tmp_path / "local", progress=False)
    assert [o.status for o in outcomes] == ["done"] * 4
    for o, expected in zip(outcomes, local, strict=True):
        assert o.metrics == expected.metrics
        for name in ("config.json", "metrics.json", "items.csv", "DONE"):
            assert (o.run_dir / name).is_file()
        assert (o.run_dir / "items.csv").read_text() == (expected.run_dir / "items.csv").read_text()


# -- learning-rate search --------------------------------------------------------------------------
def test_tune_chooses_the_best_lr_on_validation_users_only(tmp_path):
    options = dict(preset="quick", steps=20, n_samples=640, eval_users=40)
    report = experiments.tune(
        _toy_settings()[:1],
        tmp_path,
        lrs=[1e-4, 1e-2],
        agents=["mlp"],
        seeds=2,
        progress=False,
        **options,
    )
    assert [o.status for o in report.outcomes] == ["done"] * 4
    assert {o.spec.seed for o in report.outcomes} == {1000, 1001}  # not the seeds reproduce reports
    table = report.table
    assert list(table["lr"]) == [1e-4, 1e-2] and (table["n"] == 2).all()
    best = table.loc[table["mean"].idxmax(), "lr"]
    assert report.best == {("toy", "mlp"): best} and table["chosen"].sum() == 1
    for o in report.outcomes:
        # every run was scored on validation users: its metrics are those of the saved model on them
        config = json.loads((o.run_dir / "config.json").read_text())
        assert (
            config["spec"]["eval_split"] == "validation"
            and config["train"]["eval_split"] == "validation"
        )
        assert o.run_dir.parent.name == f"mlp-quick-lr{o.spec.train.lr:g}-s20"
        env = make_env(TOY, {"n_items": 12, "n_groups": 3})
        from recsim_ft.agents import TwoTowerAgent
        from recsim_ft.evaluate import evaluate

        agent = TwoTowerAgent.load(o.run_dir / experiments.MODEL_FILE, env)
        test_seed = config["seeds"]["test"]
        on_validation = evaluate(agent, env, 40, test_seed, split="validation")
        assert on_validation["NDCG@10"] == pytest.approx(o.metrics["NDCG@10"])
    assert json.loads((tmp_path / "tune.json").read_text())["best"] == [
        {"setting": "toy", "agent": "mlp", "lr": best}
    ]
    assert "validation users" in (tmp_path / "tune.md").read_text()
    with pytest.raises(ValueError, match="only two-tower agents"):
        experiments.tune(_toy_settings()[:1], tmp_path / "x", lrs=[1e-3], agents=["popularity"])
    for typo in ("NDCG@99", "n_users", "ndcg@10"):  # refused before any training
        with pytest.raises(ValueError, match=f"metric '{typo}' was not measured.*NDCG@10"):
            experiments.tune(
                _toy_settings()[:1],
                tmp_path / "typo",
                lrs=[1e-4, 1e-2],
                agents=["mlp"],
                seeds=2,
                metric=typo,
                progress=False,
                **options,
            )
        assert not (tmp_path / "typo").exists()


def test_tune_chooses_baseline_hyperparameters_on_validation_users(tmp_path):
    report = experiments.tune(
        _toy_settings()[:1],
        tmp_path,
        agents=["linear", "segment_popularity"],
        seeds=2,
        grids={"linear": {"ridge": [0.1, 1000.0]}, "segment_popularity": {"prior": [1.0, 1e6]}},
        progress=False,
        n_samples=2_000,
        eval_users=60,
    )
    assert [o.status for o in report.outcomes] == ["done"] * 8
    assert {o.spec.train.eval_split for o in report.outcomes} == {"validation"}
    assert {o.run_dir.parent.name for o in report.outcomes} == {
        "linear-ridge0.1",
        "linear-ridge1000",
        "segment_popularity-prior1",
        "segment_popularity-prior1e+06",
    }
    table = report.table.set_index(["agent", "params"])
    for agent, key, values in (
        ("linear", "ridge", (0.1, 1000.0)),
        ("segment_popularity", "prior", (1.0, 1e6)),
    ):
        means = {v: table.loc[(agent, f"{key}={v:g}"), "mean"] for v in values}
        assert report.best_params[("toy", agent)] == {key: max(means, key=means.get)}
    # a prior of a million keeps every segment at the popularity of the whole log
    assert report.best_params[("toy", "segment_popularity")] == {"prior": 1}
    saved = json.loads((tmp_path / "tune.json").read_text())["best"]
    assert {"setting": "toy", "agent": "segment_popularity", "params": {"prior": 1}} in saved
    assert "--params linear.ridge=" in report.markdown
    tuned = experiments.tuned_params(tmp_path / "tune.json")
    chosen = {a: report.best_params[("toy", a)] for a in ("linear", "segment_popularity")}
    assert tuned == {"toy": chosen}
    table = experiments.reproduce(
        1,
        tmp_path / "table",
        seeds=1,
        settings=_toy_settings()[:1],
        agents=["linear"],
        tuned=tuned,
        progress=False,
        n_samples=2_000,
        eval_users=60,
    )
    assert table.outcomes[0].spec.params == tuned["toy"]["linear"]
    with pytest.raises(ValueError, match="not a tune.json"):
        experiments.tuned_params(tmp_path / "tune.md")
    with pytest.raises(ValueError, match="only two-tower agents .* and strong baselines"):
        experiments.tune(_toy_settings()[:1], tmp_path / "x", agents=["oracle"])


def test_reproduce_takes_baseline_hyperparameters(tmp_path):
    setting = _toy_settings()[:1]
    report = experiments.reproduce(
        1,
        tmp_path,
        seeds=1,
        settings=setting,
        agents=["linear"],
        agent_params={"linear": {"ridge": 1000.0}},
        progress=False,
        n_samples=2_000,
        eval_users=60,
    )
    (outcome,) = report.outcomes
    assert outcome.spec.params == {"ridge": 1000.0}
    assert outcome.run_dir == tmp_path / "runs" / "toy" / "linear-ridge1000" / "seed0"
    with pytest.raises(ValueError, match="different settings \\(params\\)"):
        experiments.reproduce(  # the same directory without the hyperparameters
            1,
            tmp_path,
            seeds=1,
            settings=setting,
            agents=["oracle"],
            progress=False,
            n_samples=2_000,
            eval_users=60,
        )
    with pytest.raises(ValueError, match="does not run"):
        experiments.table_specs(setting, [0], ["gbdt"], {"linear": {"ridge": 1.0}})


def test_a_sweep_refuses_a_run_named_twice(tmp_path):
    """Counted twice, one run would narrow every interval of its table."""
    specs = experiments.table_specs(_toy_settings()[:1], [0, 0], ["random"])
    with pytest.raises(ValueError, match="names the run toy/random/seed0 more than once"):
        experiments.sweep(specs, tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="more than once"):
        experiments.tune(_toy_settings()[:1], tmp_path, lrs=[1e-3, 1e-3], agents=["mlp"])


def test_run_spec_checks_baseline_hyperparameters():
    assert RunSpec(TOY, "gbdt", params={"learning_rate": 0.05}).params == {"learning_rate": 0.05}
    with pytest.raises(ValueError, match="'gbdt' has no hyperparameter 'ridge'.*learning_rate"):
        RunSpec(TOY, "gbdt", params={"ridge": 1.0})
    with pytest.raises(ValueError, match="'mamba' has no hyperparameter 'ridge'; it takes none"):
        RunSpec(TOY, "mamba", params={"ridge": 1.0})
    with pytest.raises(ValueError, match="ridge must be a number, got 'big'"):
        RunSpec(TOY, "linear", params={"ridge": "big"})


def test_run_spec_rejects_bad_split_and_lr():
    with pytest.raises(ValueError, match="eval_split must be one of"):
        RunSpec(TOY, "mamba", eval_split="train")
    with pytest.raises(ValueError, match="lr must be a positive number or None"):
        RunSpec(TOY, "mamba", lr=0.0)
    with pytest.raises(ValueError, match="unknown model option.*'bogus'"):
        RunSpec(TOY, "mamba", model={"bogus": 1})
    assert RunSpec(TOY, "mamba", model={"mamba_residual": False}).model == {"mamba_residual": False}


def test_the_time_left_is_shown_once_it_has_settled(capsys, monkeypatch):
    """The first estimate of a sweep counted its start-up (imports, data, kernels) as training
    and said 55 minutes for a 3-minute job: the time left is the rate since the first step, shown
    once a share of the steps is done."""
    clock = iter([100.0, 100.0, 101.0, 130.0, 130.0])
    monkeypatch.setattr(experiments.progress.time, "monotonic", lambda: next(clock))
    with experiments.progress.SweepProgress([RunSpec(TOY, "mlp", 0, steps=100)]) as bars:
        bars.update(0, 0, 100)
        bars.update(0, 1, 100)  # the first step at t=100: the clock of the estimate starts
        assert bars._time_left() == "estimating the time left"  # 1% done, 1 s
        bars.update(0, 10, 100)  # 10% in 30 s: 90 steps left at 1/3 step per second
        assert bars._time_left() == "about 04:30 left"
    capsys.readouterr()
