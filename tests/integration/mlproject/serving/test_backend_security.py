"""The ML backend against hostile input, as a real server process on a real MLflow registry and a real
Label Studio: no credential leaves for another host, odd tasks get their own empty result, a large
request holds bounded memory, projects of other servers are never written, and it will not serve
the network without authentication unless told to."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from integrations.processes import free_port
from tests.support.models import register_tiny
from tests.support.backend import CONFIG, backend_process, mlflow_store, sample_images

pytestmark = pytest.mark.integration

AUTH = ("ls-user", "security-pw-41c")


class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, dict(self.headers)))
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def listener():
    """A server on a free loopback port that records every request it gets."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("security")
    with mlflow_store(directory) as uri:
        yield directory, uri


@pytest.fixture(scope="module")
def champion(store, synthetic_data):
    directory, _ = store
    return register_tiny(directory, synthetic_data, "security-model")


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def test_no_task_url_brings_the_label_studio_token_to_another_host(labelstudio, store, champion, listener):
    directory, uri = store
    port = listener.server_address[1]
    ls = labelstudio.url
    ls_hostport = ls.split("://", 1)[1]
    tricks = [f"http://127.0.0.1:{port}\\@{ls_hostport}/data/upload/1/x.png",  # the reported leak
              f"http://127.0.0.1:{port}%5c@{ls_hostport}/data/upload/1/x.png",
              f"http://{ls_hostport}@127.0.0.1:{port}/data/upload/1/x.png",
              f"http://2130706433:{port}/data/upload/1/x.png", f"http://[::1]:{port}/data/upload/1/x.png",
              f"http://127.0.0.1:{port}/data/upload/1/x.png",
              f"{ls}/api/current-user/whoami", f"{ls}/data/upload/../../api/current-user/whoami"]
    env = {"LABEL_STUDIO_URL": ls, "LABEL_STUDIO_API_KEY": labelstudio.api_key, "LOCAL_FILES_DOCUMENT_ROOT": None}
    with backend_process(directory, "security-model", tracking_uri=uri, env=env, auth=AUTH) as backend:
        tasks = [{"id": 500 + i, "data": {"picture": url}} for i, url in enumerate(tricks)]
        response = backend.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
        assert response.status_code == 200
        assert response.json()["results"] == [{"result": [], "score": 0, "model_version": str(champion)}] * len(tricks)
        log = backend.log_text()
    assert listener.seen == [], listener.seen
    for i in range(len(tricks)):
        assert f"task {500 + i}: image not read: refused" in log, log[-3000:]
    assert labelstudio.api_key not in log and AUTH[1] not in log


def test_tasks_whose_data_is_not_an_object_get_empty_results_the_rest_predictions(store, champion, synthetic_data):
    directory, uri = store
    root = directory / "files-data"
    root.mkdir(exist_ok=True)
    image = sample_images(synthetic_data, 1)[0]
    (root / "a.png").write_bytes(image.read_bytes())
    good = {"id": 1, "data": {"picture": "/data/local-files/?d=a.png"}}
    odd = [{"id": 2, "data": "a string"}, {"id": 3, "data": [1, 2]}, {"id": 4, "data": 5}, "not an object",
           {"id": 6, "data": {"picture": {"nested": 1}}}]
    with backend_process(directory, "security-model", tracking_uri=uri,
                         env={"LOCAL_FILES_DOCUMENT_ROOT": str(root)}) as backend:
        response = backend.post("/predict", json={"tasks": [good, *odd, good], "label_config": CONFIG})
        log = backend.log_text()
    assert response.status_code == 200, log[-3000:]
    results = response.json()["results"]
    assert len(results) == 7 and results[0]["result"] and results[6]["result"]
    assert all(r == {"result": [], "score": 0, "model_version": str(champion)} for r in results[1:6])
    for task_id, why in ((2, "'data' is a str"), (3, "'data' is a list"), (4, "'data' is a int"),
                         (6, "is a dict, not a URL")):
        assert f"task {task_id}: no image to read: " in log and why in log
    assert "the task is a str" in log and "Traceback" not in log


def test_a_large_request_holds_bounded_memory_and_gives_it_back(store, champion):
    """60 tasks on one 24 MB image: the request never holds them all (a 128 MiB cap here)."""
    from PIL import Image

    directory, uri = store
    root = directory / "files-large"
    root.mkdir(exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 256, (2900, 2900, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "large.png", compress_level=1)
    size = (root / "large.png").stat().st_size
    assert size > 20e6
    tasks = [{"id": i, "data": {"picture": "/data/local-files/?d=large.png"}} for i in range(60)]
    cap = 128 * 1024 * 1024
    env = {"LOCAL_FILES_DOCUMENT_ROOT": str(root), "ALLOOP_MAX_REQUEST_BYTES": str(cap),
           "ALLOOP_MAX_IMAGE_BYTES": str(cap // 4)}
    with backend_process(directory, "security-model", tracking_uri=uri, env=env) as backend:
        # one small request first, so the model's own working memory is in the baseline
        backend.post("/predict", json={"tasks": tasks[:1], "label_config": CONFIG})
        before = _status(backend.process.pid)
        response = backend.post("/predict", json={"tasks": tasks, "label_config": CONFIG}, timeout=600)
        assert response.status_code == 200
        assert all(r["result"] for r in response.json()["results"]), backend.log_text()[-3000:]
        time.sleep(1)
        after = _status(backend.process.pid)
    grown = after["VmHWM"] - before["VmRSS"]
    # all 60 images at once would be 60 x 24 MB = 1.4 GB of encoded bytes alone
    print(f"peak grew by {grown / 1e6:.0f} MB; after - before {(after['VmRSS'] - before['VmRSS']) / 1e6:.0f} MB")
    assert grown < 700e6, f"peak grew by {grown / 1e6:.0f} MB during the request"
    assert after["VmRSS"] - before["VmRSS"] < 300e6, "memory not given back after the request"


def test_projects_not_on_the_configured_server_are_never_written(labelstudio, store, champion, synthetic_data):
    from label_studio_sdk.client import LabelStudio

    from integrations.labelstudio.project import Connection, upload_images

    directory, uri = store
    ls = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.api_key)
    tag = uuid.uuid4().hex[:6]
    connected = ls.projects.create(title=f"followed {tag}", label_config=CONFIG.replace("$picture", "$image"))
    # Label Studio accepts a model_version only once a prediction of it exists: give it a task to predict
    upload = directory / f"follow-{tag}.png"
    upload.write_bytes(sample_images(synthetic_data, 1)[0].read_bytes())
    upload_images(Connection(labelstudio.url, labelstudio.api_key, None), ls, connected.id, [upload])
    lonely = ls.projects.create(title=f"no backend {tag}", label_config=CONFIG)
    env = {"LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.api_key,
           "LOCAL_FILES_DOCUMENT_ROOT": None}
    with backend_process(directory, "security-model", tracking_uri=uri, env=env, auth=AUTH) as backend:
        ls.ml.create(project=connected.id, url=backend.url, title="alloop", auth_method="BASIC_AUTH",
                     basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1], is_interactive=False)  # calls /setup itself
        created = int(lonely.created_at.timestamp())
        for uid in (f"{lonely.id}.{created}",  # a real project, but no backend connected
                    f"{connected.id}.{created + 12345}",  # a real id with another project's time
                    f"{connected.id + 1000}.{created}",  # no such project
                    str(connected.id + 2000)):  # a bare id
            assert backend.post("/setup", json={"project": uid, "schema": CONFIG}).status_code == 200
        new = register_tiny(directory, synthetic_data, "security-model", threshold=0.0)
        deadline = time.monotonic() + 120
        while ls.projects.get(id=connected.id).model_version != str(new) and time.monotonic() < deadline:
            time.sleep(1)
        log = backend.log_text()
    assert ls.projects.get(id=connected.id).model_version == str(new), log[-3000:]  # the follower did run
    assert ls.projects.get(id=lonely.id).model_version != str(new)
    assert f"project {lonely.id} is not followed: it has no ML backend connected" in log
    assert "created at another time" in log and f"project {connected.id + 1000} is not followed" in log
    assert f"/api/projects/{connected.id + 2000}/" not in log  # a bare id is not even looked up


def test_refuses_to_serve_the_network_without_auth(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOOP_BACKEND_")}
    command = [sys.executable, "-m", "mlproject.serving.server", "--host", "0.0.0.0", "--port", str(port),
               "--model-name", "anything"]
    done = subprocess.run(command, cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0 without authentication" in done.stderr
    assert "--no-auth" in done.stderr and "ALLOOP_BACKEND_BASIC_AUTH_USER" in done.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
