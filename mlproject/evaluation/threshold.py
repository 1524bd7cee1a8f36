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


#: Scores are clipped this far from 0 and 1 before the logit: float32 sigmoids saturate to exactly 0 or 1.
_LOGIT_EPS = 1e-7


def logit(p_defect) -> np.ndarray:
    p = np.clip(np.asarray(p_defect, dtype=float), _LOGIT_EPS, 1 - _LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def best_balanced_threshold(y_true, p_defect) -> float:
    """The threshold that maximises balanced accuracy on (validation) data.

    Calibrated probabilities on imbalanced data rarely pass 0.5 for the rare class, so a fixed 0.5
    can call every image normal. Candidates are the centres of the gaps between adjacent distinct
    scores in logit space (the classifier's linear score before its sigmoid). Among equally good
    candidates the widest gap wins: the boundary with the largest margin to the validation images on
    either side, as an SVM places it. A perfectly separated validation split thus puts the threshold
    halfway between its highest-scoring normal and lowest-scoring defect, not wherever 0.5 falls.
    """
    y_true = np.asarray(y_true).astype(int)
    z = logit(p_defect)
    if len(np.unique(y_true)) < 2:
        return 0.5
    scores = np.unique(z)
    if len(scores) < 2:
        return 0.5
    centres, widths = (scores[:-1] + scores[1:]) / 2, np.diff(scores)
    quality = np.array([balanced_accuracy_score(y_true, (z >= centre).astype(int)) for centre in centres])
    best = np.lexsort((-widths, -np.round(quality, 12)))[0]  # best balanced accuracy, then widest gap
    return float(1.0 / (1.0 + np.exp(-centres[best])))


def resolve_threshold(setting: float | str, y_val, p_val) -> float:
    return best_balanced_threshold(y_val, p_val) if setting == "auto" else float(setting)
