"""The paper's figures from a sweep's run directories: Fig. 4/6 (HR@k through training) and
Fig. 5 (per item, recommended minus liked). matplotlib is the optional ``plot`` extra."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_ft.agents.registry import REFERENCE_BASELINE
from recsim_ft.experiments.executors import RunOutcome
from recsim_ft.experiments.specs import agent_label, row_order

#: The figures of a report (file ``<stem>_<name>.png``) and what each shows, as the report says.
FIGURES = {
    "hr_curves": (
        "HR@k on the test users through training, mean over seeds, one panel per setting and k, "
        "with the GBDT (dash-dotted, black), popularity (dotted) and random (dashed) baselines "
        "as horizontal lines "
        "(the paper's Fig. 4 and 6)."
    ),
    "fig5": (
        "Recommended minus liked, per item (the paper's Fig. 5): items on the x axis ranked by "
        "how many test users like them (most liked first); each test user gets as many "
        "recommendations as items they like, and the y axis counts how often an item is "
        "recommended minus how often it is liked (mean over seeds). A perfect ranker is 0 "
        "everywhere; above 0 an item is pushed beyond its appeal, below 0 it is recommended "
        "less than it is liked (a model that favours popular items rises on the left)."
    ),
}


def figure_path(out: Path, stem: str, name: str) -> Path:
    """Where the report ``stem`` in ``out`` keeps figure ``name`` (a key of ``FIGURES``)."""
    return out / f"{stem}_{name}.png"


def paper_figures(
    outcomes: Sequence[RunOutcome], out: Path, stem: str, labels: dict[str, str]
) -> list[Path]:
    """Write ``<stem>_hr_curves.png`` (Fig. 4/6) and ``<stem>_fig5.png`` (Fig. 5) into ``out``
    from the finished two-tower runs; returns the paths written."""
    # matplotlib is the optional ``plot`` extra: imported here so that a sweep without it still
    # writes its tables (``report`` catches the ImportError and says so)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    trained = [o for o in outcomes if o.status != "failed" and o.spec.trains_model]
    settings = list(dict.fromkeys(o.spec.setting for o in trained))
    if not settings:
        return []
    figures = {
        "hr_curves": _hr_curves(plt, outcomes, trained, settings, labels),
        "fig5": _recommended_minus_liked(plt, trained, settings, labels),
    }
    paths = []
    for name, fig in figures.items():
        if fig is None:
            continue
        fig.tight_layout()
        paths.append(figure_path(out, stem, name))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def _hr_curves(
    plt: Any,
    outcomes: Sequence[RunOutcome],
    trained: Sequence[RunOutcome],
    settings: list[str],
    labels: dict[str, str],
) -> Any:
    """Fig. 4/6: mean HR@k over seeds through training, one panel per (setting, k), with the
    GBDT, popularity and random baselines as horizontal lines; None without any training curve."""
    curves = {}
    for o in trained:
        path = o.run_dir / "curve.csv"
        if path.exists():
            curves[o.spec.setting, o.spec.row, o.spec.seed] = pd.read_csv(path)
    hr_columns = sorted(
        {c for df in curves.values() for c in df.columns if c.startswith("HR@")},
        key=lambda c: int(c[3:]),
    )
    if not hr_columns:
        return None
    fig, axes = plt.subplots(
        len(settings),
        len(hr_columns),
        squeeze=False,
        figsize=(3.2 * len(hr_columns), 2.6 * len(settings)),
    )
    rows = sorted({row for _, row, _ in curves}, key=row_order)
    for i, setting in enumerate(settings):
        for j, column in enumerate(hr_columns):
            ax = axes[i, j]
            for agent in rows:
                frames = [
                    df[["step", column]].dropna()
                    for (s, a, _), df in curves.items()
                    if s == setting and a == agent and column in df
                ]
                if frames:
                    mean = pd.concat(frames).groupby("step")[column].mean()
                    ax.plot(mean.index, mean.to_numpy(), label=agent_label(agent))
            for agent, style, color in (
                (REFERENCE_BASELINE, "-.", "black"),
                ("popularity", ":", "grey"),
                ("random", "--", "grey"),
            ):
                values = [
                    o.metrics[column]
                    for o in outcomes
                    if o.status != "failed"
                    and o.spec.setting == setting
                    and o.spec.agent == agent
                    and column in o.metrics
                ]
                if values:
                    label = agent_label(agent)
                    ax.axhline(np.mean(values), color=color, ls=style, lw=1, label=label)
            ax.set_title(f"{labels.get(setting, setting)}: {column}", fontsize=8)
            ax.set_xlabel("training step")
            ax.set_ylim(0, 1.02)
    axes[0, 0].legend(fontsize=7)
    return fig


def _recommended_minus_liked(
    plt: Any, trained: Sequence[RunOutcome], settings: list[str], labels: dict[str, str]
) -> Any:
    """Fig. 5: per item, ranked by how many test users like it, how often it is recommended
    minus how often it is liked (mean over seeds), one panel per setting."""
    fig, axes = plt.subplots(1, len(settings), squeeze=False, figsize=(4.5 * len(settings), 3))
    rows = sorted({o.spec.row for o in trained}, key=row_order)
    for ax, setting in zip(axes[0], settings, strict=True):
        for agent in rows:
            ranked = []
            for o in trained:
                if (
                    o.spec.setting == setting
                    and o.spec.row == agent
                    and (o.run_dir / "items.csv").exists()
                ):
                    items = pd.read_csv(o.run_dir / "items.csv").sort_values(
                        "liked", ascending=False, kind="stable"
                    )
                    ranked.append(items["recommended_minus_liked"].to_numpy())
            if ranked:
                ax.plot(
                    np.arange(1, len(ranked[0]) + 1),
                    np.mean(ranked, axis=0),
                    label=agent_label(agent),
                )
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(labels.get(setting, setting), fontsize=9)
        ax.set_xlabel("item rank by number of likes")
        ax.set_ylabel("recommended − liked")
    axes[0, 0].legend(fontsize=7)
    return fig
