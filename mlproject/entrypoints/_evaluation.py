"""Scoring registered versions on a dataset: shared by the ``evaluate`` and ``promote`` entry points.

Entry-point code rather than :mod:`mlproject.evaluation`: it reads the entry points' data options
(:mod:`mlproject.training.common`), loads registered versions and logs to the active MLflow run,
whereas ``mlproject.evaluation`` sits below training and keeps to pure metrics, plots and scoring.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np

from integrations import mlflow_registry, mlflow_runs
from mlproject.data.images import BadFile, BadImagesError
from mlproject.data.loaders import load_dataset, manifest_hash
from mlproject.data.split import stratified_split
from mlproject.evaluation.report import build_report, write_report_files
from mlproject.evaluation.scoring import score_records
from mlproject.training import common

SPLITS = ("all", "train", "val", "test")


def add_eval_data_arguments(parser, *, default_split: str) -> None:
    common.add_data_arguments(parser)
    parser.add_argument("--split", default=default_split, choices=SPLITS,
                        help="which part of the data to score (train/val/test: the same seeded split training uses)")


def select_records(args):
    """The evaluation records; machine-made (``auto``) labels never count as ground truth."""
    data = common.resolve_data(args)
    records = [r for r in load_dataset(data, pattern=args.pattern, layout=args.layout) if r.source != "auto"]
    if args.split != "all":
        split = stratified_split(records, seed=args.split_seed, val_fraction=args.val_fraction,
                                 test_fraction=args.test_fraction)
        records = getattr(split, args.split)
    return data, records


def evaluate_version(ref, records, class_names, *, skip_bad: bool, prefix: str, artifact_path: str):
    """Score ``ref`` on ``records``; log the report under ``prefix``/``artifact_path``; return metrics."""
    model = mlflow_registry.load_pyfunc(ref)
    config = model.unwrap_python_model().config
    if list(config["class_names"]) != list(class_names):
        raise ValueError(f"{ref} was trained for classes {config['class_names']}, the data has {list(class_names)}")
    p_defect, errors = score_records(model, records)
    if errors and not skip_bad:
        raise BadImagesError([BadFile(records[i].path, _without_path(message, records[i].path))
                              for i, message in sorted(errors.items())], hint=common.SKIP_BAD_IMAGES_HINT)
    keep = ~np.isnan(p_defect)
    kept = [r for r, k in zip(records, keep) if k]
    y_true = np.array([int(r.label == class_names[1]) for r in kept])
    p = p_defect[keep]
    threshold = float(config["threshold"])
    report = build_report(y_true, p, class_names, threshold=threshold, prefix=prefix)
    mlflow.log_metrics({**report.metrics, f"{prefix}bad_images": float(len(errors))})
    with tempfile.TemporaryDirectory() as tmp:
        mlflow_runs.log_files(write_report_files(report, y_true, p, Path(tmp), threshold=threshold), artifact_path)
    rows = [{"image": r.path, "label": r.label, "p_defect": float(q)} for r, q in zip(kept, p)]
    mlflow_runs.log_rows(rows, artifact_path, "predictions.csv")
    if errors:
        mlflow_runs.log_rows([{"index": i, "error": e} for i, e in errors.items()], artifact_path, "bad_images.csv")
    print(f"\n{ref} on {len(kept)} images:\n{report.table}")
    return {key[len(prefix):]: value for key, value in report.metrics.items()}


def _without_path(message: str, path: str) -> str:
    """Scoring errors start with the file's path; the error names it already."""
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def log_eval_data(data: str, records) -> None:
    mlflow_runs.log_params({"eval_data": data, "eval_manifest_hash": manifest_hash(records),
                            "eval_images": len(records)})


def write_json_artifact(obj: dict, artifact_path: str, file_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_text(json.dumps(obj, indent=2))
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
