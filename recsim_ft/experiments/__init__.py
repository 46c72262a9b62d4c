"""Experiments: single runs, sweeps over (setting, agent, seed), and the paper's tables.

One run, from ``recsim-ft reproduce`` to a table, passes through one module per concern:

- ``specs``: what to run: the paper's table settings and the ``RunSpec`` of one run;
- ``runs``: one run (``run``): fit or build the agent, evaluate it, write its run directory;
- ``rundir``: the run directory (``RunDir``): its files, preparing it, reading it, loading its
  model;
- ``executors``: a sweep of runs in-process, in a process pool or on Ray, reusing finished runs;
- ``stats``: mean and confidence interval over seeds, paired tests FT-Mamba vs FT-Transformer;
- ``reports``: the Markdown and CSV tables beside the paper's numbers (``reproduce``);
- ``figures``: the paper's figures (Fig. 4/6 and 5);
- ``tuning``: the search of learning rates and baseline hyperparameters on validation users
  (``tune``).

The paper's protocol per env (learning rate, logged events, extra metrics) is
``recsim_ft.protocol``, read by these modules and by the trainer alike.
"""

from recsim_ft._deprecation import moved_names
from recsim_ft.experiments.executors import RunOutcome, run_safely, sweep
from recsim_ft.experiments.reports import Report, markdown_table, report, reproduce
from recsim_ft.experiments.rundir import DONE_MARKER, ERROR_FILE, RunDir, SavedRun, finished
from recsim_ft.experiments.runs import MODEL_FILE, evaluate_saved_model, run
from recsim_ft.experiments.specs import (
    AGENT_LABELS,
    AGENTS,
    BASELINE_GRIDS,
    STRONG_BASELINES,
    TABLE_AGENTS,
    TUNE_AGENTS,
    VACCINE_SETTINGS,
    RunSpec,
    Setting,
    derived_seeds,
    table_settings,
    table_specs,
)
from recsim_ft.experiments.stats import mean_ci, paired_test, paired_tests, runs_frame, summarize
from recsim_ft.experiments.tuning import TUNABLE_AGENTS, TuneReport, tune, tuned_params
from recsim_ft.models.presets import EMBEDDERS

#: Names that moved in version 0.2: ``make_env`` to the env layer, ``evaluate_run`` renamed; in
#: 0.2 the training fields a preset sets went to ``TrainConfig``'s field metadata.
__getattr__ = moved_names(
    __name__,
    {
        "make_env": "recsim_ft.envs.make_env",
        "evaluate_run": f"{__name__}.evaluate_saved_model",
        "TRAINING_FIELDS": "recsim_ft.train.PRESET_FIELDS",
    },
)

__all__ = [
    "AGENTS",
    "AGENT_LABELS",
    "BASELINE_GRIDS",
    "DONE_MARKER",
    "EMBEDDERS",
    "ERROR_FILE",
    "MODEL_FILE",
    "STRONG_BASELINES",
    "TABLE_AGENTS",
    "TUNABLE_AGENTS",
    "TUNE_AGENTS",
    "VACCINE_SETTINGS",
    "Report",
    "RunOutcome",
    "RunDir",
    "RunSpec",
    "SavedRun",
    "Setting",
    "TuneReport",
    "derived_seeds",
    "evaluate_saved_model",
    "finished",
    "markdown_table",
    "mean_ci",
    "paired_test",
    "paired_tests",
    "report",
    "reproduce",
    "run",
    "run_safely",
    "runs_frame",
    "summarize",
    "sweep",
    "table_settings",
    "table_specs",
    "tune",
    "tuned_params",
]
