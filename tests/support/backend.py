"""The ML backend as a real server process on a real MLflow store, for integration tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from integrations.processes import free_port

START_TIMEOUT_S = 300
CONFIG = """<View><Image name="img" value="$picture"/>
<Choices name="verdict" toName="img"><Choice value="Normal"/><Choice value="Defective"/></Choices></View>"""


@contextlib.contextmanager
def mlflow_store(directory: Path) -> Iterator[str]:
    """A SQLite tracking store in ``directory`` for this process (env, tracking URI and working dir)."""
    import mlflow

    uri = f"sqlite:///{directory / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.chdir(directory)  # artifacts go to ./mlruns here
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(None)


class Backend:
    def __init__(self, url: str, log: Path, process: subprocess.Popen, auth=None):
        self.url, self.log, self.process, self.auth = url, log, process, auth

    def get(self, path, **kw):
        return requests.get(self.url + path, auth=kw.pop("auth", self.auth), timeout=kw.pop("timeout", 120), **kw)

    def post(self, path, **kw):
        return requests.post(self.url + path, auth=kw.pop("auth", self.auth), timeout=kw.pop("timeout", 120), **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def backend_process(workdir: Path, model_name: str, *, tracking_uri: str, env: dict | None = None,
                    auth: tuple[str, str] | None = None, refresh_seconds: float = 1.0) -> Iterator[Backend]:
    """``python -m mlproject.serving.server`` on a free port; stopped (and reaped) afterwards."""
    port = free_port()
    log = workdir / f"backend-{port}.log"
    child_env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "ALLOOP_REFRESH_SECONDS": str(refresh_seconds),
                 "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(env or {})}
    for key in ("ALLOOP_BACKEND_BASIC_AUTH_USER", "ALLOOP_BACKEND_BASIC_AUTH_PASSWORD",
                *(k for k, v in (env or {}).items() if v is None)):  # None in env: unset
        child_env.pop(key, None)
    if auth:
        child_env["ALLOOP_BACKEND_BASIC_AUTH_USER"], child_env["ALLOOP_BACKEND_BASIC_AUTH_PASSWORD"] = auth
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlproject.serving.server", "--host", "127.0.0.1", "--port", str(port),
             "--model-name", model_name],
            cwd=workdir, env=child_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    backend = Backend(f"http://127.0.0.1:{port}", log, process, auth)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"backend exited with {process.returncode}:\n{backend.log_text()[-3000:]}")
            try:
                if backend.get("/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"backend not up after {START_TIMEOUT_S} s:\n{backend.log_text()[-3000:]}")
            time.sleep(0.5)
        yield backend
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def sample_images(data: Path, n: int) -> list[Path]:
    images = sorted(p for p in data.rglob("*") if p.suffix.lower() == ".png" and p.parent.name != "Label")
    assert len(images) >= n
    return images[:n]


def expected_predictions(ref, images: list[bytes]):
    import pandas as pd

    from integrations import mlflow_registry

    return mlflow_registry.load_pyfunc(ref).predict(pd.DataFrame({"image": images}))
