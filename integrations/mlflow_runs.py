"""Thin adapter: what a run logs to MLflow (params, per-epoch metrics, reports, tables)."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import mlflow


def log_params(params: dict) -> None:
    # MLflow params are strings of at most 6000 characters; keep ours short and explicit.
    mlflow.log_params({key: str(value)[:500] for key, value in params.items()})


def log_epoch(epoch: int, logs: dict[str, float]) -> None:
    """One training epoch's ``accuracy``/``loss``/``val_accuracy``/``val_loss`` as step ``epoch``."""
    names = {"accuracy": "train_accuracy", "loss": "train_loss", "val_accuracy": "val_accuracy", "val_loss": "val_loss"}
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
