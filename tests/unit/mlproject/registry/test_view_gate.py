"""Fast scoring (the test-time views one at a time, each image stopping once its decision is settled;
optionally bfloat16, in TensorFlow or OpenVINO) gives the decisions exact scoring (every view,
float32) gives, and models without its keys score exactly."""

import io
import json

import numpy as np
import pytest
from mlflow.pyfunc import PythonModelContext
from PIL import Image

from mlproject.data.decode import vgg_preprocess
from mlproject.models import openvino_network
from mlproject.models.openvino_network import OpenVinoNetwork
from mlproject.models.variants import build_head_classifier, head_scores_and_embeddings
from mlproject.models.views import (
    DIHEDRAL_VIEWS,
    choose_view_gates,
    dihedral_view,
    margins_from_config,
    mean_over_views,
    staged_mean_from_view_scores,
    staged_mean_over_views,
    view_scores,
)
from mlproject.registry.pyfunc import (
    CONFIG_ARTIFACT,
    KERAS_ARTIFACT,
    DefectClassifierModel,
    bfloat16_twin,
    model_config_dict,
    native_bfloat16,
)
from mlproject.training.batches import predict_in_batches
from mlproject.training.head_training import HeadTrainingConfig, train_head_classifier
from mlproject.training.fast_scoring import FAST_SCORING_FLIP_TOLERANCE, choose_fast_scoring

SIZE = 32


# ---- the gates on plain numbers -----------------------------------------------------------------

def views_with_first(first, rest):
    """(N, 8) per-view scores: view 0 as given, the other 7 all ``rest``."""
    return np.column_stack([first] + [rest] * (DIHEDRAL_VIEWS - 1))


def test_stage_margins_hold_every_validation_image_whose_running_mean_gets_the_decision_wrong():
    threshold = 0.5
    first = np.array([0.10, 0.45, 0.52, 0.58, 0.90, 0.30])
    rest = np.array([0.12, 0.565, 0.463, 0.57, 0.88, 0.31])  # 0.45 and 0.52 change sides in the mean
    p_views = views_with_first(first, rest)
    p_all = p_views.mean(axis=1)
    gate = choose_view_gates(p_views, p_all, threshold, safety=1.0, shift_quantile=0.0)
    assert set(gate.margins) == {1, 2, 4}
    assert gate.flips_one_view == 2 and gate.flips_gated == 0
    farther = abs(0.45 - threshold)
    assert farther < gate.margins[1] < farther + 1e-9  # just wide enough for the farther of the two
    wider = choose_view_gates(p_views, p_all, threshold, safety=2.0, shift_quantile=0.0)
    assert wider.margins[1] == pytest.approx(2 * gate.margins[1])
    assert 1 < gate.views_per_image < DIHEDRAL_VIEWS  # the two near the threshold take a second view


def test_a_margin_without_flips_on_validation_still_covers_how_far_the_other_views_move_scores():
    first = np.array([0.1, 0.2, 0.8, 0.9])
    p_views = views_with_first(first, np.array([0.1457, 0.2, 0.8, 0.8543]))
    p_all = p_views.mean(axis=1)  # no decision changes, but the scores move up to 0.04
    gate = choose_view_gates(p_views, p_all, 0.5, safety=2.0, shift_quantile=1.0)
    assert gate.flips_one_view == 0 and gate.margins[1] == pytest.approx(2 * np.abs(p_all - first).max())
    with pytest.raises(ValueError, match="safety"):
        choose_view_gates(p_views, p_all, 0.5, safety=0.5)
    with pytest.raises(ValueError, match="p_views"):
        choose_view_gates(p_views, p_all[:3], 0.5)


def test_without_margins_the_views_stop_only_where_the_rest_cannot_change_the_decision():
    rng = np.random.default_rng(0)
    # most images sure of themselves in every view, some undecided: scores clustered near 0 and 1
    p_views = np.clip(rng.beta(0.3, 0.3, size=(400, 1)) + rng.normal(0, 0.1, size=(400, DIHEDRAL_VIEWS)), 0, 1)
    for threshold in (0.1, 0.46, 0.9):
        p_all = p_views.mean(axis=1)
        p_staged, seen = staged_mean_from_view_scores(p_views, threshold, {})
        np.testing.assert_array_equal(p_staged >= threshold, p_all >= threshold)  # never a flip
        assert seen.min() < DIHEDRAL_VIEWS  # ... and some images stop early
        full = seen == DIHEDRAL_VIEWS
        np.testing.assert_allclose(p_staged[full], p_all[full], atol=1e-12)
        for i in np.flatnonzero(~full)[:20]:  # an image stopped after k views has the mean of those k
            assert p_staged[i] == pytest.approx(p_views[i, : seen[i]].mean())


def test_staged_scoring_passes_only_the_unsettled_rows_on_and_matches_known_view_scores():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 4, 4, 1), dtype=np.uint8)
    calls = []

    def predict(batch):  # a score that depends on the view: the mean of the top-left quarter
        calls.append(len(batch))
        return batch[:, :2, :2, 0].reshape(len(batch), -1).mean(axis=1) / 255.0

    p_views = view_scores(predict, images, DIHEDRAL_VIEWS)
    threshold = float(np.median(p_views.mean(axis=1)))
    margins = {1: 0.2, 2: 0.1, 4: 0.05}
    calls.clear()
    p_fast, seen = staged_mean_over_views(predict, images, DIHEDRAL_VIEWS, threshold=threshold, margins=margins)
    expected, expected_seen = staged_mean_from_view_scores(p_views, threshold, margins)
    np.testing.assert_allclose(p_fast, expected, atol=1e-12)
    np.testing.assert_array_equal(seen, expected_seen)
    assert calls == [int((seen > view).sum()) for view in range(len(calls))]  # each pass: the rows still open
    assert 1 < seen.mean() < DIHEDRAL_VIEWS
    assert sum(calls) == seen.sum()


def test_margins_travel_in_the_model_config_and_older_models_keep_their_one_view_margin():
    assert margins_from_config({"view_gate_margins": {"1": 0.5, "2": 0.25, "4": 0.1}}) == {1: 0.5, 2: 0.25, 4: 0.1}
    assert margins_from_config({"view_gate_margin": 0.3}) == {1: 0.3}
    assert margins_from_config({}) is None
    config = model_config_dict(variant="finetune", image_size=SIZE, class_names=["ok", "defect"], threshold=0.5,
                               weights="none", model_version="", test_time_views=DIHEDRAL_VIEWS,
                               view_gate_margins={1: 0.5, 2: 0.25})
    assert margins_from_config(json.loads(json.dumps(config))) == {1: 0.5, 2: 0.25}


# ---- the registered model on a tiny real network ------------------------------------------------

def textures(n: int, seed: int) -> np.ndarray:
    """Noisy textures with a patch near the centre whose brightness (the defect's strength) varies."""
    rng = np.random.default_rng(seed)
    x = rng.integers(60, 200, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    x[:, 9:21, 10:22] = rng.uniform(0, 255, n).astype(np.uint8)[:, None, None, None]
    return x


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-weights finetune network, its validation scores and a threshold amid them."""
    import keras

    keras.utils.set_random_seed(3)
    classifier = build_head_classifier("none", SIZE, trainable_blocks=1, dense_units=8, dropout=0.0)
    # A few epochs on bright-patch labels spread the scores from 0 to 1; without augmentation the
    # network is not view-invariant, so the views still change some decisions.
    train = textures(64, seed=0)
    labels = (train[:, 15, 15, 0] > 128).astype(int)
    train_head_classifier(classifier, train, labels, train[:16], labels[:16],
                          HeadTrainingConfig(warmup_epochs=3, finetune_epochs=0, warmup_patience=30))
    folder = tmp_path_factory.mktemp("tiny")
    keras_path = folder / "classifier.keras"
    classifier.full.save(keras_path)
    val = textures(96, seed=1)
    p_views = view_scores(lambda b: predict_in_batches(classifier.full, b, progress=False)[:, 0], val,
                          DIHEDRAL_VIEWS)
    p_all = p_views.mean(axis=1)
    threshold = float(np.median(p_all))  # half of the validation images on each side
    return {"full": classifier.full, "keras_path": keras_path, "folder": folder, "val": val, "p_views": p_views,
            "p_all": p_all, "threshold": threshold}


def load(tiny, name: str, *, exact_at_load: bool = False, **fast) -> DefectClassifierModel:
    config = model_config_dict(variant="finetune", image_size=SIZE, class_names=["ok", "defect"],
                               threshold=tiny["threshold"], weights="none", model_version="",
                               test_time_views=DIHEDRAL_VIEWS, **fast)
    config_path = tiny["folder"] / f"{name}.json"
    config_path.write_text(json.dumps(config))
    model = DefectClassifierModel()
    model.load_context(PythonModelContext({CONFIG_ARTIFACT: str(config_path), KERAS_ARTIFACT: str(tiny["keras_path"])},
                                          {"exact": True} if exact_at_load else None))
    return model


def test_fast_scoring_gives_exact_decisions_on_a_tiny_model(tiny):
    gate = choose_view_gates(tiny["p_views"], tiny["p_all"], tiny["threshold"])
    assert gate.flips_one_view > 0  # one view alone would change validation decisions of this model
    assert gate.views_per_image < DIHEDRAL_VIEWS  # ... and the gates spare some of the other views
    fast = load(tiny, "fast", view_gate_margins=gate.margins)
    exact_model = load(tiny, "exact")  # registered before the gate existed: every view, always
    assert exact_model.view_gate_margins is None

    images = textures(64, seed=2)  # unseen images
    frame = {"image": [png(i) for i in images]}
    p_views = view_scores(lambda b: predict_in_batches(tiny["full"], b, progress=False)[:, 0], images, DIHEDRAL_VIEWS)
    expected = p_views.mean(axis=1)
    out_exact = exact_model.predict(None, frame)
    np.testing.assert_allclose(out_exact["p_defect"], expected, rtol=1e-5, atol=1e-7)
    out_fast = fast.predict(None, frame)
    flips = int((out_fast["label"] != out_exact["label"]).sum())
    assert flips <= FAST_SCORING_FLIP_TOLERANCE * len(images)
    # each image stopped where the staged rule says, with the mean of the views it got
    staged, seen = staged_mean_from_view_scores(p_views, tiny["threshold"], gate.margins)
    np.testing.assert_allclose(out_fast["p_defect"], staged, rtol=1e-5, atol=1e-6)
    assert seen.min() < DIHEDRAL_VIEWS and (seen > 1).any()

    # the exact switch: a predict param, or model_config at load; the same scores as the old model
    np.testing.assert_allclose(fast.predict(None, frame, params={"exact": True})["p_defect"], expected,
                               rtol=1e-5, atol=1e-7)
    loaded_exact = load(tiny, "fast-loaded-exact", exact_at_load=True, view_gate_margins=gate.margins)
    np.testing.assert_allclose(loaded_exact.predict(None, frame, params={"exact": False})["p_defect"], expected,
                               rtol=1e-5, atol=1e-7)

    # score_and_embed (the backend, sync) gives predict's P(defect), fast and exact
    p_defect, embeddings, good, errors = fast.score_and_embed(frame["image"])
    np.testing.assert_allclose(p_defect, out_fast["p_defect"], rtol=1e-5, atol=1e-7)
    assert good == list(range(len(images))) and not errors and embeddings.shape[0] == len(images)
    np.testing.assert_allclose(fast.score_and_embed(frame["image"], exact=True)[0], expected, rtol=1e-5, atol=1e-7)


def test_bfloat16_scoring_runs_a_bfloat16_twin_where_the_cpu_has_it_and_stays_close(tiny):
    twin = bfloat16_twin(tiny["full"])
    conv = twin.get_layer("vgg16_features").get_layer("vgg16_fixed").get_layer("block1_conv1")
    assert conv.dtype_policy.name == "mixed_bfloat16" and conv.kernel.dtype == "float32"
    assert twin.get_layer("head").get_layer("p_defect").dtype_policy.name == "float32"
    images = textures(16, seed=4)
    p32 = predict_in_batches(tiny["full"], images, progress=False)[:, 0]
    p16 = predict_in_batches(twin, images, progress=False)[:, 0]
    assert 0 < np.abs(p16 - p32).max() < 0.05  # bfloat16 arithmetic, close to float32

    model = load(tiny, "bf16", view_gate_margins={1: 0.0}, scoring_precision="bfloat16")
    assert (model.fast_keras_model is not model.keras_model) == native_bfloat16()
    frame = {"image": [png(i) for i in images]}
    np.testing.assert_allclose(model.predict(None, frame)["p_defect"],
                               p16 if native_bfloat16() else p32, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(None, frame, params={"exact": True})["p_defect"],
                               mean_over_views(lambda b: predict_in_batches(tiny["full"], b, progress=False)[:, 0],
                                               images, DIHEDRAL_VIEWS), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="scoring_precision"):
        model_config_dict(variant="finetune", image_size=SIZE, class_names=["ok", "defect"], threshold=0.5,
                          weights="none", model_version="", scoring_precision="float16")


@pytest.mark.parametrize(("bfloat16", "openvino"), [(False, False), (True, False), (True, True)])
def test_fast_scoring_chosen_on_validation_keeps_validation_decisions(tiny, bfloat16, openvino):
    fast, metrics = choose_fast_scoring(tiny["full"], tiny["val"], tiny["p_views"], tiny["threshold"],
                                        bfloat16=bfloat16, openvino=openvino)
    assert metrics["view_gate_val_one_view_flips"] > 0 and fast["view_gate_margins"][1] > 0
    assert metrics["view_gate_val_views_per_image"] < DIHEDRAL_VIEWS
    tolerated = FAST_SCORING_FLIP_TOLERANCE * len(tiny["val"])
    assert metrics["fast_scoring_val_flips"] <= tolerated
    tried = [name for name in ("openvino_bfloat16", "tensorflow_bfloat16") if f"{name}_scoring_val_flips" in metrics]
    if not bfloat16:
        assert fast["scoring_precision"] == "float32" and fast["scoring_engine"] == "tensorflow" and not tried
    else:  # fastest first; each kept only within the tolerance, the next tried only if the one before failed
        assert tried[0] == ("openvino_bfloat16" if openvino else "tensorflow_bfloat16")
        kept = next((name for name in tried if metrics[f"{name}_scoring_val_flips"] <= tolerated), None)
        assert f"{fast['scoring_engine']}_{fast['scoring_precision']}" == (kept or "tensorflow_float32")
        assert tried[-1] == kept or len(tried) == (2 if openvino else 1)
    model = load(tiny, f"chosen-{bfloat16}-{openvino}", **fast)
    out = model.predict(None, {"image": [png(i) for i in tiny["val"]]})
    flips = int(((out["p_defect"].to_numpy() >= tiny["threshold"]) != (tiny["p_all"] >= tiny["threshold"])).sum())
    assert flips <= max(metrics["fast_scoring_val_flips"], FAST_SCORING_FLIP_TOLERANCE * len(tiny["val"]))


def test_an_openvino_model_scores_with_its_compiled_network_and_embeds_from_the_same_pass(tiny):
    model = load(tiny, "openvino", view_gate_margins={1: 0.0}, scoring_precision="float32", scoring_engine="openvino")
    assert isinstance(model.fast_keras_model, OpenVinoNetwork)
    images = textures(12, seed=7)
    frame = {"image": [png(i) for i in images]}
    p32 = predict_in_batches(tiny["full"], images, progress=False)[:, 0]
    out = model.predict(None, frame)
    np.testing.assert_allclose(out["p_defect"], p32, rtol=1e-4, atol=1e-5)  # OpenVINO float32: Keras to rounding
    p_defect, embeddings, good, errors = model.score_and_embed(frame["image"])
    np.testing.assert_allclose(p_defect, out["p_defect"], rtol=1e-5, atol=1e-6)
    _, keras_embeddings = head_scores_and_embeddings(tiny["full"], vgg_preprocess(images))
    np.testing.assert_allclose(embeddings, keras_embeddings, rtol=1e-3, atol=1e-3 * np.abs(keras_embeddings).max())
    assert good == list(range(len(images))) and not errors
    np.testing.assert_allclose(model.predict(None, frame, params={"exact": True})["p_defect"],
                               mean_over_views(lambda b: predict_in_batches(tiny["full"], b, progress=False)[:, 0],
                                               images, DIHEDRAL_VIEWS), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="scoring_engine"):
        model_config_dict(variant="finetune", image_size=SIZE, class_names=["ok", "defect"], threshold=0.5,
                          weights="none", model_version="", scoring_engine="onnx")


def test_an_openvino_model_loaded_without_openvino_scores_in_float32_and_says_so(tiny, monkeypatch, caplog):
    # OpenVINO is installed here; a machine without it is stood in for by making the check say no.
    monkeypatch.setattr(openvino_network, "openvino_available", lambda: False)
    with caplog.at_level("WARNING", logger="alloop"):
        model = load(tiny, "openvino-missing", view_gate_margins={1: 0.0}, scoring_precision="bfloat16",
                     scoring_engine="openvino")
    assert model.fast_keras_model is model.keras_model
    assert "pip install openvino" in caplog.text
    images = textures(4, seed=8)
    np.testing.assert_allclose(model.predict(None, {"image": [png(i) for i in images]})["p_defect"],
                               predict_in_batches(tiny["full"], images, progress=False)[:, 0], rtol=1e-5, atol=1e-7)


def test_a_turned_image_gets_the_decision_of_the_image_as_it_is():
    # Exactness where it matters: the decision does not depend on which way up an image came.
    import keras

    keras.utils.set_random_seed(5)
    network = build_head_classifier("none", SIZE, trainable_blocks=1, dense_units=8).full
    images = textures(4, seed=6)

    def predict(b):
        return predict_in_batches(network, b, progress=False)[:, 0]

    p_all = mean_over_views(predict, images, DIHEDRAL_VIEWS)
    threshold = float(p_all.mean())
    turned = dihedral_view(images, 3)
    wide = {1: 1.0, 2: 1.0, 4: 1.0}  # no stage stops an image: only what the bound settles
    p_fast, seen = staged_mean_over_views(predict, turned, DIHEDRAL_VIEWS, threshold=threshold, margins=wide)
    np.testing.assert_array_equal(p_fast >= threshold, p_all >= threshold)
    full = seen == DIHEDRAL_VIEWS
    assert full.any()
    np.testing.assert_allclose(p_fast[full], p_all[full], rtol=1e-5, atol=1e-7)
