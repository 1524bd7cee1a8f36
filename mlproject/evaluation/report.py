"""The evaluation report of one (y_true, p_positive) pair at one threshold: the seed's table, the
MLflow metrics and the hard predictions (:func:`build_report`), and its files (:func:`write_report_files`).

Same conventions as :mod:`mlproject.evaluation.metrics`; the only I/O is writing files to the folder
the caller passes in.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mlproject.evaluation.metrics import (
    as_labels,
    check_class_names,
    check_same_length,
    classification_metrics,
    classification_table,
    predicted_labels,
)
from mlproject.evaluation.plots import plot_confusion_matrix, plot_roc_pr

__all__ = ["EvaluationReport", "build_report", "write_report_files"]

@dataclass(frozen=True)
class EvaluationReport:
    """Everything derived from one (y_true, p_positive) pair at one threshold."""

    table: str
    metrics: dict[str, float]
    y_pred: np.ndarray
    # Kept so write_report_files can label plots and stay consistent with the metrics.
    class_names: tuple[str, str] = field(default=("negative", "positive"))
    threshold: float = 0.5


def build_report(
    y_true,
    p_positive,
    class_names: Sequence[str],
    *,
    threshold: float = 0.5,
    prefix: str = "test_",
) -> EvaluationReport:
    """Text table + MLflow metrics + hard predictions, all at the same threshold."""
    names = check_class_names(class_names)
    y_pred = predicted_labels(p_positive, threshold)
    return EvaluationReport(
        table=classification_table(y_true, y_pred, names),
        metrics=classification_metrics(y_true, p_positive, names, threshold=threshold, prefix=prefix),
        y_pred=y_pred,
        class_names=names,
        threshold=float(threshold),
    )


def write_report_files(
    report: EvaluationReport,
    y_true,
    p_positive,
    out_dir,
    *,
    threshold: float | None = None,
) -> list[Path]:
    """Write the report's artifacts into ``out_dir`` and return their paths.

    ``threshold`` defaults to the report's own; passing a different one is an error
    because the plots would then disagree with the table and metrics.
    """
    if threshold is None:
        threshold = report.threshold
    elif not math.isclose(float(threshold), report.threshold):
        raise ValueError(
            f"threshold {threshold} differs from the report's threshold {report.threshold}"
        )
    yt = as_labels(y_true, "y_true")
    check_same_length(yt, np.asarray(report.y_pred).ravel(), "y_true and report.y_pred")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    table_path = out / "classification_report.txt"
    table_path.write_text(report.table, encoding="utf-8")
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(report.metrics, indent=2, sort_keys=True) + "\n",
                            encoding="utf-8")
    cm_path = plot_confusion_matrix(yt, report.y_pred, report.class_names,
                                    out / "confusion_matrix.png")
    roc_pr_path = plot_roc_pr(yt, p_positive, out / "roc_pr_curves.png", threshold=threshold)
    return [table_path, metrics_path, cm_path, roc_pr_path]
