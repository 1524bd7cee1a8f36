"""Each entry point through `mlflow run . -e X --env-manager local`, against a real SQLite tracking store."""

import importlib
import shlex
import subprocess

import mlflow
import pytest
from mlflow import MlflowClient

from tests.support.models import REPO, project_env

pytestmark = pytest.mark.integration

TINY = {"weights": "none", "image_size": "32"}


def mlflow_run(entry_point: str, **params) -> subprocess.CompletedProcess:
    command = ["mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local",
               "--experiment-name", "tests"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    result = subprocess.run(command, env=project_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"mlflow run -e {entry_point} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def latest_run(client: MlflowClient, experiment: str = "tests", filter_string: str = ""):
    """The newest top-level run (a search's trials are its nested child runs)."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], filter_string, order_by=["attributes.start_time DESC"])
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


def artifact_paths(client, run_id, folder):
    return {f.path for f in client.list_artifacts(run_id, folder)}


@pytest.mark.parametrize(
    "entry_point,extra,epochs",
    [
        ("svm", {"pooling": "stats", "feature_layers": "block3_pool,block4_pool"}, None),
        # the head's lr_head and dropout are searched by default (cross-validated): two candidates keep it short
        ("frozen", {"epochs": 3, "dense_units": 16, "head_search_trials": 2}, 3),
        ("finetune", {"warmup_epochs": 2, "epochs": 2, "patience": 5, "dense_units": 16, "head_search_trials": 2}, 4),
        # augmentation on cached outputs: all 8 flip/rotation views cached; scored over the 8 views too
        ("finetune", {"warmup_epochs": 2, "epochs": 2, "patience": 5, "dense_units": 16, "lr_head": 0.001,
                      "dropout": 0.5, "augment": "true", "cache_frozen_outputs": "true", "test_time_views": 8}, 4),
    ],
    ids=["svm", "frozen", "finetune", "finetune-augmented-cached"],
)
def test_training_entry_point_registers_a_challenger(entry_point, extra, epochs, tracking_uri, synthetic_data):
    name = f"test-{entry_point}"
    mlflow_run(entry_point, data=synthetic_data, registered_model_name=name, round=3, **TINY, **extra)
    client = MlflowClient()
    version = client.get_model_version_by_alias(name, "challenger")
    assert str(version.version) == "1"
    assert version.tags["variant"] == entry_point
    assert version.tags["weights"] == "none" and version.tags["round"] == "3"
    assert len(version.tags["manifest_hash"]) == 64
    assert int(version.tags["labels_by_source.import"]) == 80

    run = latest_run(client)
    assert run.data.params["manifest_hash"] == version.tags["manifest_hash"]
    for metric in ("test_balanced_accuracy", "test_defect_recall", "test_ok_precision", "test_defect_f1",
                   "test_defect_support", "test_roc_auc"):
        assert metric in run.data.metrics, metric
    assert artifact_paths(client, run.info.run_id, "evaluation") >= {
        "evaluation/classification_report.txt", "evaluation/confusion_matrix.png",
        "evaluation/roc_pr_curves.png", "evaluation/predictions.csv"}
    assert "data/split.csv" in artifact_paths(client, run.info.run_id, "data")
    table = client.download_artifacts(run.info.run_id, "evaluation/classification_report.txt")
    text = open(table).read()
    assert "defect" in text and "ok" in text and "support" in text
    if epochs is not None:
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(epochs))
        assert len(client.get_metric_history(run.info.run_id, "train_accuracy")) == epochs
        assert "training/training_curves.png" in artifact_paths(client, run.info.run_id, "training")
    if entry_point == "finetune":  # warm-up ran its 2 epochs (patience 5), then fine-tuning began
        assert run.data.metrics["warmup_epochs_run"] == 2
    if entry_point != "svm":  # the registered model scores as the run did
        views = extra.get("test_time_views", 1)
        assert run.data.params["test_time_views"] == str(views)
        model = mlflow.pyfunc.load_model(f"models:/{name}@challenger").unwrap_python_model()
        assert model.test_time_views == views
        if views > 1:  # registered with fast scoring: a gate after 1, 2 and 4 views, chosen on validation
            assert set(model.view_gate_margins) == {1, 2, 4}
            assert 1 <= run.data.metrics["view_gate_val_views_per_image"] <= views


def test_promote_moves_champion_only_for_a_better_model_and_evaluate_scores_it(tracking_uri, synthetic_data):
    client = MlflowClient()
    name = "test-promote"
    common = {"data": synthetic_data, "registered_model_name": name, **TINY}
    # A deliberately useless model: threshold 1.0 labels every image "ok" (balanced accuracy 0.5,
    # defect recall 0). The first model becomes champion whatever its score.
    mlflow_run("svm", threshold=1.0, **common)
    mlflow_run("promote", model_name=name, eval_data=synthetic_data, split="all")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    mlflow_run("svm", **common)  # a real model: better -> promoted
    result = mlflow_run("promote", model_name=name, eval_data=synthetic_data, split="all")
    assert "PROMOTED" in result.stdout
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    decision_run = latest_run(client)
    assert decision_run.data.tags["decision"] == "promoted"
    assert decision_run.data.metrics["challenger_balanced_accuracy"] > decision_run.data.metrics["champion_balanced_accuracy"]
    assert "promotion/decision.json" in artifact_paths(client, decision_run.info.run_id, "promotion")

    mlflow_run("svm", threshold=1.0, **common)  # worse -> not promoted
    result = mlflow_run("promote", model_name=name, eval_data=synthetic_data, split="all")
    assert "NOT promoted" in result.stdout
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "3"
    assert client.get_model_version(name, "3").tags["promotion"] == "rejected"

    mlflow_run("evaluate", model_name=name, model_ref="champion", data=synthetic_data, split="all")
    evaluation = latest_run(client)
    assert evaluation.data.params["resolved_version"] == "2"
    assert evaluation.data.metrics["all_balanced_accuracy"] == pytest.approx(
        decision_run.data.metrics["challenger_balanced_accuracy"])


def test_plain_mlflow_run_builds_its_own_environment(tracking_uri, synthetic_data):
    """`mlflow run . -e finetune` with no --env-manager and no conda: MLflow builds a virtualenv
    from python_env.yaml (pyenv + virtualenv; first time about 2-3 minutes, then cached)."""
    command = ["mlflow", "run", str(REPO), "-e", "finetune", "--experiment-name", "tests",
               "-P", f"data={synthetic_data}", "-P", "warmup_epochs=1", "-P", "epochs=1",
               "-P", "head_search_trials=2", "-P", "registered_model_name=plain-env",
               *sum((["-P", f"{k}={v}"] for k, v in TINY.items()), [])]
    result = subprocess.run(command, env=project_env(), capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "virtualenv" in result.stderr.lower() or "mlflow-" in result.stderr  # it used its own env
    version = MlflowClient().get_model_version_by_alias("plain-env", "challenger")
    assert version.tags["variant"] == "finetune"


def test_a_broken_image_stops_the_run_by_name_or_is_skipped_counted_and_logged(tracking_uri, synthetic_data, tmp_path):
    import shutil

    from mlproject.entrypoints import svm

    data = tmp_path / "with-broken"
    shutil.copytree(synthetic_data, data / "Class1")
    broken = data / "Class1" / "Train" / "0003.PNG"
    broken.write_bytes(broken.read_bytes()[:100])  # truncated
    args = ["--data", str(data), "--weights", "none", "--image-size", "32", "--registered-model-name", "broken"]
    with pytest.raises(ValueError, match="0003.PNG") as stopped:
        svm.main(args)
    # How entry points are run (mlflow run -P) first, the module's own flag second.
    message = str(stopped.value)
    assert message.index("-P skip_bad_images=true") < message.index("--skip-bad-images true")
    svm.main(args + ["--skip-bad-images", "true"])
    client = MlflowClient()
    run = latest_run(client, "Default", "attributes.status = 'FINISHED'")
    assert run.data.metrics["bad_images"] == 1
    rows = open(client.download_artifacts(run.info.run_id, "data/bad_images.csv")).read()
    assert str(broken) in rows and "truncated" in rows


def project_entry_points():
    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(REPO))
    return {name: project.get_entry_point(name) for name in ("svm", "frozen", "finetune", "evaluate", "promote")}


def parser_and_args(entry_point, user_parameters: dict):
    """The command MLflow builds for ``-P`` parameters, parsed by the entry point's own parser."""
    command = shlex.split(entry_point.compute_command(user_parameters, storage_dir=None))
    assert command[:2] == ["python", "-m"]
    parser = importlib.import_module(command[2]).build_parser()
    return parser, parser.parse_args(command[3:]), command


@pytest.mark.parametrize("name", ["svm", "frozen", "finetune", "evaluate", "promote"])
def test_mlproject_declares_every_option_of_the_entry_point_with_its_default(name):
    parser, from_mlproject, command = parser_and_args(project_entry_points()[name], {})
    options = {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}
    passed = {token for token in command if token.startswith("--")}
    assert sorted(options - passed) == [], f"options of {name} that `mlflow run -P` cannot set"
    assert vars(from_mlproject) == vars(parser.parse_args([])), "MLproject's defaults differ from the parser's"


@pytest.mark.parametrize("name", ["frozen", "finetune"])
def test_head_settings_can_be_searched_through_the_project_parameters(name):
    _, args, _ = parser_and_args(project_entry_points()[name], {"lr_head": "auto", "dropout": "auto",
                                                                "dense_units": "auto", "head_search_budget_s": 60})
    assert (args.lr_head, args.dropout, args.dense_units, args.head_search_budget_s) == ("auto", "auto", "auto", 60.0)
    _, given, _ = parser_and_args(project_entry_points()[name], {"dense_units": "0"})
    assert given.dense_units == 0  # a linear head


@pytest.mark.parametrize("name", ["svm", "frozen", "finetune", "evaluate", "promote"])
def test_positive_label_is_a_project_parameter(name):
    _, args, _ = parser_and_args(project_entry_points()[name], {"positive_label": "scratch"})
    assert args.positive_label == "scratch"


def test_a_missing_positive_label_says_which_project_parameter_names_it(tracking_uri, synthetic_data):
    command = ["mlflow", "run", str(REPO), "-e", "svm", "--env-manager", "local", "--experiment-name", "tests",
               "-P", f"data={synthetic_data}", "-P", "positive_label=scratch", "-P", "weights=none"]
    result = subprocess.run(command, env=project_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    assert "unrecognized arguments" not in result.stderr
    assert "one of them 'scratch'" in result.stderr and "-P positive_label=<label>" in result.stderr
