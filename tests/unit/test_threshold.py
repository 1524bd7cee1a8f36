import numpy as np
import pytest

from mlproject.evaluation.threshold import best_balanced_threshold, parse_threshold, resolve_threshold


def test_imbalanced_calibrated_scores_get_a_threshold_below_half():
    # Rare defects with probabilities around 0.2-0.3: 0.5 would call everything normal.
    y = np.array([0] * 8 + [1] * 2)
    p = np.array([0.01, 0.02, 0.05, 0.05, 0.08, 0.1, 0.12, 0.15, 0.22, 0.3])
    threshold = best_balanced_threshold(y, p)
    assert 0.15 < threshold <= 0.22
    assert ((p >= threshold) == (y == 1)).all()


def test_ties_prefer_half_and_one_class_keeps_half():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.0, 0.1, 0.9, 1.0])
    assert best_balanced_threshold(y, p) == 0.5
    assert best_balanced_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3])) == 0.5


def test_parse_and_resolve():
    assert parse_threshold("auto") == "auto" and parse_threshold("0.3") == 0.3
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_threshold("1.5")
    assert resolve_threshold(0.7, [0, 1], [0.1, 0.9]) == 0.7
