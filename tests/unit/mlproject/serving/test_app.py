"""The backend app with a fake model and registry (no TensorFlow, no MLflow store): protocol and champion following."""

import base64
import logging
import threading

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from integrations.mlflow_registry import VersionRef
from mlproject.data.decode import BadImageError
from mlproject.serving.app import create_app
from mlproject.serving.champion import Champion
from mlproject.serving.holder import ChampionHolder
from mlproject.serving.settings import BackendSettings, parse_label_map

CONFIG = """<View><Image name="img" value="$image"/>
<Choices name="verdict" toName="img"><Choice value="Good"/><Choice value="Defective"/></Choices></View>"""


class FakeModel:
    """Stands in for the registered TensorFlow model (this file tests the protocol and the champion
    swaps, which need models that answer instantly and on cue): p_defect is the number written in
    the image file; 'broken' files do not decode."""

    def __init__(self, version):
        self.version = version
        self.calls = []
        self.frames = []
        self.release = None  # an Event: scoring waits for it (to hold a request in flight)

    def score_and_embed(self, images, sources=None):
        self.calls.append(len(images))
        self.frames.append(pd.DataFrame({"image": list(images), "source": list(sources or [])}))
        if self.release is not None:
            self.release.wait(5)
        p, good, errors = [], [], []
        for i, raw in enumerate(images):
            try:
                p.append(float(raw.decode()))
                good.append(i)
            except ValueError:
                errors.append(BadImageError((sources or [f"row {i}"] * len(images))[i], "not an image"))
        return np.asarray(p), np.zeros((len(p), 2), np.float32), good, errors


class FakeRegistry:
    def __init__(self):
        self.alias = None
        self.loads = []
        self.models = {}
        self.resolves = 0

    def resolve(self, name):
        self.resolves += 1
        return VersionRef(name, self.alias) if self.alias else None

    def load(self, ref):
        self.loads.append(str(ref))
        model = self.models.setdefault(str(ref), FakeModel(str(ref)))
        return Champion(ref=ref, model=model, class_names=("ok", "defect"), threshold=0.5)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def registry():
    return FakeRegistry()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def docroot(tmp_path):
    for name, content in {"a.png": b"0.9", "b.png": b"0.2", "c.png": b"0.6", "broken.png": b"broken"}.items():
        (tmp_path / name).write_bytes(content)
    return tmp_path


def make_client(registry, clock, docroot, **settings):
    settings = BackendSettings(model_name="m", document_root=str(docroot), refresh_seconds=30, **settings)
    holder = ChampionHolder("m", 30, resolver=registry.resolve, loader=registry.load, clock=clock)
    return TestClient(create_app(settings, holder=holder)), holder


def task(i, name):
    return {"id": i, "data": {"image": f"/data/local-files/?d={name}"}}


def test_no_champion(registry, clock, docroot, caplog):
    client, _ = make_client(registry, clock, docroot)
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["champion"] is None and health["model_class"] == "alloop"
    assert "has no champion" in health["message"] and "mlflow run . -e promote" in health["message"]
    assert client.post("/setup", json={"project": "1.1", "schema": CONFIG}).json() == {"model_version": "no-champion"}
    with caplog.at_level(logging.ERROR, "alloop.serving"):
        out = client.post("/predict", json={"tasks": [task(1, "a.png"), task(2, "b.png")], "label_config": CONFIG})
    assert out.json()["results"] == [{"result": [], "score": 0, "model_version": "no-champion"}] * 2
    assert "no champion" in caplog.text


def test_predict_one_batch_in_order_with_scores_and_a_broken_task(registry, clock, docroot, caplog):
    registry.alias = "1"
    client, _ = make_client(registry, clock, docroot)
    tasks = [task(11, "a.png"), task(12, "broken.png"), task(13, "b.png"), task(14, "missing.png"),
             task(15, "c.png"), {"id": 16, "data": {"other": "x"}}]
    with caplog.at_level(logging.ERROR, "alloop.serving"):
        results = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "1.1"}).json()["results"]
    assert len(results) == 6
    assert registry.models["m/1"].calls == [4]  # one model call for every image that could be read
    chosen = [r["result"][0]["value"]["choices"][0] if r["result"] else None for r in results]
    assert chosen == ["Defective", None, "Good", None, "Defective", None]
    assert [r["score"] for r in results] == pytest.approx([0.9, 0, 0.8, 0, 0.6, 0])
    assert {r["model_version"] for r in results} == {"m/1"}
    assert results[0]["result"][0] | {"value": None} == {"from_name": "verdict", "to_name": "img", "type": "choices",
                                                         "value": None}
    for task_id in (12, 14, 16):
        assert f"task {task_id}:" in caplog.text


def test_label_config_comes_from_setup_when_predict_has_none(registry, clock, docroot):
    registry.alias = "1"
    client, _ = make_client(registry, clock, docroot)
    assert client.post("/setup", json={"project": "7.99", "schema": CONFIG}).json() == {"model_version": "m/1"}
    results = client.post("/predict", json={"tasks": [task(1, "a.png")], "project": "7.99"}).json()["results"]
    assert results[0]["result"][0]["value"]["choices"] == ["Defective"]


def test_an_unservable_config_gives_empty_results_and_fails_setup(registry, clock, docroot, caplog):
    registry.alias = "1"
    client, _ = make_client(registry, clock, docroot)
    bad = "<View><Image name='img' value='$image'/><Choices name='c' toName='img'><Choice value='Scratch'/></Choices></View>"
    with caplog.at_level(logging.ERROR, "alloop.serving"):
        results = client.post("/predict", json={"tasks": [task(1, "a.png"), task(2, "b.png")],
                                                "label_config": bad}).json()["results"]
    assert results == [{"result": [], "score": 0, "model_version": "m/1"}] * 2
    assert "matches none of the choices" in caplog.text
    setup = client.post("/setup", json={"project": "1.1", "schema": bad})
    assert setup.status_code == 422 and "matches none of the choices" in setup.json()["error"]


def test_explicit_label_map(registry, clock, docroot):
    registry.alias = "1"
    client, _ = make_client(registry, clock, docroot, label_map=parse_label_map("ok=Fine, defect=Scratch"))
    config = CONFIG.replace("Good", "Fine").replace("Defective", "Scratch")
    results = client.post("/predict", json={"tasks": [task(1, "a.png"), task(2, "b.png")],
                                            "label_config": config}).json()["results"]
    assert [r["result"][0]["value"]["choices"][0] for r in results] == ["Scratch", "Fine"]
    assert parse_label_map('{"ok": "A"}') == {"ok": "A"}


def test_follows_the_alias_on_setup_and_after_the_refresh_interval(registry, clock, docroot):
    registry.alias = "1"
    client, holder = make_client(registry, clock, docroot)
    assert registry.loads == ["m/1"]
    registry.alias = "2"
    # within the interval: still version 1, and no registry read
    reads = registry.resolves
    assert client.post("/predict", json={"tasks": [task(1, "a.png")], "label_config": CONFIG}).json()["results"][0][
        "model_version"] == "m/1"
    assert registry.resolves == reads
    clock.now = 31
    assert client.post("/predict", json={"tasks": [task(1, "a.png")], "label_config": CONFIG}).json()["results"][0][
        "model_version"] == "m/2"
    assert registry.loads == ["m/1", "m/2"]
    registry.alias = "1"
    assert client.post("/setup", json={}).json() == {"model_version": "m/1"}  # /setup re-reads at once
    clock.now = 100
    client.post("/setup", json={})
    client.get("/versions")
    assert registry.loads == ["m/1", "m/2", "m/1"]  # loaded only when the alias moved
    assert client.get("/health").json()["champion"] == "m/1"


def test_a_request_in_flight_finishes_on_the_model_it_started_with(registry, clock, docroot):
    registry.alias = "1"
    client, holder = make_client(registry, clock, docroot)
    old = registry.models["m/1"]
    old.release = threading.Event()
    answers = {}
    worker = threading.Thread(target=lambda: answers.update(
        r=client.post("/predict", json={"tasks": [task(1, "a.png")], "label_config": CONFIG}).json()))
    worker.start()
    while not old.calls:
        threading.Event().wait(0.01)
    registry.alias = "2"
    assert client.post("/setup", json={}).json() == {"model_version": "m/2"}  # swapped while 1 is still predicting
    old.release.set()
    worker.join(5)
    assert answers["r"]["results"][0]["model_version"] == "m/1"
    assert holder.snapshot().version == "m/2"


def test_a_failing_load_keeps_the_old_champion(registry, clock, docroot):
    registry.alias = "1"
    client, holder = make_client(registry, clock, docroot)

    def broken(ref):
        raise OSError("artifact missing")

    holder._loader = broken
    registry.alias = "2"
    assert client.post("/setup", json={}).json() == {"model_version": "m/1"}
    health = client.get("/health").json()
    assert health["champion"] == "m/1" and "could not load m/2" in health["message"]


def test_webhook_and_versions(registry, clock, docroot, monkeypatch):
    registry.alias = "1"
    client, _ = make_client(registry, clock, docroot)
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).json() == {"status": "ok"}
    assert client.post("/webhook", content=b"not json").json() == {"status": "ok"}
    monkeypatch.setattr("mlproject.serving.app.list_versions", lambda name: ["m/1", "m/2"])
    assert client.get("/versions").json() == {"versions": ["m/1", "m/2"], "champion": "m/1"}


def test_basic_auth(registry, clock, docroot, caplog):
    client, _ = make_client(registry, clock, docroot, basic_auth_user="ls", basic_auth_password="s3cret-pw")

    def auth(user, password):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    with caplog.at_level(logging.DEBUG):
        for path in ("/health", "/versions"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers=auth("ls", "wrong")).status_code == 401
            assert client.get(path, headers={"Authorization": "Basic !!!"}).status_code == 401
        assert client.post("/predict", json={"tasks": []}).status_code == 401
        assert client.get("/health", headers=auth("ls", "s3cret-pw")).status_code == 200
        assert client.post("/predict", json={"tasks": []}, headers=auth("ls", "s3cret-pw")).json() == {"results": []}
    assert client.get("/health").headers["www-authenticate"].startswith("Basic")
    assert "s3cret-pw" not in caplog.text


def test_settings_from_env_hide_secrets():
    settings = BackendSettings.from_env({
        "ALLOOP_MODEL_NAME": "m", "LABEL_STUDIO_API_KEY": "key-xyz", "ALLOOP_BACKEND_BASIC_AUTH_USER": "u",
        "ALLOOP_BACKEND_BASIC_AUTH_PASSWORD": "pw-xyz", "ALLOOP_REFRESH_SECONDS": "1.5",
        "ALLOOP_ALLOWED_ROOTS": "/a:/b", "ALLOOP_LABEL_MAP": "ok=Good"})
    assert settings.refresh_seconds == 1.5 and settings.allowed_roots == ["/a", "/b"] and settings.basic_auth
    assert settings.label_map == {"ok": "Good"}
    assert "key-xyz" not in repr(settings) and "pw-xyz" not in repr(settings)
    assert BackendSettings.from_env({}, model_name="x").refresh_seconds == 30


@pytest.mark.parametrize("bad_task, why", [
    ({"id": 21, "data": "a string"}, "'data' is a str, not an object"),
    ({"id": 22, "data": ["a", "list"]}, "'data' is a list"),
    ({"id": 23, "data": 7}, "'data' is a int"),
    ({"id": 24}, "'data' is missing"),
    ({"id": 25, "data": {"image": ["x"]}}, "'image' is a list, not a URL"),
    ("not a task", "the task is a str"),
    (None, "the task is a NoneType"),
])
def test_a_task_whose_data_is_not_an_object_gets_an_empty_result_and_the_others_their_predictions(
        registry, clock, docroot, caplog, bad_task, why):
    registry.alias = "1"
    client, _ = make_client(registry, clock, docroot)
    with caplog.at_level(logging.ERROR, "alloop.serving"):
        response = client.post("/predict", json={"tasks": [task(1, "a.png"), bad_task, task(3, "b.png")],
                                                 "label_config": CONFIG})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3 and results[1] == {"result": [], "score": 0, "model_version": "m/1"}
    assert [r["result"][0]["value"]["choices"] for r in (results[0], results[2])] == [["Defective"], ["Good"]]
    assert why in caplog.text


def test_images_are_named_by_task_when_they_reach_the_model(registry, clock, docroot):
    registry.alias = "1"
    client, _ = make_client(registry, clock, docroot)
    client.post("/predict", json={"tasks": [task(31, "a.png"), task(32, "broken.png")], "label_config": CONFIG})
    frame = registry.models["m/1"].frames[-1]
    assert list(frame["source"]) == ["task 31", "task 32"]


def test_one_request_holds_a_bounded_number_of_image_bytes(registry, clock, tmp_path):
    """50 tasks of 1,000-byte images with a 5,000-byte cap: several model calls, none over the cap."""
    from integrations.labelstudio.images import FETCH_THREADS

    (tmp_path / "big.png").write_bytes(b"0.9".ljust(1000))
    registry.alias = "1"
    client, _ = make_client(registry, clock, tmp_path, max_image_bytes=1000, max_request_bytes=FETCH_THREADS * 1250)
    results = client.post("/predict", json={"tasks": [task(i, "big.png") for i in range(50)],
                                            "label_config": CONFIG}).json()["results"]
    assert len(results) == 50 and all(r["result"] for r in results)
    frames = registry.models["m/1"].frames
    assert len(frames) > 1 and sum(len(f) for f in frames) == 50
    assert max(sum(len(raw) for raw in f["image"]) for f in frames) <= FETCH_THREADS * 1250


def test_an_image_over_the_per_image_limit_is_refused_by_task(registry, clock, tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(b"0.9")
    (tmp_path / "huge.png").write_bytes(b"0.9".ljust(2000))
    registry.alias = "1"
    client, _ = make_client(registry, clock, tmp_path, max_image_bytes=1000, max_request_bytes=8000)
    with caplog.at_level(logging.ERROR, "alloop.serving"):
        results = client.post("/predict", json={"tasks": [task(41, "huge.png"), task(42, "a.png")],
                                                "label_config": CONFIG}).json()["results"]
    assert results[0]["result"] == [] and results[1]["result"]
    assert "task 41: image not read" in caplog.text and "byte limit" in caplog.text


def test_request_cap_below_the_parallel_reads_is_a_settings_error():
    with pytest.raises(ValueError, match="ALLOOP_MAX_REQUEST_BYTES"):
        BackendSettings(model_name="m", max_image_bytes=1000, max_request_bytes=1000)
    with pytest.raises(ValueError, match="ALLOOP_MAX_REQUEST_BYTES='lots'"):
        BackendSettings.from_env({"ALLOOP_MAX_REQUEST_BYTES": "lots"})


@pytest.mark.parametrize("host, auth, no_auth, outcome", [
    ("127.0.0.1", False, False, None), ("localhost", False, False, None), ("::1", False, False, None),
    ("127.0.0.2", False, False, None), ("0.0.0.0", True, False, None), ("10.1.2.3", True, False, None),
    ("0.0.0.0", False, False, SystemExit), ("::", False, False, SystemExit), ("myhost", False, False, SystemExit),
    ("192.168.1.5", False, False, SystemExit), ("0.0.0.0", False, True, "WITHOUT authentication"),
])
def test_listening_beyond_loopback_needs_auth_or_an_explicit_no_auth(host, auth, no_auth, outcome):
    from mlproject.serving.server import check_exposure

    if outcome is SystemExit:
        with pytest.raises(SystemExit, match="refusing to listen .* without authentication.*--no-auth"):
            check_exposure(host, auth, no_auth)
    elif outcome is None:
        assert check_exposure(host, auth, no_auth) is None
    else:
        assert outcome in check_exposure(host, auth, no_auth)


def test_only_label_studio_project_uids_are_remembered_for_following():
    from mlproject.serving.follower import MAX_PROJECTS, ProjectFollower

    follower = ProjectFollower("http://127.0.0.1:1", "key")
    for project in ("7", 7, "abc.1", "7.x", "", None, "../1.2", "3.1700000000"):
        follower.saw(project)
    assert follower.projects == [3]
    for i in range(MAX_PROJECTS + 50):
        follower.saw(f"{1000 + i}.1")
    assert len(follower.projects) == MAX_PROJECTS
