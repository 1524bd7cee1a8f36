"""Evaluation of binary defect classifiers: text report, MLflow-ready metrics, plots.

Conventions used throughout:
- ``class_names`` is a ``(negative, positive)`` tuple, e.g. ``("ok", "defect")``.
- ``y_true`` / ``y_pred`` are int arrays with 0 = ``class_names[0]``, 1 = ``class_names[1]``.
- ``p_positive`` is the model's P(positive class), i.e. P(defect).

Everything here is a pure function of its inputs; the only I/O is writing files to
paths the caller passes in.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

# Headless backend: evaluation runs inside training jobs / CI with no display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (must come after matplotlib.use)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
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

_LABELS = [0, 1]
# MLflow accepts alphanumerics, "_", "-", ".", " " and "/" in metric names. We keep a
# stricter subset: spaces and slashes are legal but make awkward keys (and "/" nests
# metric files in some stores), so they become "_" too.
_UNSAFE_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")
_MLFLOW_METRIC_NAME = re.compile(r"[A-Za-z0-9_.\- /]+")


# --------------------------------------------------------------------------- helpers


def sanitize_metric_name(name: str) -> str:
    """Turn an arbitrary class name into a safe fragment of an MLflow metric name."""
    cleaned = _UNSAFE_METRIC_CHARS.sub("_", str(name).strip()).strip("_")
    return cleaned or "class"


def _metric_class_keys(class_names: Sequence[str]) -> tuple[str, str]:
    """Sanitized, distinct key fragments for the two classes.

    Distinct matters: "ok!" and "ok?" both sanitize to "ok" and would otherwise
    silently overwrite each other's metrics.
    """
    neg, pos = (sanitize_metric_name(n) for n in class_names)
    if neg == pos:
        neg, pos = f"{neg}_0", f"{pos}_1"
    return neg, pos


def _check_class_names(class_names: Sequence[str]) -> tuple[str, str]:
    names = tuple(str(n) for n in class_names)
    if len(names) != 2:
        raise ValueError(f"class_names must be (negative, positive); got {class_names!r}")
    return names  # type: ignore[return-value]


def _as_labels(y, name: str) -> np.ndarray:
    arr = np.asarray(y).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isin(arr, _LABELS).all():
        raise ValueError(f"{name} must contain only 0/1 labels; got {np.unique(arr)!r}")
    return arr.astype(int)


def _as_probabilities(p) -> np.ndarray:
    arr = np.asarray(p, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("p_positive is empty")
    if not np.isfinite(arr).all():
        raise ValueError("p_positive contains NaN or inf")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError("p_positive must be probabilities in [0, 1]")
    return arr


def _check_same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names} have different lengths: {a.shape[0]} != {b.shape[0]}")


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]; got {threshold}")
    return threshold


def _operating_point(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float | None]:
    """(FPR, TPR/recall, precision) of hard predictions; precision None if nothing predicted positive."""
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=_LABELS).ravel()
    fpr = fp / (fp + tn) if (fp + tn) else 0.0
    tpr = tp / (tp + fn) if (tp + fn) else 0.0
    precision = tp / (tp + fp) if (tp + fp) else None
    return float(fpr), float(tpr), (None if precision is None else float(precision))


def _save(fig: plt.Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    finally:
        # Figures are never shown; closing avoids leaking memory across many runs.
        plt.close(fig)
    return path


# ------------------------------------------------------------------ labels & tables


def predicted_labels(p_positive, threshold: float = 0.5) -> np.ndarray:
    """Hard 0/1 predictions: 1 where ``p_positive >= threshold``."""
    p = _as_probabilities(p_positive)
    return (p >= _check_threshold(threshold)).astype(int)


def classification_table(y_true, y_pred, class_names: Sequence[str]) -> str:
    """The seed's text report: sklearn ``classification_report`` with 2 digits."""
    names = _check_class_names(class_names)
    yt, yp = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    _check_same_length(yt, yp, "y_true and y_pred")
    # labels= pins both rows even when a class is absent from this split.
    return classification_report(
        yt, yp, labels=_LABELS, target_names=list(names), digits=2, zero_division=0
    )


def classification_metrics(
    y_true,
    p_positive,
    class_names: Sequence[str],
    *,
    threshold: float = 0.5,
    prefix: str = "test_",
) -> dict[str, float]:
    """Flat ``{metric_name: value}`` dict ready for ``mlflow.log_metrics``.

    Ranking metrics (ROC AUC, average precision) are undefined when ``y_true`` holds
    a single class, so they are omitted instead of raising.
    """
    names = _check_class_names(class_names)
    if not _MLFLOW_METRIC_NAME.fullmatch(prefix or "x"):
        # The caller chose the prefix, so reject it rather than silently rename metrics.
        raise ValueError(f"prefix {prefix!r} is not a valid MLflow metric name fragment")
    yt = _as_labels(y_true, "y_true")
    p = _as_probabilities(p_positive)
    _check_same_length(yt, p, "y_true and p_positive")
    threshold = _check_threshold(threshold)
    yp = predicted_labels(p, threshold)

    precision, recall, f1, support = precision_recall_fscore_support(
        yt, yp, labels=_LABELS, zero_division=0
    )
    metrics: dict[str, float] = {}
    for i, key in enumerate(_metric_class_keys(names)):
        metrics[f"{prefix}{key}_precision"] = float(precision[i])
        metrics[f"{prefix}{key}_recall"] = float(recall[i])
        metrics[f"{prefix}{key}_f1"] = float(f1[i])
        metrics[f"{prefix}{key}_support"] = float(support[i])

    metrics[f"{prefix}accuracy"] = float(np.mean(yt == yp))
    # balanced_accuracy_score warns and averages over present classes only when one
    # class is missing; the mean of per-class recalls is the same thing, stated plainly.
    present = support > 0
    metrics[f"{prefix}balanced_accuracy"] = (
        float(balanced_accuracy_score(yt, yp)) if present.all() else float(recall[present].mean())
    )
    if np.unique(yt).size == 2:
        metrics[f"{prefix}roc_auc"] = float(roc_auc_score(yt, p))
        metrics[f"{prefix}average_precision"] = float(average_precision_score(yt, p))
    # Stable name across datasets so runs with different class names compare in the UI.
    metrics[f"{prefix}defect_recall"] = float(recall[1])
    metrics[f"{prefix}threshold"] = threshold

    return metrics


# -------------------------------------------------------------------------- plots


def plot_confusion_matrix(
    y_true,
    y_pred,
    class_names: Sequence[str],
    path,
    title: str = "Confusion matrix (test)",
) -> Path:
    """PNG confusion matrix; each cell shows the count and the row-normalised percentage."""
    names = _check_class_names(class_names)
    yt, yp = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    _check_same_length(yt, yp, "y_true and y_pred")
    cm = confusion_matrix(yt, yp, labels=_LABELS)
    row_totals = cm.sum(axis=1, keepdims=True)
    # Row-normalised = share of each true class; an empty row has no meaningful share.
    with np.errstate(invalid="ignore", divide="ignore"):
        row_share = np.where(row_totals > 0, cm / np.maximum(row_totals, 1), np.nan)

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(np.nan_to_num(row_share), cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(2):
        for j in range(2):
            share = row_share[i, j]
            pct = "n/a" if np.isnan(share) else f"{100 * share:.1f}%"
            dark = not np.isnan(share) and share > 0.5
            ax.text(
                j, i, f"{cm[i, j]}\n({pct})",
                ha="center", va="center", fontsize=11,
                color="white" if dark else "black",
            )
    ax.set_xticks(_LABELS, labels=list(names))
    ax.set_yticks(_LABELS, labels=list(names))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    return _save(fig, path)


def plot_roc_pr(
    y_true,
    p_positive,
    path,
    *,
    threshold: float = 0.5,
    title_prefix: str = "",
) -> Path:
    """One PNG with ROC (left) and precision-recall for the positive class (right).

    The operating point at ``threshold`` is marked on both. With a single class in
    ``y_true`` the curves are undefined; the panels say so instead of failing, so a
    report can still be written for a degenerate split.
    """
    yt = _as_labels(y_true, "y_true")
    p = _as_probabilities(p_positive)
    _check_same_length(yt, p, "y_true and p_positive")
    threshold = _check_threshold(threshold)
    fpr_op, tpr_op, prec_op = _operating_point(yt, predicted_labels(p, threshold))
    both_classes = np.unique(yt).size == 2
    prefix = f"{title_prefix} " if title_prefix and not title_prefix.endswith(" ") else title_prefix

    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.8))

    ax_roc.plot([0, 1], [0, 1], linestyle="--", color="grey", label="Chance")
    if both_classes:
        fpr, tpr, _ = roc_curve(yt, p)
        auc = roc_auc_score(yt, p)
        ax_roc.plot(fpr, tpr, color="C0", lw=2, label=f"ROC (AUC = {auc:.3f})")
        ax_roc.scatter(
            [fpr_op], [tpr_op], color="C3", zorder=5,
            label=f"Threshold {threshold:g} (FPR={fpr_op:.2f}, TPR={tpr_op:.2f})",
        )
    else:
        ax_roc.text(0.5, 0.5, "ROC undefined:\nonly one class in y_true",
                    ha="center", va="center", transform=ax_roc.transAxes)
    ax_roc.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
               xlabel="False positive rate", ylabel="True positive rate (recall)",
               title=f"{prefix}ROC curve")
    ax_roc.legend(loc="lower right", fontsize=8)

    prevalence = float(np.mean(yt))
    ax_pr.axhline(prevalence, linestyle="--", color="grey",
                  label=f"Prevalence baseline ({prevalence:.2f})")
    if both_classes:
        precision, recall, _ = precision_recall_curve(yt, p)
        ap = average_precision_score(yt, p)
        # AP is a step-wise sum, so draw the curve as steps to match it.
        ax_pr.step(recall, precision, where="post", color="C0", lw=2, label=f"PR (AP = {ap:.3f})")
        if prec_op is not None:
            ax_pr.scatter(
                [tpr_op], [prec_op], color="C3", zorder=5,
                label=f"Threshold {threshold:g} (R={tpr_op:.2f}, P={prec_op:.2f})",
            )
    else:
        ax_pr.text(0.5, 0.5, "PR curve undefined:\nonly one class in y_true",
                   ha="center", va="center", transform=ax_pr.transAxes)
    ax_pr.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
              xlabel="Recall (positive class)", ylabel="Precision (positive class)",
              title=f"{prefix}Precision-recall curve")
    ax_pr.legend(loc="lower left", fontsize=8)

    fig.tight_layout()
    return _save(fig, path)


def plot_training_curves(history: Mapping[str, Sequence[float]], path, *, title: str = "") -> Path:
    """The seed's accuracy and loss curves (train vs validation), one panel each.

    Missing keys are skipped. ``history["phase_boundary"]`` (``[k]`` or ``k``) is the
    number of head warm-up epochs; a dashed line is drawn between epoch k and k+1,
    where fine-tuning started. Epochs are plotted 1-based.
    """
    panels = (
        ("Accuracy", (("accuracy", "Training accuracy"), ("val_accuracy", "Validation accuracy"))),
        ("Loss", (("loss", "Training loss"), ("val_loss", "Validation loss"))),
    )
    boundary = history.get("phase_boundary")
    if isinstance(boundary, (list, tuple)):
        boundary = boundary[0] if boundary else None

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (ylabel, series) in zip(axes, panels):
        plotted = False
        for key, label in series:
            values = history.get(key)
            if values is None or len(values) == 0:
                continue
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, np.asarray(values, dtype=float), marker="o", ms=3, label=label)
            plotted = True
        if boundary is not None:
            ax.axvline(float(boundary) + 0.5, linestyle="--", color="grey",
                       label="Fine-tuning starts")
            plotted = True
        if plotted:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"No {ylabel.lower()} recorded",
                    ha="center", va="center", transform=ax.transAxes)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"Training and validation {ylabel.lower()}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------ report bundle


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
    names = _check_class_names(class_names)
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
    yt = _as_labels(y_true, "y_true")
    _check_same_length(yt, np.asarray(report.y_pred).ravel(), "y_true and report.y_pred")

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
