"""Evaluation of binary defect classifiers: reports, MLflow metrics and plots."""

from mlproject.evaluation.report import (
    EvaluationReport,
    build_report,
    classification_metrics,
    classification_table,
    plot_confusion_matrix,
    plot_roc_pr,
    plot_training_curves,
    predicted_labels,
    sanitize_metric_name,
    write_report_files,
)

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
