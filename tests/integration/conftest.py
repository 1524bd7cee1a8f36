"""Integration fixtures: a real MLflow tracking store (SQLite; a PostgreSQL database of the session's cluster
when ALLOOP_DB=postgres) per test, synthetic data and one real Label Studio server per session, tiny real
champions."""

from pathlib import Path

import pytest

from integrations import postgres
from mlproject.data.synthetic import generate_synthetic_dagm
from tests.support.labelstudio import SharedServer
from tests.support.postgres import SharedCluster
from tests.support.models import register_tiny


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small SYNTHETIC DAGM-layout dataset (generated, not real images)."""
    return generate_synthetic_dagm(tmp_path_factory.mktemp("synthetic"), n_images=80, size=64, seed=1)


@pytest.fixture(scope="session")
def postgres_cluster():
    """With ALLOOP_DB=postgres, the session's PostgreSQL cluster (tests/support/postgres.py); else None."""
    if not postgres.selected():
        yield None
        return
    settings = SharedCluster.acquire()
    try:
        yield settings
    finally:
        SharedCluster.release()


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, postgres_cluster) -> str:
    """A fresh SQLite tracking store and registry for one test (with ALLOOP_DB=postgres a fresh database on
    the session's cluster, dropped after it); the working dir is the test's tmp dir."""
    import mlflow

    database = SharedCluster.mlflow_database(tmp_path / "mlruns") if postgres_cluster else None
    uri = postgres.mlflow_backend_uri(postgres_cluster, database) if database else f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # an id from another test's store means nothing here
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    if database:
        SharedCluster.drop(database)


@pytest.fixture
def tiny_champion(tracking_uri, synthetic_data, tmp_path):
    """``tiny_champion(name=..., threshold=...)``: a new tiny champion in this test's tracking store."""
    store = tmp_path  # where the store's files go (beside mlflow.db, the test's working dir)

    def register(name: str = "alloop-defect-classifier", *, threshold: float = 0.5, log_data: bool = False):
        return register_tiny(store, synthetic_data, name, threshold=threshold, log_data=log_data)

    return register


@pytest.fixture(scope="session")
def labelstudio():
    """One real Label Studio server for the whole test session (see tests/support/labelstudio.py)."""
    settings = SharedServer.acquire()
    try:
        yield settings
    finally:
        SharedServer.release()
