"""Test-time views: the 8 flips and quarter turns of an image, and scores averaged over them.
Plain numpy: the registered model scores with these without any training code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Flips and quarter turns: the 8 views of an image under the square's symmetries (the dihedral
#: group). A texture's defect label does not change under any of them.
DIHEDRAL_VIEWS = 8


def dihedral_view(images: np.ndarray, view: int) -> np.ndarray:
    """View ``view`` (0-7) of a batch (N, H, W, C): ``view % 4`` quarter turns, mirrored if ``view >= 4``."""
    if not 0 <= view < DIHEDRAL_VIEWS:
        raise ValueError(f"view must be between 0 and {DIHEDRAL_VIEWS - 1}, got {view}")
    turned = np.rot90(images, k=view % 4, axes=(1, 2))
    return np.ascontiguousarray(turned[:, :, ::-1] if view >= 4 else turned)


#: What ``test_time_views`` may be: each image as it is, or the mean over all its dihedral views.
TEST_TIME_VIEWS = (1, DIHEDRAL_VIEWS)


def mean_over_views(predict, images: np.ndarray, views: int, *, first: np.ndarray | None = None) -> np.ndarray:
    """``predict(batch) -> P(defect) per image``, averaged over the first ``views`` dihedral views.

    With all 8 views the score is the same for an image and any flip or quarter turn of it: a defect
    at one border is also seen where the network saw such defects in training. Costs ``views``
    forward passes per image; ``first``, the scores of view 0 when the caller already has them
    (one pass fewer).
    """
    if views not in TEST_TIME_VIEWS:
        raise ValueError(f"test_time_views must be one of {TEST_TIME_VIEWS}, got {views}")
    scores = [np.asarray(predict(images) if first is None else first, dtype=np.float64)]
    scores += [np.asarray(predict(dihedral_view(images, v)), dtype=np.float64) for v in range(1, views)]
    return scores[0] if views == 1 else np.mean(scores, axis=0)


def near_threshold(p_one: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    """Which one-view scores are close enough to the threshold that the other views may change the decision."""
    return np.abs(np.asarray(p_one, dtype=np.float64) - float(threshold)) < float(margin)


def gated_mean_over_views(predict, images: np.ndarray, views: int, *, threshold: float, margin: float,
                          first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One view for every image, all ``views`` only where the one-view score is within ``margin`` of
    ``threshold`` (:func:`near_threshold`): far from it, averaging cannot move a score across it (the
    margin is measured on validation, :func:`choose_view_gate_margin`). Those rows get exactly
    :func:`mean_over_views`' score; the others their one-view score.
    Returns ``(p_defect, near)``; costs ``1 + (views - 1) * near.mean()`` passes per image."""
    p_one = np.asarray(predict(images) if first is None else first, dtype=np.float64)
    near = near_threshold(p_one, threshold, margin) if views > 1 else np.zeros(len(p_one), bool)
    p_defect = p_one.copy()
    if near.any():
        p_defect[near] = mean_over_views(predict, images[near], views, first=p_one[near])
    return p_defect, near


@dataclass(frozen=True)
class ViewGate:
    """The gate chosen on validation and what it would have done there."""

    margin: float
    flips_one_view: int  # validation images whose one-view decision differs from the all-view one
    flips_gated: int  # ... whose gated decision differs from the all-view one (0 by construction)
    fraction_gated: float  # share of validation images that get all views


#: How much wider than validation demands the gate is: test images near the threshold are not the
#: validation ones, and the gate only costs time where it is too wide, decisions where too narrow.
VIEW_GATE_SAFETY = 2.0
#: The gate is at least this quantile of how far the views moved validation scores (times the
#: safety factor): validation may hold no image whose decision the views change, test may.
VIEW_GATE_SHIFT_QUANTILE = 0.9


def choose_view_gate_margin(p_one: np.ndarray, p_all: np.ndarray, threshold: float, *,
                            safety: float = VIEW_GATE_SAFETY, shift_quantile: float = VIEW_GATE_SHIFT_QUANTILE) -> ViewGate:
    """The gate margin from validation scores: ``p_one`` as the model scores one view (in the
    precision it will serve with), ``p_all`` the exact all-view means. The smallest margin that holds
    every image whose decision the views change, or the ``shift_quantile`` of ``|p_all - p_one|`` if
    larger, times ``safety``. An image can only change its decision if it lies closer to the
    threshold than the views move it."""
    p_one, p_all = np.asarray(p_one, dtype=np.float64), np.asarray(p_all, dtype=np.float64)
    if p_one.shape != p_all.shape:
        raise ValueError(f"p_one and p_all differ in shape: {p_one.shape} vs {p_all.shape}")
    if not safety >= 1:
        raise ValueError(f"safety must be at least 1, got {safety}")
    distance = np.abs(p_one - threshold)
    flipped = (p_one >= threshold) != (p_all >= threshold)
    needed = float(np.nextafter(distance[flipped].max(), np.inf)) if flipped.any() else 0.0
    shift = float(np.quantile(np.abs(p_all - p_one), shift_quantile)) if len(p_one) else 0.0
    margin = safety * max(needed, shift)
    near = near_threshold(p_one, threshold, margin)
    gated = np.where(near, p_all, p_one)
    return ViewGate(margin=margin, flips_one_view=int(flipped.sum()),
                    flips_gated=int(((gated >= threshold) != (p_all >= threshold)).sum()),
                    fraction_gated=float(near.mean()) if len(near) else 0.0)
