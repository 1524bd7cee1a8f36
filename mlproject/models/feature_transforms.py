"""Which pooled VGG16 features a feature-based classifier sees, and the transforms applied to them
before it (they travel inside the saved scikit-learn pipeline, so serving applies what training did).
No Keras here: the CLI reads the defaults without loading TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``: pooled ReLU statistics are heavily right-skewed (a few channels fire
    hundreds of times stronger than the rest), which swamps a standardised linear classifier."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class FeatureSpec:
    """Which pooled VGG16 outputs a feature-based classifier sees. Small local defects survive in
    per-channel statistics of the middle blocks; a global average of block5 washes them out."""

    layers: tuple[str, ...] = ("block3_pool", "block4_pool", "block5_pool")
    pooling: str = "stats"
    log_features: bool = True  # sign(x) log(1 + |x|) before standardising (ReLU statistics are skewed)


#: The default features of every variant: the svm's inputs, the frozen/finetune heads' inputs, and
#: ``alloop simulate``'s fast variant.
DEFAULT_FEATURES = FeatureSpec()
