"""Test-time views: the 8 flips and quarter turns of an image, and scores averaged over them.
Plain numpy: the registered model scores with these without any training code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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


def view_scores(predict, images: np.ndarray, views: int, *, first: np.ndarray | None = None) -> np.ndarray:
    """``(N, views)``: ``predict(batch) -> P(defect) per image`` on each of the first ``views``
    dihedral views; ``first``, the scores of view 0 when the caller already has them (one pass fewer)."""
    if views not in TEST_TIME_VIEWS:
        raise ValueError(f"test_time_views must be one of {TEST_TIME_VIEWS}, got {views}")
    scores = [np.asarray(predict(images) if first is None else first, dtype=np.float64)]
    scores += [np.asarray(predict(dihedral_view(images, v)), dtype=np.float64) for v in range(1, views)]
    return np.stack(scores, axis=1)


def mean_over_views(predict, images: np.ndarray, views: int, *, first: np.ndarray | None = None) -> np.ndarray:
    """``predict(batch) -> P(defect) per image``, averaged over the first ``views`` dihedral views.

    With all 8 views the score is the same for an image and any flip or quarter turn of it: a defect
    at one border is also seen where the network saw such defects in training. Costs ``views``
    forward passes per image (one fewer with ``first``, see :func:`view_scores`).
    """
    return view_scores(predict, images, views, first=first).mean(axis=1)


#: After how many views an image may stop on its running mean (the views are taken in order: view 0,
#: then a quarter turn, then the other two turns, then the mirrored four). Networks often see a
#: texture differently under a quarter turn, so 2 and 4 views predict the 8-view mean far better than 1.
VIEW_GATE_STAGES = (1, 2, 4)


def _settled(total: np.ndarray, seen: int, views: int, threshold: float, margins: Mapping[int, float]) -> np.ndarray:
    """Which images may stop after ``seen`` views, ``total`` the sum of their scores so far.

    Certain: P(defect) lies in [0, 1], so the all-view mean lies in
    ``[total / views, (total + views - seen) / views]``; once that interval is on one side of the
    threshold, no remaining view can change the decision. Near enough: at a stage of ``margins``,
    the running mean is at least that far from the threshold (chosen on validation)."""
    settled = (total / views >= threshold) | ((total + views - seen) / views < threshold)
    if seen >= views:
        return np.ones(len(total), bool)
    if seen in margins:
        settled |= np.abs(total / seen - threshold) >= float(margins[seen])
    return settled


def _staged(score_view, n: int, views: int, threshold: float, margins: Mapping[int, float],
            first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    total, seen = np.zeros(n), np.zeros(n, dtype=int)
    p_defect = np.zeros(n)
    active = np.arange(n)
    for view in range(views):
        if not len(active):
            break
        scores = first[active] if view == 0 and first is not None else score_view(active, view)
        total[active] += np.asarray(scores, dtype=np.float64)
        seen[active] = view + 1
        stop = _settled(total[active], view + 1, views, threshold, margins)
        p_defect[active[stop]] = total[active[stop]] / (view + 1)
        active = active[~stop]
    return p_defect, seen


def staged_mean_over_views(predict, images: np.ndarray, views: int, *, threshold: float,
                           margins: Mapping[int, float], first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The views one at a time, each image stopping as soon as the rest cannot, or on validation's
    evidence will not, change its decision (:func:`_settled`; ``margins`` from
    :func:`choose_view_gates`). An image that stops after k views gets the mean of those k (every
    view: exactly :func:`mean_over_views`' score). Returns ``(p_defect, views_seen)``; costs
    ``views_seen.mean()`` passes per image."""
    if views not in TEST_TIME_VIEWS:
        raise ValueError(f"test_time_views must be one of {TEST_TIME_VIEWS}, got {views}")
    first = None if first is None else np.asarray(first, dtype=np.float64)

    def score_view(rows, view):
        return predict(dihedral_view(images[rows], view))

    return _staged(score_view, len(images), views, float(threshold), margins, first)


def staged_mean_from_view_scores(p_views: np.ndarray, threshold: float,
                                 margins: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`staged_mean_over_views` gives for images whose per-view scores (N, views) are known."""
    p_views = np.asarray(p_views, dtype=np.float64)
    return _staged(lambda rows, view: p_views[rows, view], len(p_views), p_views.shape[1], float(threshold), margins)


@dataclass(frozen=True)
class ViewGate:
    """The gates chosen on validation and what they would have done there."""

    margins: dict  # views seen -> how far from the threshold the running mean must be to stop there
    flips_one_view: int  # validation images whose one-view decision differs from the all-view one
    flips_gated: int  # ... whose gated decision differs from the all-view one (0 with exact scores)
    views_per_image: float  # mean views (forward passes) per validation image
    fraction_all_views: float  # share of validation images that get every view


#: How much wider than validation demands a gate is: test images near the threshold are not the
#: validation ones, and a gate only costs time where it is too wide, decisions where too narrow.
VIEW_GATE_SAFETY = 2.0
#: A gate is at least this quantile of how far the remaining views moved validation scores (times
#: the safety factor): validation may hold no image whose decision they change, test may.
VIEW_GATE_SHIFT_QUANTILE = 0.9


def choose_view_gates(p_views: np.ndarray, p_all: np.ndarray, threshold: float, *,
                      safety: float = VIEW_GATE_SAFETY, shift_quantile: float = VIEW_GATE_SHIFT_QUANTILE) -> ViewGate:
    """The gate margins from validation scores: ``p_views`` (N, views) as the model scores each view
    (in the precision it will serve with), ``p_all`` the exact all-view means. At each stage k of
    :data:`VIEW_GATE_STAGES` the margin is the smallest that holds every image whose decision the
    mean of k views gets wrong, or the ``shift_quantile`` of ``|p_all - mean of k|`` if larger, times
    ``safety``: an image can only change its decision if it lies closer to the threshold than the
    remaining views move it."""
    p_views, p_all = np.asarray(p_views, dtype=np.float64), np.asarray(p_all, dtype=np.float64)
    if p_views.ndim != 2 or p_views.shape[:1] != p_all.shape:
        raise ValueError(f"p_views must be (N, views) with N = len(p_all): {p_views.shape} vs {p_all.shape}")
    if not safety >= 1:
        raise ValueError(f"safety must be at least 1, got {safety}")
    views = p_views.shape[1]
    exact = p_all >= threshold
    margins = {}
    for seen in (k for k in VIEW_GATE_STAGES if k < views):
        running = p_views[:, :seen].mean(axis=1)
        wrong = (running >= threshold) != exact
        needed = float(np.nextafter(np.abs(running - threshold)[wrong].max(), np.inf)) if wrong.any() else 0.0
        shift = float(np.quantile(np.abs(p_all - running), shift_quantile)) if len(p_all) else 0.0
        margins[seen] = safety * max(needed, shift)
    gated, seen = staged_mean_from_view_scores(p_views, threshold, margins)
    return ViewGate(margins=margins, flips_one_view=int(((p_views[:, 0] >= threshold) != exact).sum()),
                    flips_gated=int(((gated >= threshold) != exact).sum()),
                    views_per_image=float(seen.mean()) if len(seen) else 0.0,
                    fraction_all_views=float((seen == views).mean()) if len(seen) else 0.0)


def margins_from_config(config: Mapping) -> dict[int, float] | None:
    """A registered model's gate margins (JSON keys are strings); a model registered with the single
    one-view margin (``view_gate_margin``) gets that at stage 1; None: no gate (every view, always)."""
    if config.get("view_gate_margins") is not None:
        return {int(seen): float(margin) for seen, margin in config["view_gate_margins"].items()}
    if config.get("view_gate_margin") is not None:
        return {1: float(config["view_gate_margin"])}
    return None
