"""The registered pyfunc predicts what the in-process model predicts, from raw image bytes."""

import argparse
import base64
import io

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from integrations import mlflow_registry
from mlproject.data.images import read_bytes
from mlproject.models.variants import build_feature_extractor, build_head_classifier
from mlproject.registry.pyfunc import DefectClassifierModel, model_config_dict
from mlproject.training import common
from mlproject.models.views import dihedral_view, mean_over_views
from mlproject.training.batches import predict_in_batches
from mlproject.training.head_training import HeadTrainingConfig, train_head_classifier
from mlproject.training.svm_training import fit_svm

pytestmark = pytest.mark.integration
SIZE = 32


def training_args(data, name):
    parser = argparse.ArgumentParser()
    common.add_training_arguments(parser)
    return parser.parse_args(["--data", str(data), "--weights", "none", "--image-size", str(SIZE),
                              "--registered-model-name", name])


def register_in_process(tmp_path, python_artifacts, prepared, args, variant, test_time_views=1):
    config = model_config_dict(variant=variant, image_size=SIZE, class_names=prepared.class_names,
                               threshold=0.5, weights="none", model_version="", test_time_views=test_time_views)
    with mlflow.start_run():
        ref = common.register_model(DefectClassifierModel(), python_artifacts, config, prepared, common.RegistrationSettings.from_args(args), variant)
    mlflow_registry.set_alias(ref, mlflow_registry.CHAMPION)
    return ref


def test_finetune_model_from_registry_matches_in_process(tmp_path, tracking_uri, synthetic_data):
    args = training_args(synthetic_data, "equivalence-finetune")
    prepared = common.prepare_data(common.DataSettings.from_args(args))
    classifier = build_head_classifier("none", SIZE, trainable_blocks=1, dense_units=8)
    train_head_classifier(classifier, prepared.x["train"], prepared.y["train"], prepared.x["val"], prepared.y["val"],
                          HeadTrainingConfig(warmup_epochs=1, finetune_epochs=1))
    expected = predict_in_batches(classifier.full, prepared.x["test"], progress=False)[:, 0]
    keras_path = tmp_path / "classifier.keras"
    classifier.full.save(keras_path)
    ref = register_in_process(tmp_path, {"keras_model": str(keras_path)}, prepared, args, "finetune")

    raw = [read_bytes(r) for r in prepared.kept["test"]]
    plain = mlflow.pyfunc.load_model("models:/equivalence-finetune@champion")
    out = plain.predict(pd.DataFrame({"image": raw}))
    np.testing.assert_allclose(out["p_defect"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert set(out["label"]) <= {"ok", "defect"} and (out["error"] == "").all()
    assert out["model_version"].iloc[0].startswith("run:")

    named = mlflow_registry.load_pyfunc(mlflow_registry.require("equivalence-finetune", "champion"))
    assert (named.predict(pd.DataFrame({"image": raw[:2]}))["model_version"] == str(ref)).all()
    assert str(ref) == "equivalence-finetune/1"

    # base64 strings (what REST clients send) give the same answer as bytes
    encoded = [base64.b64encode(b).decode() for b in raw[:3]]
    np.testing.assert_allclose(plain.predict(pd.DataFrame({"image": encoded}))["p_defect"], expected[:3], rtol=1e-5)


def test_svm_model_from_registry_matches_in_process_and_isolates_a_broken_image(tmp_path, tracking_uri, synthetic_data):
    args = training_args(synthetic_data, "equivalence-svm")
    prepared = common.prepare_data(common.DataSettings.from_args(args))
    extractor = build_feature_extractor("none", SIZE, pooling="avgmax")
    features = {s: predict_in_batches(extractor, prepared.x[s], progress=False) for s in ("train", "test")}
    pipeline = fit_svm(features["train"], prepared.y["train"])
    expected = pipeline.predict_proba(features["test"])[:, 1]
    import joblib

    extractor.save(tmp_path / "fx.keras")
    joblib.dump(pipeline, tmp_path / "svm.joblib")
    register_in_process(tmp_path, {"keras_model": str(tmp_path / "fx.keras"),
                                   "sklearn_model": str(tmp_path / "svm.joblib")}, prepared, args, "svm")

    raw = [read_bytes(r) for r in prepared.kept["test"]]
    broken = raw[:2] + [b"this is not a png"] + raw[2:]
    out = mlflow.pyfunc.load_model("models:/equivalence-svm@champion").predict(pd.DataFrame({"image": broken}))
    assert len(out) == len(broken)
    assert np.isnan(out["p_defect"].iloc[2]) and out["label"].iloc[2] == ""
    assert "row 2" in out["error"].iloc[2] and "not an image" in out["error"].iloc[2]
    good = out.drop(index=2)
    np.testing.assert_allclose(good["p_defect"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (good["error"] == "").all()


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_model_with_test_time_views_scores_the_mean_over_views_and_every_turn_alike(tmp_path, tracking_uri,
                                                                                      synthetic_data):
    # Untrained (random weights): this is about how the registered model scores, not what it learned.
    args = training_args(synthetic_data, "equivalence-views")
    prepared = common.prepare_data(common.DataSettings.from_args(args))
    classifier = build_head_classifier("none", SIZE, trainable_blocks=1, dense_units=8)
    keras_path = tmp_path / "classifier.keras"
    classifier.full.save(keras_path)
    register_in_process(tmp_path, {"keras_model": str(keras_path)}, prepared, args, "finetune", test_time_views=8)
    model = mlflow.pyfunc.load_model("models:/equivalence-views@champion")

    images = prepared.x["test"][:6]  # already SIZE x SIZE: PNG round trips them exactly
    one_view = predict_in_batches(classifier.full, images, progress=False)[:, 0]
    expected = mean_over_views(lambda b: predict_in_batches(classifier.full, b, progress=False)[:, 0], images, 8)
    out = model.predict(pd.DataFrame({"image": [png_bytes(i) for i in images]}))
    np.testing.assert_allclose(out["p_defect"].to_numpy(), expected, rtol=1e-5, atol=1e-7)
    assert np.abs(expected - one_view).max() > 1e-5  # the views do change the score of this model

    turned = dihedral_view(images, 1)  # a quarter turn: scored as the image itself
    assert np.abs(predict_in_batches(classifier.full, turned, progress=False)[:, 0] - one_view).max() > 1e-5
    out_turned = model.predict(pd.DataFrame({"image": [png_bytes(i) for i in turned]}))
    np.testing.assert_allclose(out_turned["p_defect"].to_numpy(), expected, rtol=1e-5, atol=1e-7)

    p_defect, embeddings, good, errors = model.unwrap_python_model().score_and_embed([png_bytes(i) for i in images])
    np.testing.assert_allclose(p_defect, expected, rtol=1e-5, atol=1e-7)
    assert embeddings.shape[0] == len(images) and good == list(range(len(images))) and not errors


def test_errors_name_each_image_by_the_optional_source_column(tiny_champion):
    tiny_champion(name="named-sources")
    model = mlflow.pyfunc.load_model("models:/named-sources@champion")  # through MLflow's schema enforcement
    columns = [(spec.name, spec.required) for spec in model.metadata.get_input_schema().inputs]
    assert columns == [("image", True), ("source", False)]

    good = png_bytes(np.full((SIZE, SIZE, 3), 90, np.uint8))
    out = model.predict(pd.DataFrame({"image": [good, b"junk", b"junk"], "source": ["task 7", "task 8", None]}))
    assert out["error"].iloc[0] == "" and not np.isnan(out["p_defect"].iloc[0])
    assert out["error"].iloc[1].startswith("cannot decode image 'task 8': not an image")
    assert out["error"].iloc[2].startswith("cannot decode image 'row 2'")  # no name given: the row
    assert not any("skip" in message for message in out["error"])  # no training flag advised in serving

    images_only = model.predict(pd.DataFrame({"image": [b"junk"]}))  # callers without the column still work
    assert images_only["error"].iloc[0].startswith("cannot decode image 'row 0'")


def test_evaluation_names_every_unscorable_image_and_the_project_parameter_to_skip_them(tiny_champion,
                                                                                          synthetic_data, tmp_path):
    from mlproject.data.images import BadImagesError
    from mlproject.data.loaders import load_dataset
    from mlproject.data.records import OK, LabeledImage
    from mlproject.entrypoints._evaluation import evaluate_version

    ref = tiny_champion(name="evaluate-bad")
    broken = [tmp_path / "broken-a.png", tmp_path / "broken-b.png"]
    for path in broken:
        path.write_bytes(b"not a png")
    records = load_dataset(str(synthetic_data))[:4] + [LabeledImage(str(p), OK) for p in broken]
    with pytest.raises(BadImagesError) as raised:
        evaluate_version(ref, records, ("ok", "defect"), skip_bad=False, prefix="all_", artifact_path="evaluation")
    assert [b.path for b in raised.value.bad_files] == [str(p) for p in broken]
    message = str(raised.value)
    assert message.startswith("2 images cannot be read:") and all(str(p) in message for p in broken)
    assert "-P skip_bad_images=true" in message
