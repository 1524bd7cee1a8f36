"""MLflow down: the loop's commands against a closed MLflow port (Label Studio up) end in one line
that names the tracking URI and what to check, within the bounded wait (ALLOOP_MLFLOW_TIMEOUT).

How long one MLflow call may retry is checked precisely in tests/unit/integrations/test_mlflow_registry_wait.py;
here the whole command is timed, generously, because the issue states the bound for it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlproject.cli import app

pytestmark = pytest.mark.integration

ALLOOP = str(Path(sys.executable).parent / "alloop")
RETRY_VARS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT", "ALLOOP_MLFLOW_TIMEOUT")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loop_commands_against_a_closed_mlflow_port_print_one_line_within_the_wait(labelstudio, tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {k: v for k, v in os.environ.items() if k not in RETRY_VARS}  # the defaults: the case
    env.update(MLFLOW_TRACKING_URI=uri, LABEL_STUDIO_URL=labelstudio.url, LABEL_STUDIO_API_KEY=labelstudio.api_key)
    images = tmp_path / "images"
    images.mkdir()
    commands = [["sync", "--project", "anything"], ["status", "--project", "anything"],
                ["audit", "--project", "anything"], ["predict", "--project", "anything"],
                ["init", "--images", str(images), "--title", "anything"]]
    for command in commands:
        started = time.monotonic()
        try:
            done = subprocess.run([ALLOOP, *command], capture_output=True, text=True, env=env, cwd=tmp_path,
                                  timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`alloop {command[0]}` still retrying after 90 s against {uri}")
        elapsed = time.monotonic() - started
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        assert done.returncode == 1, (command, lines)
        assert len(lines) == 1, (command, lines)
        assert uri in lines[0] and "MLFLOW_TRACKING_URI" in lines[0] and "connection refused" in lines[0], lines
        assert elapsed <= 30, (command, elapsed)


def test_mlflow_failing_after_the_check_still_ends_in_one_line_within_the_wait(labelstudio, tiny_champion,
                                                                               synthetic_data, monkeypatch):
    # the server answered the up-front check, then went away: the MLflow calls themselves give up in time
    from integrations import mlflow_registry
    from tests.support.projects import make_project

    tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 4, "mlflow-gone")
    for name in RETRY_VARS:  # whatever configure_tracking sets here is undone after the test
        monkeypatch.setenv(name, "1")
        monkeypatch.delenv(name)
    monkeypatch.setattr(mlflow_registry, "_set_by_us", set(), raising=False)
    monkeypatch.setattr(mlflow_registry, "check_tracking_server", lambda *args, **kwargs: None, raising=False)
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for command in (["status", "--project", title], ["sync", "--project", title], ["audit", "--project", title]):
        started = time.monotonic()
        result = CliRunner().invoke(app, command)
        elapsed = time.monotonic() - started
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (command, result.output)
        assert len(lines) == 1 and lines[0].startswith(f"Error: MLflow at {uri} failed: "), lines
        assert "connection refused" in lines[0] and "MLFLOW_TRACKING_URI" in lines[0], lines
        assert elapsed <= mlflow_registry.worst_case_seconds(mlflow_registry.http_retry_env(30)) + 5, elapsed
