"""The svm variant's budgeted search: validation only, seeded, ties to the simplest model."""

import math

import numpy as np
import pytest

from mlproject.models.feature_transforms import signed_log1p
from mlproject.training.svm_training import (SvmSettings, Trial, best_trial, fit_svm, search_svm, validation_auc,
                                             validation_hinge)


def _data(seed=0, n=160, d=12):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return x, y


def test_ties_without_hinge_go_to_the_smallest_C_and_nan_trials_never_win():
    trials = [Trial(0, 10.0, "rbf", 0.9, 1), Trial(1, 0.1, "linear", 0.9, 1), Trial(2, 1.0, "rbf", 0.8, 1),
              Trial(3, 0.01, "rbf", math.nan, 1)]
    assert best_trial(trials).number == 1
    assert best_trial(trials, tie_break="smallest_C").number == 1
    with pytest.raises(ValueError, match="validation split"):
        best_trial([Trial(0, 1.0, "rbf", math.nan, 1)])


def test_the_hinge_tie_break_only_reorders_trials_tied_on_auc():
    trials = [Trial(0, 10.0, "rbf", 1.0, 1, 0.05), Trial(1, 0.1, "linear", 1.0, 1, 0.30),
              Trial(2, 1.0, "rbf", 0.9, 1, 0.01), Trial(3, 5.0, "rbf", 1.0, 1, math.nan)]
    assert best_trial(trials).number == 0  # trial 2 has less hinge but a lower AUC
    assert best_trial(trials, tie_break="smallest_C").number == 1
    with pytest.raises(ValueError, match="tie_break"):
        best_trial(trials, tie_break="largest_C")


def test_validation_hinge_weighs_each_class_equally_and_counts_margin_violations():
    labels = np.array([0, 0, 0, 0, 1])
    beyond_margin = np.array([-2.0, -1.5, -3.0, -1.0, 2.0])
    assert validation_hinge(beyond_margin, labels) == pytest.approx(0.0)
    # the one defect inside the margin costs as much as all four normal images inside it would
    one_defect = validation_hinge(np.array([-2.0, -1.5, -3.0, -1.0, 0.0]), labels)
    all_normals = validation_hinge(np.array([0.0, 0.0, 0.0, 0.0, 2.0]), labels)
    assert one_defect == pytest.approx(all_normals) and one_defect > 0
    assert math.isnan(validation_hinge(beyond_margin[:4], labels[:4]))
    three = np.array([0, 1, 2])
    assert validation_hinge(np.eye(3) * 3 - 1, three) == pytest.approx(0.0)
    assert validation_hinge(np.roll(np.eye(3) * 3 - 1, 1, axis=1), three) > 1


def test_given_settings_skip_the_search():
    x, y = _data()
    result = search_svm((x, y), (x, y), SvmSettings(C=2.0, kernel="linear"))
    assert (result.C, result.kernel, result.trials, result.searched) == (2.0, "linear", [], False)


def test_the_search_is_seeded_bounded_and_reports_every_trial():
    x, y = _data()
    seen = []
    settings = SvmSettings(search_trials=6, seed=3)
    first = search_svm((x[:120], y[:120]), (x[120:], y[120:]), settings, on_trial=seen.append)
    second = search_svm((x[:120], y[:120]), (x[120:], y[120:]), settings)
    assert len(first.trials) == 6 and seen == first.trials
    assert (first.C, first.kernel) == (second.C, second.kernel)
    assert settings.C_range[0] <= first.C <= settings.C_range[1] and first.kernel in settings.kernels
    assert first.C == best_trial(first.trials).C


def test_only_the_searched_parameter_varies():
    x, y = _data()
    result = search_svm((x[:120], y[:120]), (x[120:], y[120:]), SvmSettings(kernel="linear", search_trials=4))
    assert {t.kernel for t in result.trials} == {"linear"} and len({t.C for t in result.trials}) > 1


def test_the_choice_depends_on_validation_not_on_anything_else():
    """Same training data, validation sets that disagree: the choice follows validation."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6))
    y = (x[:, 0] > 0).astype(int)
    val_a = (x[150:], y[150:])
    val_b = (x[150:], 1 - y[150:])  # validation that rewards the opposite ranking
    settings = SvmSettings(kernel="linear", search_trials=5)
    a = search_svm((x[:150], y[:150]), val_a, settings)
    b = search_svm((x[:150], y[:150]), val_b, settings)
    assert max(t.roc_auc for t in a.trials) > 0.9 > max(t.roc_auc for t in b.trials)


def test_cross_validated_search_scores_on_train_and_validation_together():
    """A small validation split that contradicts a large training split: scored on validation alone,
    every trial fails; cross-validated over both, the training images carry the score."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(220, 6))
    y = (x[:, 0] > 0).astype(int)
    train, val = (x[:200], y[:200]), (x[200:], 1 - y[200:])
    on_val = search_svm(train, val, SvmSettings(kernel="linear", search_trials=3, search_data="val"))
    pooled = search_svm(train, val, SvmSettings(kernel="linear", search_trials=3, search_data="train+val_cv"))
    assert on_val.search_data == "val" and pooled.search_data == "train+val_cv"
    assert max(t.roc_auc for t in on_val.trials) < 0.2
    assert min(t.roc_auc for t in pooled.trials) > 0.8
    assert all(not math.isnan(t.hinge) for t in pooled.trials)


def test_cross_validated_search_falls_back_to_validation_when_a_class_is_too_small_for_the_folds():
    x, y = _data()
    y = np.zeros_like(y)
    y[[3, 50, 130, 150]] = 1  # 4 defects in all: not one per fold for 5 folds
    result = search_svm((x[:120], y[:120]), (x[120:], y[120:]),
                        SvmSettings(kernel="linear", search_trials=2, search_data="train+val_cv", search_folds=5))
    assert result.search_data == "val" and len(result.trials) == 2


def test_settings_are_checked():
    for bad in ({"C": -1.0}, {"C": "big"}, {"kernel": "cubic"}, {"search_trials": 0}, {"search_budget_s": 0},
                {"search_data": "test"}, {"search_folds": 1}):
        with pytest.raises(ValueError):
            SvmSettings(**bad)


def test_validation_auc_handles_several_classes_and_a_missing_class():
    labels = np.array([0, 1, 2, 0, 1, 2])
    scores = np.eye(3)[labels] + 0.01
    assert validation_auc(scores, labels) == pytest.approx(1.0)
    assert math.isnan(validation_auc(np.zeros(3), np.array([1, 1, 1])))


def test_log_features_travel_inside_the_fitted_pipeline():
    x, y = _data()
    x = np.abs(x) * 100
    with_log = fit_svm(x, y, kernel="linear", log_features=True)
    assert "log" in with_log.named_steps
    np.testing.assert_allclose(with_log.named_steps["log"].transform(x[:3]), signed_log1p(x[:3]))
    assert "log" not in fit_svm(x, y, kernel="linear").named_steps
    np.testing.assert_allclose(signed_log1p(np.array([-3.0, 0.0, 3.0])), [-np.log(4), 0, np.log(4)])


def test_calibration_folds_are_shuffled_so_sorted_data_keeps_its_ranking():
    """Images arrive sorted (class folder, then name; neighbours often share a part or module). With a
    drifting nuisance along that order, contiguous calibration folds see shifted data."""
    rng = np.random.default_rng(0)
    n = 240
    y = np.repeat([0, 1], n // 2)  # sorted by class, as a folder listing is
    drift = np.tile(np.linspace(-3, 3, n // 2), 2)  # sorted by "module" within each class
    x = np.column_stack([y + 0.6 * rng.normal(size=n), drift, drift * rng.normal(size=n), rng.normal(size=(n, 5))])
    pipeline = fit_svm(x, y, C=1.0, kernel="rbf")
    folds = pipeline.named_steps["svm"].cv
    assert getattr(folds, "shuffle", False) is True
    held_out = rng.permutation(n)[:80]
    p = pipeline.predict_proba(x[held_out])[:, 1]
    assert validation_auc(p, y[held_out]) > 0.85


def test_out_of_fold_scores_come_from_fits_that_never_saw_the_image():
    from mlproject.training.svm_training import out_of_fold_scores

    x, y = _data(n=120)
    y_noisy = y.copy()
    y_noisy[:6] = 1 - y_noisy[:6]  # mislabelled: a fit that saw them would lean towards their labels
    oof = out_of_fold_scores(x, y_noisy, C=10.0, kernel="rbf", seed=0)
    seen = fit_svm(x, y_noisy, C=10.0, kernel="rbf", seed=0).predict_proba(x)[:, 1]
    assert oof.shape == (120,) and np.all((oof >= 0) & (oof <= 1))
    # held out, the flipped images keep scores that follow their features, not their (wrong) labels
    agreement_oof = np.mean((oof[:6] >= 0.5) == y[:6].astype(bool))
    assert agreement_oof >= np.mean((seen[:6] >= 0.5) == y[:6].astype(bool))
    assert not np.allclose(oof, seen)


def test_out_of_fold_scores_need_enough_images_of_each_class():
    from mlproject.training.svm_training import out_of_fold_scores

    x, y = _data(n=40)
    y[:] = 0
    y[:5] = 1  # 5 defects: fewer than 2 per fold-fit for 3 folds' calibration
    assert out_of_fold_scores(x, y, C=1.0, kernel="linear") is None
