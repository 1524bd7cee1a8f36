"""Choosing the operating point: the P(defect) at or above which an image is called defective."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score


def parse_threshold(value: str) -> float | str:
    """``auto`` or a probability in [0, 1]; for argparse."""
    if str(value).strip().lower() == "auto":
        return "auto"
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"threshold must be 'auto' or between 0 and 1, got {value!r}")
    return number


def best_balanced_threshold(y_true, p_defect) -> float:
    """The threshold that maximises balanced accuracy on (validation) data.

    Calibrated probabilities on imbalanced data rarely pass 0.5 for the rare class, so a fixed 0.5
    can call every image normal. Candidates are midpoints between sorted distinct scores; ties go to
    the candidate closest to 0.5.
    """
    y_true = np.asarray(y_true).astype(int)
    p = np.asarray(p_defect, dtype=float)
    if len(np.unique(y_true)) < 2:
        return 0.5
    scores = np.unique(p)
    candidates = np.concatenate([[0.5], (scores[:-1] + scores[1:]) / 2 if len(scores) > 1 else []])
    best, best_score = 0.5, -1.0
    for candidate in candidates:
        score = balanced_accuracy_score(y_true, (p >= candidate).astype(int))
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12 and abs(candidate - 0.5) < abs(best - 0.5)):
            best, best_score = float(candidate), score
    return best


def resolve_threshold(setting: float | str, y_val, p_val) -> float:
    return best_balanced_threshold(y_val, p_val) if setting == "auto" else float(setting)
