"""Metrics of binary defect classifiers: hard predictions, the seed's text table, MLflow-ready numbers.

Conventions used throughout :mod:`mlproject.evaluation`:
- ``class_names`` is a ``(negative, positive)`` tuple, e.g. ``("ok", "defect")``.
- ``y_true`` / ``y_pred`` are int arrays with 0 = ``class_names[0]``, 1 = ``class_names[1]``.
- ``p_positive`` is the model's P(positive class), i.e. P(defect).

Pure functions of their inputs; the input checks here are shared with :mod:`mlproject.evaluation.plots`.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["classification_metrics", "classification_table", "predicted_labels", "sanitize_metric_name"]

LABELS = [0, 1]  # y values: 0 = class_names[0], 1 = class_names[1]
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


# ------------------------------------------------------------------ input checks


def check_class_names(class_names: Sequence[str]) -> tuple[str, str]:
    names = tuple(str(n) for n in class_names)
    if len(names) != 2:
        raise ValueError(f"class_names must be (negative, positive); got {class_names!r}")
    return names  # type: ignore[return-value]


def as_labels(y, name: str) -> np.ndarray:
    arr = np.asarray(y).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isin(arr, LABELS).all():
        raise ValueError(f"{name} must contain only 0/1 labels; got {np.unique(arr)!r}")
    return arr.astype(int)


def as_probabilities(p) -> np.ndarray:
    arr = np.asarray(p, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("p_positive is empty")
    if not np.isfinite(arr).all():
        raise ValueError("p_positive contains NaN or inf")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError("p_positive must be probabilities in [0, 1]")
    return arr


def check_same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names} have different lengths: {a.shape[0]} != {b.shape[0]}")


def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]; got {threshold}")
    return threshold


# ------------------------------------------------------------------ labels & tables


def predicted_labels(p_positive, threshold: float = 0.5) -> np.ndarray:
    """Hard 0/1 predictions: 1 where ``p_positive >= threshold``."""
    p = as_probabilities(p_positive)
    return (p >= check_threshold(threshold)).astype(int)


def classification_table(y_true, y_pred, class_names: Sequence[str]) -> str:
    """The seed's text report: sklearn ``classification_report`` with 2 digits."""
    names = check_class_names(class_names)
    yt, yp = as_labels(y_true, "y_true"), as_labels(y_pred, "y_pred")
    check_same_length(yt, yp, "y_true and y_pred")
    # labels= pins both rows even when a class is absent from this split.
    return classification_report(
        yt, yp, labels=LABELS, target_names=list(names), digits=2, zero_division=0
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
    names = check_class_names(class_names)
    if not _MLFLOW_METRIC_NAME.fullmatch(prefix or "x"):
        # The caller chose the prefix, so reject it rather than silently rename metrics.
        raise ValueError(f"prefix {prefix!r} is not a valid MLflow metric name fragment")
    yt = as_labels(y_true, "y_true")
    p = as_probabilities(p_positive)
    check_same_length(yt, p, "y_true and p_positive")
    threshold = check_threshold(threshold)
    yp = predicted_labels(p, threshold)

    precision, recall, f1, support = precision_recall_fscore_support(
        yt, yp, labels=LABELS, zero_division=0
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
