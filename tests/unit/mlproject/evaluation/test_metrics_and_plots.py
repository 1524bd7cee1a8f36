"""The input checks metrics and plots share, and the operating point the ROC/PR plot marks."""

import numpy as np
import pytest

from mlproject.evaluation.metrics import (
    as_labels,
    as_probabilities,
    check_class_names,
    check_same_length,
    check_threshold,
)
from mlproject.evaluation.plots import _operating_point


def test_labels_must_be_zero_or_one_and_present():
    assert as_labels([1, 0, 1.0], "y_true").tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="y_true must contain only 0/1 labels"):
        as_labels([0, 2], "y_true")
    with pytest.raises(ValueError, match="y_pred is empty"):
        as_labels([], "y_pred")


def test_probabilities_must_be_finite_and_in_the_unit_interval():
    assert as_probabilities([[0.0], [1.0]]).tolist() == [0.0, 1.0]
    for bad, words in (([0.2, np.nan], "NaN or inf"), ([1.2], r"\[0, 1\]"), ([], "empty")):
        with pytest.raises(ValueError, match=words):
            as_probabilities(bad)


def test_class_names_lengths_and_threshold_are_checked():
    assert check_class_names(["ok", 1]) == ("ok", "1")
    with pytest.raises(ValueError, match="class_names must be"):
        check_class_names(("ok", "defect", "dent"))
    with pytest.raises(ValueError, match="y_true and p_positive have different lengths: 2 != 3"):
        check_same_length(np.zeros(2), np.zeros(3), "y_true and p_positive")
    assert check_threshold("0.25") == 0.25
    with pytest.raises(ValueError, match="threshold"):
        check_threshold(1.5)


def test_the_operating_point_of_hard_predictions():
    y_true = np.array([0, 0, 0, 1, 1])
    y_pred = np.array([1, 0, 0, 1, 0])
    fpr, tpr, precision = _operating_point(y_true, y_pred)
    assert (fpr, tpr, precision) == pytest.approx((1 / 3, 1 / 2, 1 / 2))
    assert _operating_point(y_true, np.zeros(5, int))[2] is None  # nothing called positive: no precision
