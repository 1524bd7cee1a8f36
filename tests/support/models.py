"""Tiny real models for integration tests, and the environment `mlflow run --env-manager local` needs."""

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def project_env() -> dict:
    """Environment for `mlflow run --env-manager local`: it runs the `python` found on PATH."""
    import sys

    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "2"}


def register_tiny(store: Path, data: Path, name: str, *, threshold: float = 0.5, log_data: bool = False):
    """Train a tiny svm model in-process (random weights, 32 px) on ``data``, register it into the current
    tracking store (its files under ``store``) and make it champion; ``log_data`` logs the records it
    was trained on, as the entry points do (what a retrain takes as the champion's data)."""
    import joblib
    import mlflow

    from integrations import mlflow_registry
    from mlproject.models.variants import build_feature_extractor
    from mlproject.registry.pyfunc import DefectClassifierModel, model_config_dict
    from mlproject.training import common
    from mlproject.training.batches import predict_in_batches
    from mlproject.training.svm_training import fit_svm

    parser = argparse.ArgumentParser()
    common.add_training_arguments(parser)
    args = parser.parse_args(["--data", str(data), "--weights", "none", "--image-size", "32",
                              "--registered-model-name", name])
    prepared = common.prepare_data(common.DataSettings.from_args(args))
    extractor = build_feature_extractor("none", 32, pooling="avgmax")
    pipeline = fit_svm(predict_in_batches(extractor, prepared.x["train"], progress=False), prepared.y["train"])
    folder = store / f"model-{name}-{time.monotonic_ns()}"
    folder.mkdir()
    extractor.save(folder / "fx.keras")
    joblib.dump(pipeline, folder / "svm.joblib")
    config = model_config_dict(variant="svm", image_size=32, class_names=prepared.class_names,
                               threshold=threshold, weights="none", model_version="")
    with mlflow.start_run():
        if log_data:
            common.log_data(prepared)
        ref = common.register_model(DefectClassifierModel(), {"keras_model": str(folder / "fx.keras"),
                                    "sklearn_model": str(folder / "svm.joblib")}, config, prepared, common.RegistrationSettings.from_args(args), "svm")
    mlflow_registry.set_alias(ref, mlflow_registry.CHAMPION)
    return ref
