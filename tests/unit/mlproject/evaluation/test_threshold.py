import numpy as np
import pytest

from mlproject.evaluation.threshold import (
    best_balanced_threshold,
    density_crossing_threshold,
    logit,
    parse_threshold,
    resolve_threshold,
)


def test_imbalanced_calibrated_scores_get_a_threshold_below_half():
    # Rare defects with probabilities around 0.2-0.3: 0.5 would call everything normal.
    y = np.array([0] * 8 + [1] * 2)
    p = np.array([0.01, 0.02, 0.05, 0.05, 0.08, 0.1, 0.12, 0.15, 0.22, 0.3])
    threshold = best_balanced_threshold(y, p)
    assert 0.15 < threshold <= 0.22
    assert ((p >= threshold) == (y == 1)).all()


def test_symmetric_separated_scores_and_one_class_keep_half():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.0, 0.1, 0.9, 1.0])
    assert best_balanced_threshold(y, p) == pytest.approx(0.5)
    assert best_balanced_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3])) == 0.5
    assert best_balanced_threshold(np.array([0, 1]), np.array([0.4, 0.4])) == 0.5


def test_separated_validation_puts_the_threshold_mid_margin_in_logit_space():
    # Normal texture scores cluster near 0, defects spread out: every threshold in (0.003, 0.6]
    # separates them, and the one with the largest margin sits halfway between in logit space.
    y = np.array([0] * 5 + [1] * 3)
    p = np.array([0.001, 0.002, 0.001, 0.003, 0.002, 0.6, 0.95, 0.99])
    threshold = best_balanced_threshold(y, p)
    assert logit(threshold) == pytest.approx((logit(0.003) + logit(0.6)) / 2)
    assert 0.03 < threshold < 0.1  # a defect scoring 0.47 on new data would still be caught
    assert ((p >= threshold) == (y == 1)).all()


def test_better_balanced_accuracy_beats_a_wider_gap():
    # The widest gap (0.02 | 0.5) leaves the defect at 0.02 below it; the gap under it separates all.
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.001, 0.005, 0.01, 0.02, 0.5, 0.6])
    threshold = best_balanced_threshold(y, p)
    assert 0.01 < threshold < 0.02


def test_saturated_scores_do_not_break_the_logit():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)
    threshold = best_balanced_threshold(y, p)
    assert 0 < threshold < 1 and ((p >= threshold) == (y == 1)).all()


def test_parse_and_resolve():
    assert parse_threshold("auto") == "auto" and parse_threshold("0.3") == 0.3
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_threshold("1.5")
    assert resolve_threshold(0.7, [0, 1], [0.1, 0.9]) == 0.7


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def test_auto_puts_the_threshold_where_the_fitted_class_densities_cross():
    # Tight normals around logit -4 (sd 0.5), spread defects around +4 (sd 2): separated, but the
    # defects' spread says a harder defect is more likely than a harder normal.
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-4, 0.5, 60), rng.normal(4, 2, 12)])
    y = np.array([0] * 60 + [1] * 12)
    normal, defect = z[y == 0], z[y == 1]
    m0, s0, m1, s1 = normal.mean(), normal.std(ddof=1), defect.mean(), defect.std(ddof=1)
    threshold = resolve_threshold("auto", y, sigmoid(z))
    t = logit(threshold)
    density = lambda x, m, s: np.exp(-((x - m) ** 2) / (2 * s**2)) / s  # noqa: E731
    assert m0 < t < m1
    assert density(t, m0, s0) == pytest.approx(density(t, m1, s1), rel=1e-6)
    # nearer the tight normals than the middle of the gap, the widest-gap rule's answer
    assert t < logit(best_balanced_threshold(y, sigmoid(z)))
    assert ((sigmoid(z) >= threshold) == (y == 1)).all()


def test_equal_spreads_cross_halfway_between_the_means():
    z = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    assert logit(density_crossing_threshold(y, sigmoid(z))) == pytest.approx(0.0, abs=1e-6)
    z = np.array([-5.0, -4.0, -3.0, 1.0, 2.0, 3.0])  # same spreads, means -4 and 2
    assert logit(density_crossing_threshold(y, sigmoid(z))) == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize(("y", "p"), [
    ([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9]),                  # one validation defect: no spread to fit
    ([0, 0, 1, 1], [0.2, 0.2, 0.8, 0.9]),                  # normals all alike: no spread
    ([0, 0, 0, 1, 1, 1], [0.6, 0.7, 0.8, 0.1, 0.2, 0.3]),  # defects score lower: an inverted model
    ([0, 0, 0], [0.1, 0.2, 0.3]),                          # one class
])
def test_auto_falls_back_to_the_best_balanced_threshold_where_the_fit_says_nothing(y, p):
    assert density_crossing_threshold(y, p) == best_balanced_threshold(y, p)
