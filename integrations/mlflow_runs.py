"""Thin adapter: what a run logs to MLflow (params, per-epoch metrics, reports, tables)."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import mlflow


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created if missing.

    Use it instead of ``mlflow.set_experiment``, which also exports ``MLFLOW_EXPERIMENT_ID`` into the
    process environment, where it leaks into every later run and child ``mlflow run`` of the process.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        # Another process (a second sync, a training run) created it between the two calls.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def log_params(params: dict) -> None:
    """Log params not yet on the run.

    ``mlflow run`` has already logged the MLproject parameters as the user typed them ("224",
    "false"); logging our parsed values (224, False) again under the same key would be refused.
    """
    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params if run else {}
    new = {key: str(value)[:500] for key, value in params.items() if key not in existing}
    if new:
        mlflow.log_params(new)


def log_epoch(epoch: int, logs: dict[str, float]) -> None:
    """One training epoch's ``accuracy``/``loss``/``val_accuracy``/``val_loss`` (and its duration) as step ``epoch``."""
    names = {"accuracy": "train_accuracy", "loss": "train_loss", "val_accuracy": "val_accuracy", "val_loss": "val_loss",
             "epoch_seconds": "epoch_seconds"}
    mlflow.log_metrics({names[k]: v for k, v in logs.items() if k in names}, step=epoch)


def log_rows(rows: list[dict], artifact_path: str, file_name: str) -> None:
    """A list of dicts as one CSV artifact (splits, bad files, predictions)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        fields = list(rows[0].keys()) if rows else ["empty"]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_files(paths, artifact_path: str) -> None:
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


PROJECT_DIR = Path(__file__).resolve().parents[1]


def run_entry_point(entry_point: str, parameters: dict, *, experiment: str) -> str:
    """Run one of this MLflow project's entry points in the current environment; returns the run id.

    ``env_manager="local"``: the caller already runs inside the project's environment (a child
    ``mlflow run`` would otherwise try to build one with conda or pyenv).
    """
    from mlflow.exceptions import ExecutionException

    try:
        submitted = mlflow.projects.run(str(PROJECT_DIR), entry_point=entry_point, parameters=parameters,
                                        env_manager="local", experiment_name=experiment, synchronous=True)
    except ExecutionException as exc:
        raise EntryPointError(f"`mlflow run . -e {entry_point}` failed in experiment {experiment!r}: {exc} "
                              "(its output above says why)") from exc
    return submitted.run_id


class EntryPointError(RuntimeError):
    """An entry point run by :func:`run_entry_point` exited with an error."""


def entry_point_parameters(entry_point: str) -> list[str]:
    """The parameter names MLproject declares for ``entry_point``."""
    from mlflow.projects._project_spec import load_project

    try:
        return list(load_project(str(PROJECT_DIR)).get_entry_point(entry_point).parameters)
    except Exception as exc:  # MLflow raises ExecutionException for an unknown entry point
        raise ValueError(f"MLproject has no entry point {entry_point!r} ({exc})") from None
