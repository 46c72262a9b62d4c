"""Names that moved in version 0.2 still import from their old places, as the very same objects,
with a DeprecationWarning that says where they live now; the public names stay warning-free."""

from __future__ import annotations

import importlib
import warnings

import pytest

import recsim_ft
from recsim_ft import envs, experiments, schema
from recsim_ft.agents import bandits
from recsim_ft.envs.hm import data as hm_data
from recsim_ft.envs.hm import measures as hm_measures
from recsim_ft.envs.hm import synthetic as hm_synthetic
from recsim_ft.models import io
from recsim_ft.train import PRESET_FIELDS

MOVED = [
    ("recsim_ft.envs.base", "Feature", schema.Feature),
    ("recsim_ft.envs.base", "Schema", schema.Schema),
    ("recsim_ft.envs.base", "Batch", schema.Batch),
    ("recsim_ft.envs", "Batch", schema.Batch),
    ("recsim_ft.agents.online", "LinUCBAgent", bandits.LinUCBAgent),
    ("recsim_ft.agents.online", "user_context", bandits.user_context),
    ("recsim_ft.experiments", "make_env", envs.make_env),
    ("recsim_ft.experiments", "evaluate_run", experiments.evaluate_saved_model),
    ("recsim_ft.models.io", "write_checkpoint", io.write_model_file),
    ("recsim_ft.models.io", "read_checkpoint", io.read_model_file),
    ("recsim_ft.experiments", "TRAINING_FIELDS", PRESET_FIELDS),
    ("recsim_ft.envs.hm_data", "read_transactions", hm_data.read_transactions),
    ("recsim_ft.envs.hm_data", "Transactions", hm_data.Transactions),
    ("recsim_ft.envs.hm_synthetic", "synthetic_files", hm_synthetic.synthetic_files),
    ("recsim_ft.envs.hm_measures", "repeat_share", hm_measures.repeat_share),
]


@pytest.mark.parametrize(
    ("old_module", "name", "new"), MOVED, ids=lambda x: getattr(x, "__name__", x)
)
def test_an_old_import_path_warns_and_gives_the_same_object(old_module, name, new):
    module = importlib.import_module(old_module)
    with pytest.warns(
        DeprecationWarning, match=f"{old_module}.{name} is deprecated: use recsim_ft"
    ):
        assert getattr(module, name) is new


def test_unknown_names_are_still_attribute_errors():
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        importlib.import_module("recsim_ft.envs.base").NoSuchThing  # noqa: B018


def test_public_names_need_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (recsim_ft.Batch, recsim_ft.Feature, recsim_ft.Schema) == (
            schema.Batch,
            schema.Feature,
            schema.Schema,
        )
        from recsim_ft.agents import LinUCBAgent, TwoTowerAgent  # noqa: F401
        from recsim_ft.experiments import RunSpec, reproduce, run, tune  # noqa: F401
