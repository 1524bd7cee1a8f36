"""How the registered model scores fast, chosen on validation: which network (TensorFlow float32,
TensorFlow's bfloat16 twin, or an OpenVINO bfloat16 compilation) and, with test-time views, the
gates that stop each image's views once its decision is settled. The ``frozen``/``finetune``
entry points call it; a one-view model with its own scorer (features, then a classifier) works too,
but ``svm`` does not use it yet: its extra passes cost 1.5-3 min a run (benchmarks/RESULTS.md, run 7)."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from mlproject.models.openvino_network import openvino_available
from mlproject.models.views import choose_view_gates, mean_over_views, staged_mean_over_views, view_scores
from mlproject.registry.pyfunc import fast_network, native_bfloat16
from mlproject.training.batches import predict_in_batches

log = logging.getLogger("alloop")

#: The share of validation decisions fast scoring may change against exact scoring (every view, float32).
FAST_SCORING_FLIP_TOLERANCE = 0.005

#: ``score(network, images_uint8) -> P(defect)``: one view of each image through ``network``.
Scorer = Callable[[object, np.ndarray], np.ndarray]


def head_scorer(desc: str = "val") -> Scorer:
    """A ``frozen``/``finetune`` network's own output."""
    def score(network, images_uint8):
        return predict_in_batches(network, images_uint8, desc=desc)[:, 0]
    return score


def fast_scoring_candidates(*, bfloat16: bool, openvino: bool) -> list[dict]:
    """The fast networks worth trying, fastest first (float32 TensorFlow, the fallback, is not listed):
    OpenVINO in bfloat16 (about 9x TensorFlow float32 per VGG16 pass at 512 px with AMX), then
    TensorFlow's bfloat16 twin (about 3x)."""
    if not bfloat16:
        return []
    engines = ("openvino", "tensorflow") if openvino else ("tensorflow",)
    return [{"scoring_engine": engine, "scoring_precision": "bfloat16"} for engine in engines]


def choose_fast_scoring(keras_model, images_uint8: np.ndarray, p_views: np.ndarray, threshold: float, *,
                        score: Scorer | None = None, bfloat16: bool | None = None,
                        openvino: bool | None = None) -> tuple[dict, dict]:
    """``(model_config_dict keys, metrics)`` for the registered model, from validation images.

    ``p_views`` (N, views) holds the exact (float32) score of each view of ``images_uint8``
    (:func:`~mlproject.models.views.view_scores`; one column with one view); ``score`` how a
    network's one-view scores are read (default: a head network's output). Each candidate network
    (:func:`fast_scoring_candidates`; bfloat16 where the CPU has it natively and OpenVINO where it is
    installed, unless ``bfloat16`` / ``openvino`` say otherwise) gets its own gates
    (:func:`~mlproject.models.views.choose_view_gates`, on its own per-view scores); the first whose
    whole fast path changes at most :data:`FAST_SCORING_FLIP_TOLERANCE` of the validation decisions
    is kept, else float32 TensorFlow. With one view there is no gate: the keys name the network only."""
    score = score or head_scorer()
    p_views = np.asarray(p_views, dtype=np.float64)
    views = p_views.shape[1]
    p_all = p_views.mean(axis=1)
    exact_decisions = p_all >= threshold
    gate = choose_view_gates(p_views, p_all, threshold)
    chosen, settings, flips = gate, {"scoring_engine": "tensorflow", "scoring_precision": "float32"}, gate.flips_gated
    metrics = {}
    candidates = fast_scoring_candidates(bfloat16=native_bfloat16() if bfloat16 is None else bfloat16,
                                         openvino=openvino_available() if openvino is None else openvino)
    for candidate in candidates:
        network = fast_network(keras_model, candidate)
        name = f"{candidate['scoring_engine']}_{candidate['scoring_precision']}"
        # Every view of every validation image (passes in the fast network): each stage's gate is
        # measured on them, and what the staged path would do follows without another pass.
        p_views_fast = view_scores(lambda images: np.asarray(score(network, images), dtype=np.float64),
                                   images_uint8, views)
        gate_fast = choose_view_gates(p_views_fast, p_all, threshold)
        flips_fast = gate_fast.flips_gated if views > 1 else int(((p_views_fast[:, 0] >= threshold) != exact_decisions).sum())
        metrics.update({f"{name}_scoring_val_flips": flips_fast,
                        f"{name}_scoring_val_max_abs_diff": float(np.max(np.abs(p_views_fast - p_views), initial=0))})
        if flips_fast <= FAST_SCORING_FLIP_TOLERANCE * len(p_all):
            chosen, settings, flips = gate_fast, candidate, flips_fast
            break
    metrics.update({"fast_scoring_val_flips": flips,
                    "fast_scoring_bfloat16": float(settings["scoring_precision"] == "bfloat16"),
                    "fast_scoring_openvino": float(settings["scoring_engine"] == "openvino")})
    if views == 1:
        log.info("fast scoring: %s %s; %d validation decisions differ from float32 TensorFlow",
                 settings["scoring_engine"], settings["scoring_precision"], flips)
        return settings, metrics
    metrics.update({**{f"view_gate_margin_{seen}": margin for seen, margin in chosen.margins.items()},
                    "view_gate_val_views_per_image": chosen.views_per_image,
                    "view_gate_val_fraction_all_views": chosen.fraction_all_views,
                    "view_gate_val_one_view_flips": chosen.flips_one_view})
    log.info("fast scoring: %s %s, %.2f of %d views per validation image (all of them for %.0f%%; margins %s); "
             "%d validation decisions differ from exact scoring", settings["scoring_engine"],
             settings["scoring_precision"], chosen.views_per_image, views, 100 * chosen.fraction_all_views,
             ", ".join(f"{margin:.3f} after {seen}" for seen, margin in chosen.margins.items()), flips)
    return {"view_gate_margins": chosen.margins, **settings}, metrics


def fast_scores(keras_model, images_uint8: np.ndarray, threshold: float, views: int, *,
                view_gate_margins: dict | None = None, score: Scorer | None = None,
                **network_settings) -> np.ndarray:
    """P(defect) as the registered model with these fast-scoring settings gives it."""
    network = fast_network(keras_model, network_settings)
    score = score or head_scorer("test (fast)")

    def one_view(images):
        return np.asarray(score(network, images), dtype=np.float64)

    if views == 1:
        return one_view(images_uint8)
    if view_gate_margins is None:
        return mean_over_views(one_view, images_uint8, views)
    return staged_mean_over_views(one_view, images_uint8, views, threshold=threshold, margins=view_gate_margins)[0]
