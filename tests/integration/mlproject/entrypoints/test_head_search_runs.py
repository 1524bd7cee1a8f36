"""The frozen/finetune head search as MLflow child runs, its winner in the registered model and in what
`alloop sync` retrains with, and a test split that cannot steer it (tiny images, random weights, a
real SQLite store)."""

import shutil

import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from integrations import mlflow_registry
from mlproject.data.loaders import load_dataset
from mlproject.data.split import stratified_split
from mlproject.entrypoints import finetune, frozen
from mlproject.training.svm_training import SEARCH_DATA

pytestmark = pytest.mark.integration

SEARCH = ["--weights", "none", "--image-size", "32", "--lr-head", "auto", "--dropout", "auto",
          "--dense-units", "auto", "--head-search-trials", "4", "--epochs", "8", "--patience", "3"]


def _latest_parent(client):
    experiment = client.get_experiment_by_name("Default")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


@pytest.mark.parametrize("search_data", SEARCH_DATA)
def test_head_trials_are_child_runs_and_the_winner_is_registered_and_inherited(tracking_uri, synthetic_data,
                                                                              search_data):
    frozen.main(["--data", str(synthetic_data), *SEARCH, "--head-search-data", search_data,
                 "--registered-model-name", "head-search"])
    client = MlflowClient()
    parent, children = _latest_parent(client)
    assert len(children) == int(parent.data.params["head_search_trials_run"]) == 4
    # enough of each class for the folds: scored on what was asked
    assert parent.data.params["head_search_data_used"] == search_data
    loss = {"val": "val_loss", "train+val_cv": "cv_loss"}[search_data]
    assert all(c.data.params["scored_on"] == search_data and loss in c.data.metrics for c in children)
    winner = min(children, key=lambda c: (round(c.data.metrics[loss], 9), int(c.data.params["dense_units"]),
                                          int(c.data.params["trial"])))
    for key in ("lr_head", "dropout", "dense_units"):
        assert parent.data.params[key] == "auto"
        assert float(parent.data.params[f"{key}_chosen"]) == float(winner.data.params[key])
    # the registered network has the winner's head
    ref = mlflow_registry.require("head-search", "challenger")
    model = mlflow.pyfunc.load_model(f"models:/head-search/{ref.version}").unwrap_python_model()
    head = model.keras_model.get_layer("head")
    units = int(float(parent.data.params["dense_units_chosen"]))
    dense = [layer for layer in head.layers if layer.name == "head_dense"]
    assert (dense[0].units if dense else 0) == units
    dropout = head.get_layer("head_dropout1").rate
    assert dropout == pytest.approx(float(parent.data.params["dropout_chosen"]))
    version = client.get_model_version("head-search", ref.version)
    assert float(version.tags["chosen.lr_head"]) == float(parent.data.params["lr_head_chosen"])
    # what `alloop sync` retrains with: the winner, not another search
    inherited = mlflow_registry.training_params(ref)
    for key in ("lr_head", "dropout", "dense_units"):
        assert inherited[key] == parent.data.params[f"{key}_chosen"]
    args = frozen.build_parser().parse_args([f"--{key.replace('_', '-')}={inherited[key]}"
                                             for key in ("lr_head", "dropout", "dense_units")])
    assert "auto" not in (args.lr_head, args.dropout, args.dense_units)


def test_finetune_searches_its_warm_up_head_then_fine_tunes_the_winner(tracking_uri, synthetic_data):
    finetune.main(["--data", str(synthetic_data), *SEARCH[:-4], "--head-search-trials", "3", "--warmup-epochs", "6",
                   "--epochs", "1", "--registered-model-name", "head-search-ft"])
    parent, children = _latest_parent(MlflowClient())
    assert len(children) == 3 and parent.data.params["dense_units_chosen"] in {c.data.params["dense_units"]
                                                                                for c in children}
    ref = mlflow_registry.require("head-search-ft", "challenger")
    model = mlflow.pyfunc.load_model(f"models:/head-search-ft/{ref.version}").unwrap_python_model()
    scores = model.predict_probabilities(np.zeros((2, 32, 32, 3), np.uint8))
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


def test_given_head_settings_run_no_search(tracking_uri, synthetic_data):
    frozen.main(["--data", str(synthetic_data), "--weights", "none", "--image-size", "32", "--epochs", "2",
                 "--lr-head", "0.001", "--dropout", "0.5", "--dense-units", "0", "--registered-model-name", "no-search"])
    parent, children = _latest_parent(MlflowClient())
    assert children == [] and "lr_head_chosen" not in parent.data.params
    model = mlflow.pyfunc.load_model("models:/no-search@challenger").unwrap_python_model()
    assert "head_dense" not in [layer.name for layer in model.keras_model.get_layer("head").layers]


def test_a_signal_planted_in_the_test_split_cannot_change_the_head_chosen(tracking_uri, synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    client = MlflowClient()
    keras.utils.set_random_seed(0)
    frozen.main(["--data", str(data), *SEARCH, "--registered-model-name", "planted"])
    before, before_children = _latest_parent(client)
    # A perfect signal in the test images only: defects white, normal images black.
    for record in stratified_split(load_dataset(str(data)), seed=0).test:
        size = Image.open(record.path).size
        Image.new("L", size, 255 if record.label == "defect" else 0).save(record.path)
    keras.utils.set_random_seed(0)
    frozen.main(["--data", str(data), *SEARCH, "--registered-model-name", "planted"])
    after, after_children = _latest_parent(client)

    assert after.info.run_id != before.info.run_id
    assert after.data.params["manifest_hash"] == before.data.params["manifest_hash"]
    for key in ("lr_head_chosen", "dropout_chosen", "dense_units_chosen"):
        assert after.data.params[key] == before.data.params[key]
    # frozen's default search data (train+val_cv) logs cv_loss; the test split is in no fold either way
    assert {c.data.params["scored_on"] for c in after_children} == {"train+val_cv"}
    by_trial = lambda runs: sorted((int(r.data.params["trial"]), r.data.metrics["cv_loss"]) for r in runs)  # noqa: E731
    np.testing.assert_allclose(by_trial(after_children), by_trial(before_children), rtol=1e-4)
    # the test split did change: what was scored on it differs
    assert not np.isclose(after.data.metrics["test_roc_auc"], before.data.metrics["test_roc_auc"]) or \
        not np.isclose(after.data.metrics["test_balanced_accuracy"], before.data.metrics["test_balanced_accuracy"])
