"""Integration fixtures: a real MLflow tracking store (SQLite) per test, synthetic data per session."""

import os
from pathlib import Path

import pytest

from mlproject.data.synthetic import generate_synthetic_dagm

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
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def project_env() -> dict:
    """Environment for `mlflow run --env-manager local`: it runs the `python` found on PATH."""
    import sys

    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "2"}
