"""Integration fixtures: a real MLflow tracking store (SQLite) per test, synthetic data per session."""

import argparse
import os
import time
from pathlib import Path

import pytest

from mlproject.data.synthetic import generate_synthetic_dagm
from tests.integration.labelstudio_fixture import labelstudio  # noqa: F401  (one real server per session)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small SYNTHETIC DAGM-layout dataset (generated, not real images)."""
    return generate_synthetic_dagm(tmp_path_factory.mktemp("synthetic"), n_images=80, size=64, seed=1)


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store and registry for one test; the working dir is the test's tmp dir."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # an id from another test's store means nothing here
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def project_env() -> dict:
    """Environment for `mlflow run --env-manager local`: it runs the `python` found on PATH."""
    import sys

    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "2"}


def register_tiny(store: Path, data: Path, name: str, *, threshold: float = 0.5):
    """Train a tiny svm model in-process (random weights, 32 px) on ``data``, register it into the current
    tracking store (its files under ``store``) and make it champion."""
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
        ref = common.register_model(DefectClassifierModel(), {"keras_model": str(folder / "fx.keras"),
                                    "sklearn_model": str(folder / "svm.joblib")}, config, prepared, common.RegistrationSettings.from_args(args), "svm")
    mlflow_registry.set_alias(ref, mlflow_registry.CHAMPION)
    return ref


@pytest.fixture
def tiny_champion(tracking_uri, synthetic_data):
    """``tiny_champion(name=..., threshold=...)``: a new tiny champion in this test's tracking store."""
    store = Path(tracking_uri.split("///", 1)[1]).parent

    def register(name: str = "alloop-defect-classifier", *, threshold: float = 0.5):
        return register_tiny(store, synthetic_data, name, threshold=threshold)

    return register
