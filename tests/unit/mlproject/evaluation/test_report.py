"""Unit tests for mlproject.evaluation.report (hand-computed expectations)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from mlproject.evaluation import (
    EvaluationReport,
    build_report,
    classification_metrics,
    classification_table,
    plot_confusion_matrix,
    plot_roc_pr,
    plot_training_curves,
    predicted_labels,
    sanitize_metric_name,
    write_report_files,
)

CLASSES = ("ok", "defect")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MLFLOW_NAME = re.compile(r"^[A-Za-z0-9_\-./ ]+$")

# Small example: y_pred at 0.5 = [0, 1, 0, 1] -> one error per class.
Y_TRUE = np.array([0, 0, 1, 1])
P_POS = np.array([0.1, 0.6, 0.4, 0.9])


def assert_valid_png(path, min_width=200, min_height=150):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000  # a real rendered figure, not an empty stub
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        width, height = img.size
    assert width >= min_width and height >= min_height
    return width, height


# ----------------------------------------------------------------- predicted_labels


def test_predicted_labels_threshold_is_inclusive():
    labels = predicted_labels([0.2, 0.5, 0.49999, 1.0], threshold=0.5)
    assert labels.tolist() == [0, 1, 0, 1]
    assert labels.dtype.kind == "i"


def test_predicted_labels_rejects_nan_and_out_of_range():
    with pytest.raises(ValueError):
        predicted_labels([0.1, np.nan])
    with pytest.raises(ValueError):
        predicted_labels([0.1, 1.2])


# ------------------------------------------------------------- classification_table


def test_table_has_class_names_and_supports():
    y_true = np.array([0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 1])
    table = classification_table(y_true, y_pred, CLASSES)

    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    # Row layout: name precision recall f1 support
    assert rows["ok"][1:] == ["1.00", "0.67", "0.80", "3"]
    assert rows["defect"][1:] == ["0.67", "1.00", "0.80", "2"]
    assert rows["accuracy"][-2:] == ["0.80", "5"]
    assert "macro avg" in table and "weighted avg" in table


def test_table_keeps_absent_class_row():
    table = classification_table([0, 0, 0], [0, 0, 1], CLASSES)
    defect_row = next(line for line in table.splitlines() if line.strip().startswith("defect"))
    assert defect_row.split()[-1] == "0"  # support 0, no crash, zero_division=0


# ----------------------------------------------------------- classification_metrics


def test_metrics_hand_computed_at_default_threshold():
    m = classification_metrics(Y_TRUE, P_POS, CLASSES)

    for cls in CLASSES:
        assert m[f"test_{cls}_precision"] == pytest.approx(0.5)
        assert m[f"test_{cls}_recall"] == pytest.approx(0.5)
        assert m[f"test_{cls}_f1"] == pytest.approx(0.5)
        assert m[f"test_{cls}_support"] == 2
    assert m["test_accuracy"] == pytest.approx(0.5)
    assert m["test_balanced_accuracy"] == pytest.approx(0.5)
    # 3 of 4 (positive, negative) pairs ranked correctly.
    assert m["test_roc_auc"] == pytest.approx(0.75)
    # Ranking 0.9(+) 0.6(-) 0.4(+) 0.1(-): AP = 0.5*1 + 0.5*(2/3).
    assert m["test_average_precision"] == pytest.approx(0.5 + 1 / 3)
    assert m["test_defect_recall"] == pytest.approx(0.5)
    assert m["test_threshold"] == 0.5
    assert all(isinstance(v, float) for v in m.values())


def test_metrics_lower_threshold_and_prefix():
    # At 0.3: y_pred = [0, 1, 1, 1].
    m = classification_metrics(Y_TRUE, P_POS, CLASSES, threshold=0.3, prefix="val_")
    assert m["val_defect_precision"] == pytest.approx(2 / 3)
    assert m["val_defect_recall"] == pytest.approx(1.0)
    assert m["val_defect_f1"] == pytest.approx(0.8)
    assert m["val_ok_precision"] == pytest.approx(1.0)
    assert m["val_ok_recall"] == pytest.approx(0.5)
    assert m["val_accuracy"] == pytest.approx(0.75)
    assert m["val_balanced_accuracy"] == pytest.approx(0.75)
    assert m["val_defect_recall"] == pytest.approx(1.0)
    assert m["val_threshold"] == pytest.approx(0.3)
    # Threshold-free metrics do not depend on the threshold.
    assert m["val_roc_auc"] == pytest.approx(0.75)
    assert all(key.startswith("val_") for key in m)


def test_defect_recall_is_named_independently_of_positive_class():
    m = classification_metrics(Y_TRUE, P_POS, ("good", "scratch"), threshold=0.3)
    assert m["test_defect_recall"] == m["test_scratch_recall"] == pytest.approx(1.0)
    assert "test_good_recall" in m


def test_one_class_y_true_omits_ranking_metrics():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn UndefinedMetric/UserWarnings either
        m = classification_metrics([0, 0, 0], [0.1, 0.7, 0.2], CLASSES)
    assert "test_roc_auc" not in m
    assert "test_average_precision" not in m
    assert m["test_accuracy"] == pytest.approx(2 / 3)
    assert m["test_balanced_accuracy"] == pytest.approx(2 / 3)  # only "ok" is present
    assert m["test_defect_support"] == 0
    assert m["test_defect_recall"] == 0.0


def test_class_names_are_sanitized_into_valid_mlflow_names():
    m = classification_metrics(Y_TRUE, P_POS, ("o.k.", "crack / dent (severe)!"))
    assert "test_o.k._precision" in m
    assert "test_crack_dent_severe_recall" in m
    assert all(MLFLOW_NAME.match(key) for key in m)


def test_sanitized_collisions_stay_distinct():
    m = classification_metrics(Y_TRUE, P_POS, ("ok?", "ok!"))
    assert "test_ok_0_precision" in m and "test_ok_1_precision" in m
    assert len([k for k in m if k.endswith("_support")]) == 2


def test_sanitize_metric_name_examples():
    assert sanitize_metric_name("défaut/rayure") == "d_faut_rayure"
    assert sanitize_metric_name("  ") == "class"
    assert sanitize_metric_name("hole-2.5mm") == "hole-2.5mm"


def test_invalid_prefix_and_length_mismatch_raise():
    with pytest.raises(ValueError):
        classification_metrics(Y_TRUE, P_POS, CLASSES, prefix="test:")
    with pytest.raises(ValueError):
        classification_metrics(Y_TRUE, P_POS[:3], CLASSES)
    with pytest.raises(ValueError):
        classification_metrics(Y_TRUE, P_POS, ("only_one",))


# -------------------------------------------------------------------------- plots


def test_confusion_matrix_png(tmp_path):
    path = plot_confusion_matrix(Y_TRUE, predicted_labels(P_POS), CLASSES, tmp_path / "sub" / "cm.png")
    assert path == tmp_path / "sub" / "cm.png"
    assert_valid_png(path)


def test_confusion_matrix_png_with_empty_row(tmp_path):
    path = plot_confusion_matrix([0, 0], [0, 1], CLASSES, tmp_path / "cm.png")
    assert_valid_png(path)


def test_roc_pr_png_is_two_panels(tmp_path):
    path = plot_roc_pr(Y_TRUE, P_POS, tmp_path / "roc_pr.png", threshold=0.3, title_prefix="run 1")
    width, height = assert_valid_png(path)
    assert width > height  # side-by-side panels


def test_roc_pr_png_single_class_does_not_crash(tmp_path):
    path = plot_roc_pr([1, 1, 1], [0.2, 0.8, 0.9], tmp_path / "roc_pr.png")
    assert_valid_png(path)


def test_training_curves_full_history_with_phase_boundary(tmp_path):
    history = {
        "accuracy": [0.6, 0.7, 0.8, 0.85],
        "val_accuracy": [0.55, 0.65, 0.75, 0.8],
        "loss": [0.9, 0.7, 0.5, 0.4],
        "val_loss": [1.0, 0.8, 0.6, 0.55],
        "phase_boundary": [2],
    }
    path = plot_training_curves(history, tmp_path / "curves.png", title="vgg16 run")
    assert_valid_png(path)


@pytest.mark.parametrize(
    "history",
    [
        {"accuracy": [0.5, 0.6], "loss": [0.9, 0.8]},  # no validation split
        {"val_loss": [1.0, 0.9, 0.8]},  # only one series at all
        {},  # nothing recorded
    ],
)
def test_training_curves_missing_keys(tmp_path, history):
    path = plot_training_curves(history, tmp_path / "curves.png")
    assert_valid_png(path)


# ------------------------------------------------------------------ report bundle


def test_build_report_is_consistent():
    report = build_report(Y_TRUE, P_POS, CLASSES, threshold=0.3)
    assert isinstance(report, EvaluationReport)
    assert report.y_pred.tolist() == [0, 1, 1, 1]
    assert report.table == classification_table(Y_TRUE, report.y_pred, CLASSES)
    assert report.metrics == classification_metrics(Y_TRUE, P_POS, CLASSES, threshold=0.3)
    assert report.threshold == 0.3


def test_write_report_files(tmp_path):
    report = build_report(Y_TRUE, P_POS, CLASSES)
    out_dir = tmp_path / "eval"
    paths = write_report_files(report, Y_TRUE, P_POS, out_dir)

    assert [p.name for p in paths] == [
        "classification_report.txt",
        "metrics.json",
        "confusion_matrix.png",
        "roc_pr_curves.png",
    ]
    assert all(p.parent == out_dir and p.exists() for p in paths)
    assert not (out_dir / "predictions.csv").exists()
    assert (out_dir / "classification_report.txt").read_text() == report.table
    assert json.loads((out_dir / "metrics.json").read_text()) == report.metrics
    for png in paths[2:]:
        assert_valid_png(png)


def test_write_report_files_rejects_mismatched_threshold(tmp_path):
    report = build_report(Y_TRUE, P_POS, CLASSES, threshold=0.3)
    with pytest.raises(ValueError):
        write_report_files(report, Y_TRUE, P_POS, tmp_path, threshold=0.5)
    # Explicitly passing the report's own threshold is fine.
    assert len(write_report_files(report, Y_TRUE, P_POS, tmp_path, threshold=0.3)) == 4
