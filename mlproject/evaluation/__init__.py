"""Evaluation of binary defect classifiers: metrics, plots, and the report bundling them."""

from mlproject.evaluation.metrics import (
    classification_metrics,
    classification_table,
    predicted_labels,
    sanitize_metric_name,
)
from mlproject.evaluation.plots import plot_confusion_matrix, plot_roc_pr, plot_training_curves
from mlproject.evaluation.report import EvaluationReport, build_report, write_report_files

__all__ = [
    "EvaluationReport",
    "build_report",
    "classification_metrics",
    "classification_table",
    "plot_confusion_matrix",
    "plot_roc_pr",
    "plot_training_curves",
    "predicted_labels",
    "sanitize_metric_name",
    "write_report_files",
]
