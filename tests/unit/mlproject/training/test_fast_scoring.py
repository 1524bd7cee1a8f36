"""Fast scoring of a one-view model (the ``svm`` variant: features, then a classifier) is chosen on
validation like the views' gate: the fastest network whose decisions stay within the tolerance."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlproject.models.variants import build_feature_extractor
from mlproject.training.batches import predict_in_batches
from mlproject.training.fast_scoring import (
    FAST_SCORING_FLIP_TOLERANCE,
    choose_fast_scoring,
    fast_scores,
    fast_scoring_candidates,
)

SIZE = 32


@pytest.fixture(scope="module")
def svm_like():
    import keras

    keras.utils.set_random_seed(1)
    extractor = build_feature_extractor("none", SIZE, feature_layers=("block3_pool", "block5_pool"), pooling="stats")
    rng = np.random.default_rng(0)
    images = rng.integers(40, 220, size=(80, SIZE, SIZE, 3), dtype=np.uint8)
    images[:40, 8:20, 8:20] = 255  # a bright patch: the "defect"
    labels = np.r_[np.ones(40, int), np.zeros(40, int)]
    features = predict_in_batches(extractor, images, progress=False)
    classifier = LogisticRegression(C=0.01, max_iter=2000).fit(features[::2], labels[::2])

    def score(network, batch):
        return classifier.predict_proba(predict_in_batches(network, batch, progress=False))[:, 1]

    val = images[1::2]
    p_val = score(extractor, val)
    return {"extractor": extractor, "score": score, "val": val, "p_val": p_val, "threshold": float(np.median(p_val))}


def test_candidates_go_fastest_first_and_none_without_native_bfloat16():
    assert [c["scoring_engine"] for c in fast_scoring_candidates(bfloat16=True, openvino=True)] == ["openvino", "tensorflow"]
    assert [c["scoring_engine"] for c in fast_scoring_candidates(bfloat16=True, openvino=False)] == ["tensorflow"]
    assert fast_scoring_candidates(bfloat16=False, openvino=True) == []


@pytest.mark.parametrize("openvino", [False, True])
def test_a_one_view_model_gets_a_network_and_no_gate(svm_like, openvino):
    s = svm_like
    fast, metrics = choose_fast_scoring(s["extractor"], s["val"], s["p_val"][:, None], s["threshold"],
                                        score=s["score"], bfloat16=True, openvino=openvino)
    assert not any(key.startswith("view_gate") for key in [*fast, *metrics])
    first = "openvino_bfloat16" if openvino else "tensorflow_bfloat16"
    assert f"{first}_scoring_val_flips" in metrics  # the fastest candidate was scored on validation
    assert metrics["fast_scoring_val_flips"] <= FAST_SCORING_FLIP_TOLERANCE * len(s["val"])
    p_fast = fast_scores(s["extractor"], s["val"], s["threshold"], 1, score=s["score"], **fast)
    flips = int(((p_fast >= s["threshold"]) != (s["p_val"] >= s["threshold"])).sum())
    assert flips == metrics["fast_scoring_val_flips"]
    if fast["scoring_precision"] == "float32":  # the fallback is the exact network
        np.testing.assert_allclose(p_fast, s["p_val"], rtol=1e-6)


def test_without_native_bfloat16_the_model_scores_in_float32_tensorflow(svm_like):
    s = svm_like
    fast, metrics = choose_fast_scoring(s["extractor"], s["val"], s["p_val"][:, None], s["threshold"],
                                        score=s["score"], bfloat16=False, openvino=True)
    assert fast == {"scoring_engine": "tensorflow", "scoring_precision": "float32"}
    assert metrics["fast_scoring_val_flips"] == 0 and not any(k.endswith("_scoring_val_flips") and k != "fast_scoring_val_flips"
                                                               for k in metrics)
