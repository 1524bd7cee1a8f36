"""Plots of binary defect classifiers: confusion matrix, ROC and precision-recall, training curves.

Same conventions as :mod:`mlproject.evaluation.metrics`; the only I/O is writing PNGs to the paths
the caller passes in.
"""

from __future__ import annotations

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
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from mlproject.evaluation.metrics import (  # noqa: E402
    LABELS,
    as_labels,
    as_probabilities,
    check_class_names,
    check_same_length,
    check_threshold,
    predicted_labels,
)

__all__ = ["plot_confusion_matrix", "plot_roc_pr", "plot_training_curves"]


def _operating_point(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float | None]:
    """(FPR, TPR/recall, precision) of hard predictions; precision None if nothing predicted positive."""
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=LABELS).ravel()
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


def plot_confusion_matrix(
    y_true,
    y_pred,
    class_names: Sequence[str],
    path,
    title: str = "Confusion matrix (test)",
) -> Path:
    """PNG confusion matrix; each cell shows the count and the row-normalised percentage."""
    names = check_class_names(class_names)
    yt, yp = as_labels(y_true, "y_true"), as_labels(y_pred, "y_pred")
    check_same_length(yt, yp, "y_true and y_pred")
    cm = confusion_matrix(yt, yp, labels=LABELS)
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
    ax.set_xticks(LABELS, labels=list(names))
    ax.set_yticks(LABELS, labels=list(names))
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
    yt = as_labels(y_true, "y_true")
    p = as_probabilities(p_positive)
    check_same_length(yt, p, "y_true and p_positive")
    threshold = check_threshold(threshold)
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
