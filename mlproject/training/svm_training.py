"""The ``svm`` variant's classifier: scaled VGG16 features -> SVM with calibrated probabilities."""

from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


def fit_svm(features: np.ndarray, labels: np.ndarray, *, C: float = 1.0, kernel: str = "rbf", seed: int = 0) -> Pipeline:
    """Balanced-class SVM; probabilities come from cross-validated sigmoid calibration.

    ``SVC(probability=True)`` is deprecated in scikit-learn 1.9; ``CalibratedClassifierCV`` replaces it.
    """
    labels = np.asarray(labels).astype(int)
    smallest_class = int(np.bincount(labels, minlength=2).min())
    if smallest_class < 2:
        raise ValueError("the svm variant needs at least 2 training images of each class")
    calibrated = CalibratedClassifierCV(
        SVC(C=C, kernel=kernel, class_weight="balanced", random_state=seed),
        method="sigmoid",
        cv=min(3, smallest_class),
    )
    return Pipeline([("scale", StandardScaler()), ("svm", calibrated)]).fit(features, labels)
