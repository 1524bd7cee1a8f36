"""The ML backend as a real server process (uvicorn) over real HTTP, on a real MLflow SQLite registry."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.backend import CONFIG, Backend, backend_process, expected_predictions, mlflow_store, sample_images
from tests.support.models import register_tiny

pytestmark = pytest.mark.integration

MODEL = "backend-test-model"
AUTH = ("ls-user", "backend-pw-7b1")


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("backend")


@pytest.fixture(scope="module")
def store(workdir) -> Iterator[str]:
    with mlflow_store(workdir) as uri:
        yield uri


@pytest.fixture(scope="module")
def docroot(workdir, synthetic_data) -> Path:
    root = workdir / "files"
    (root / "batch").mkdir(parents=True)
    for i, image in enumerate(sample_images(synthetic_data, 3)):
        shutil.copy(image, root / "batch" / f"img{i}.png")
    (root / "batch" / "broken.png").write_bytes(b"this is not a png")
    return root


@pytest.fixture(scope="module")
def champion_v1(store, workdir, synthetic_data):
    return register_tiny(workdir, synthetic_data, MODEL)


@pytest.fixture(scope="module")
def backend(champion_v1, store, workdir, docroot) -> Iterator[Backend]:
    with backend_process(workdir, MODEL, tracking_uri=store, refresh_seconds=1.0,
                         env={"LOCAL_FILES_DOCUMENT_ROOT": str(docroot)}) as server:
        yield server


@pytest.fixture(scope="module")
def empty_backend(tmp_path_factory) -> Iterator[Backend]:
    """A backend whose model has no champion (its own empty store), behind basic auth."""
    directory = tmp_path_factory.mktemp("empty-backend")
    with backend_process(directory, "never-registered", tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
                         auth=AUTH) as server:
        yield server


def local_task(task_id: int, name: str) -> dict:
    return {"id": task_id, "data": {"picture": f"/data/local-files/?d=batch/{name}"}}


# -- tests ------------------------------------------------------------------------------------------


def test_without_a_champion_health_is_up_and_predictions_are_empty(empty_backend):
    health = empty_backend.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "UP" and body["model_class"] == "alloop" and body["champion"] is None
    assert "'never-registered' has no champion" in body["message"] and "-e promote" in body["message"] and "Traceback" not in body["message"]
    assert empty_backend.post("/setup", json={"project": "1.1", "schema": CONFIG}).json() == \
        {"model_version": "no-champion"}
    results = empty_backend.post("/predict", json={"tasks": [local_task(1, "img0.png"), local_task(2, "img1.png")],
                                                   "label_config": CONFIG}).json()["results"]
    assert results == [{"result": [], "score": 0, "model_version": "no-champion"}] * 2
    assert empty_backend.get("/versions").json() == {"versions": [], "champion": None}
    assert empty_backend.post("/webhook", json={"action": "START_TRAINING"}).json() == {"status": "ok"}
    log = empty_backend.log_text()
    assert "2 task(s) get empty results: no champion" in log and "START_TRAINING" in log
    assert "Traceback" not in log


def test_basic_auth_refuses_missing_and_wrong_credentials(empty_backend):
    for path in ("/health", "/versions"):
        assert empty_backend.get(path, auth=None).status_code == 401
        assert empty_backend.get(path, auth=(AUTH[0], "wrong")).status_code == 401
        assert empty_backend.get(path, auth=("someone", AUTH[1])).status_code == 401
    for path in ("/setup", "/predict", "/webhook"):
        assert empty_backend.post(path, json={"tasks": []}, auth=None).status_code == 401
    assert empty_backend.get("/health").status_code == 200
    assert AUTH[1] not in empty_backend.log_text()


def test_health_with_a_champion(backend, champion_v1):
    body = backend.get("/health").json()
    assert body["status"] == "UP" and body["champion"] == f"{MODEL}/1" == str(champion_v1)


def test_predict_a_batch_in_order_with_a_broken_image(backend, docroot):
    from integrations import mlflow_registry

    champion = mlflow_registry.require(MODEL, "champion")
    tasks = [local_task(101, "img0.png"), local_task(102, "img1.png"), local_task(103, "broken.png"),
             local_task(104, "img2.png"), local_task(105, "../../escape.png")]
    assert backend.post("/setup", json={"project": "3.1", "schema": CONFIG}).json() == {"model_version": str(champion)}
    response = backend.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "3.1"})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 5
    assert results[2] == {"result": [], "score": 0, "model_version": str(champion)}
    assert results[4] == {"result": [], "score": 0, "model_version": str(champion)}

    raw = [(docroot / "batch" / f"img{i}.png").read_bytes() for i in range(3)]
    expected = expected_predictions(champion, raw)
    for result, (_, row) in zip([results[0], results[1], results[3]], expected.iterrows()):
        assert result["model_version"] == str(champion)
        choice = {"ok": "Normal", "defect": "Defective"}[row["label"]]
        assert result["result"] == [{"from_name": "verdict", "to_name": "img", "type": "choices",
                                     "value": {"choices": [choice]}}]
        confidence = row["p_defect"] if row["label"] == "defect" else 1 - row["p_defect"]
        assert result["score"] == pytest.approx(confidence, abs=1e-5)
    log = backend.log_text()
    assert "task 103: image not decoded" in log
    assert "task 105: image not read" in log and "outside" in log
    assert " 4 image(s) through" in log  # one model call for the batch (the escape was never read)


def test_follows_the_champion_alias(backend, workdir, synthetic_data, docroot):
    first = backend.get("/health").json()["champion"]
    # threshold 0: every image is a defect, so the new config is visibly in use
    new = register_tiny(workdir, synthetic_data, MODEL, threshold=0.0)
    assert str(new) != first
    time.sleep(1.2)  # the refresh interval is 1 s
    results = backend.post("/predict", json={"tasks": [local_task(1, "img0.png"), local_task(2, "img1.png")],
                                             "label_config": CONFIG}).json()["results"]
    assert [r["model_version"] for r in results] == [str(new)] * 2
    assert [r["result"][0]["value"]["choices"] for r in results] == [["Defective"]] * 2
    assert backend.post("/setup", json={}).json() == {"model_version": str(new)}
    assert backend.get("/health").json()["champion"] == str(new)
    versions = backend.get("/versions").json()
    assert versions["champion"] == str(new) and first in versions["versions"] and str(new) in versions["versions"]

    # moving the alias back is picked up by /setup at once (no waiting for the interval)
    from integrations import mlflow_registry

    mlflow_registry.set_alias(mlflow_registry.require(MODEL, "1"), mlflow_registry.CHAMPION)
    deadline = time.monotonic() + 60
    while backend.post("/setup", json={}).json()["model_version"] != f"{MODEL}/1":
        assert time.monotonic() < deadline
    results = backend.post("/predict", json={"tasks": [local_task(1, "img0.png")], "label_config": CONFIG}).json()
    assert results["results"][0]["model_version"] == f"{MODEL}/1"
