"""Transforms applied to pooled VGG16 features before a classifier; they travel inside the saved
scikit-learn pipeline, so serving applies exactly what training did."""

from __future__ import annotations

import numpy as np


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``: pooled ReLU statistics are heavily right-skewed (a few channels fire
    hundreds of times stronger than the rest), which swamps a standardised linear classifier."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))
