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
    """The threshold that maximises balanced accuracy on (validation) data; ``auto``'s fallback.

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


def density_crossing_threshold(y_true, p_defect) -> float:
    """``threshold=auto``: where normal fits to each class's validation logits have equal density.

    Balanced accuracy weighs both classes equally, so under the fits the expected balanced accuracy
    is highest where the two densities cross (its derivative in the threshold is proportional to
    f_normal(t) - f_defect(t)). Unlike the middle of the widest gap it uses how each class spreads:
    a tight normal class and a spread defect class put the threshold near the normals, so defects
    harder than the validation ones (DAGM class 1's border defects) still land above it. Chosen on
    finetune seeds whose test scores were unseen (benchmarks/history/2026-11-notebook.md, "Seed 4").

    Falls back to ``best_balanced_threshold`` when a class has fewer than 2 validation images, a
    class's scores do not spread, the defects do not score higher on average, or the fits do not
    cross between the class means.
    """
    y_true = np.asarray(y_true).astype(int)
    z = logit(p_defect)
    normal, defect = z[y_true == 0], z[y_true == 1]
    if len(normal) < 2 or len(defect) < 2:
        return best_balanced_threshold(y_true, p_defect)
    m0, s0, m1, s1 = normal.mean(), normal.std(ddof=1), defect.mean(), defect.std(ddof=1)
    if not (m0 < m1 and s0 > 0 and s1 > 0):
        return best_balanced_threshold(y_true, p_defect)
    # log N(t; m0, s0) = log N(t; m1, s1)  <=>  a t^2 + b t + c = 0
    a = 1 / (2 * s1**2) - 1 / (2 * s0**2)
    b = m0 / s0**2 - m1 / s1**2
    c = m1**2 / (2 * s1**2) - m0**2 / (2 * s0**2) + np.log(s1 / s0)
    roots = [-c / b] if abs(a) < 1e-12 else np.roots([a, b, c])
    between = [float(np.real(r)) for r in roots if abs(np.imag(r)) < 1e-12 and m0 < np.real(r) < m1]
    if not between:
        return best_balanced_threshold(y_true, p_defect)
    return float(1.0 / (1.0 + np.exp(-between[0])))


def resolve_threshold(setting: float | str, y_val, p_val) -> float:
    return density_crossing_threshold(y_val, p_val) if setting == "auto" else float(setting)
