"""The svm entry point's search as MLflow child runs, its winner carried by the registered model, and
a test split that cannot steer it (tiny images, random weights, a real SQLite store)."""

import shutil

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from mlproject.data.loaders import load_dataset
from mlproject.data.split import stratified_split
from mlproject.entrypoints import svm
from mlproject.training.svm_training import SEARCH_DATA

pytestmark = pytest.mark.integration

ARGS = ["--weights", "none", "--image-size", "32", "--search-trials", "5"]


def _runs(client, name):
    experiment = client.get_experiment_by_name("Default")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, runs


@pytest.mark.parametrize("search_data", SEARCH_DATA)
def test_trials_are_child_runs_and_the_winner_is_logged_and_registered(tracking_uri, synthetic_data, search_data):
    svm.main(["--data", str(synthetic_data), *ARGS, "--search-data", search_data, "--registered-model-name", "search-test"])
    client = MlflowClient()
    parents, runs = _runs(client, "search-test")
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == int(parent.data.params["search_trials_run"]) == 5
    scored_on = parent.data.params["search_data_used"]
    assert scored_on == parent.data.params["search_data"] == search_data  # enough of each class for the folds
    prefix = {"val": "val_", "train+val_cv": "cv_"}[scored_on]
    assert all(c.data.params["scored_on"] == scored_on and {"C", "kernel"} <= set(c.data.params) for c in children)
    best = max(c.data.metrics[f"{prefix}roc_auc"] for c in children)
    tied = [c for c in children if c.data.metrics[f"{prefix}roc_auc"] >= best - 1e-9]
    winner = min(tied, key=lambda c: (c.data.metrics[f"{prefix}hinge"], float(c.data.params["C"])))
    assert float(parent.data.params["C_chosen"]) == float(winner.data.params["C"])
    assert parent.data.params["kernel_chosen"] == winner.data.params["kernel"]
    assert parent.data.params["C"] == "auto" and parent.data.params["image_size_used"] == "32"
    version = client.get_model_version_by_alias("search-test", "challenger")
    assert version.tags["chosen.C"] == parent.data.params["C_chosen"]
    assert version.tags["chosen.kernel"] == parent.data.params["kernel_chosen"]
    # what `alloop sync` retrains with: the winner, not another search
    from integrations import mlflow_registry

    inherited = mlflow_registry.training_params(mlflow_registry.require("search-test", "challenger"))
    assert (inherited["C"], inherited["kernel"]) == (parent.data.params["C_chosen"], parent.data.params["kernel_chosen"])


def test_a_signal_planted_in_the_test_split_cannot_change_the_choice(tracking_uri, synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    client = MlflowClient()

    svm.main(["--data", str(data), *ARGS, "--registered-model-name", "planted"])
    before = _runs(client, "planted")[0][0]
    # Plant a perfect signal in the test images only: defects white, normal images black.
    split = stratified_split(load_dataset(str(data)), seed=0)
    for record in split.test:
        size = Image.open(record.path).size
        Image.new("L", size, 255 if record.label == "defect" else 0).save(record.path)
    svm.main(["--data", str(data), *ARGS, "--registered-model-name", "planted"])
    after = _runs(client, "planted")[0][0]

    assert after.info.run_id != before.info.run_id
    assert after.data.params["manifest_hash"] == before.data.params["manifest_hash"]  # same records, same split
    for key in ("C_chosen", "kernel_chosen"):
        assert after.data.params[key] == before.data.params[key]
    assert after.data.metrics["operating_threshold"] == pytest.approx(before.data.metrics["operating_threshold"])
    # the test split did change: what was scored on it differs
    assert not np.isclose(after.data.metrics["test_roc_auc"], before.data.metrics["test_roc_auc"]) or \
        not np.isclose(after.data.metrics["test_balanced_accuracy"], before.data.metrics["test_balanced_accuracy"])
