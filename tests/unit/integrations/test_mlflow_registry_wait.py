"""MLflow down: how long one call may wait (ALLOOP_MLFLOW_TIMEOUT), and the one line the user gets.

The CLI commands against a closed port are in tests/integration/mlproject/loop/test_sync_mlflow_down.py.
"""

from __future__ import annotations

import socket
import time

import pytest

from integrations import mlflow_registry
from integrations.mlflow_registry import http_retry_env, worst_case_seconds

RETRY_VARS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")


def closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch):
    for name in (*RETRY_VARS, mlflow_registry.WAIT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(mlflow_registry, "_set_by_us", set())
    yield monkeypatch
    import mlflow

    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("wait", [1, 2, 5, 10, 30, 60, 120, 600])
def test_one_call_gives_up_within_the_wait_whether_refused_or_hanging(wait):
    env = http_retry_env(wait)
    assert worst_case_seconds(env) <= wait
    assert int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 7 and int(env["MLFLOW_HTTP_REQUEST_TIMEOUT"]) >= 1


def test_mlflows_own_defaults_wait_minutes_which_is_what_the_bound_replaces():
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}
    assert worst_case_seconds(defaults) > 250
    assert int(http_retry_env(30)["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) >= 1  # still rides out a short blip


def test_configure_tracking_bounds_the_retries_unless_the_user_set_them(clean_env):
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    mlflow_registry.configure_tracking()
    assert {k: mlflow_registry.os.environ[k] for k in RETRY_VARS} == http_retry_env(30)
    clean_env.setenv(mlflow_registry.WAIT_ENV, "10")
    mlflow_registry.configure_tracking()  # a later setting of ours replaces our earlier one
    assert mlflow_registry.os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == http_retry_env(10)["MLFLOW_HTTP_REQUEST_TIMEOUT"]

    clean_env.setattr(mlflow_registry, "_set_by_us", set())
    clean_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    mlflow_registry.configure_tracking()
    assert mlflow_registry.os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


def test_a_bad_wait_setting_says_what_it_wants(clean_env):
    clean_env.setenv(mlflow_registry.WAIT_ENV, "soon")
    with pytest.raises(ValueError, match="ALLOOP_MLFLOW_TIMEOUT='soon'"):
        mlflow_registry.configure_tracking()


def test_an_mlflow_call_to_a_closed_port_gives_up_within_the_default_wait(clean_env):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"http://127.0.0.1:{closed_port()}"
    clean_env.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow_registry.configure_tracking()
    started = time.monotonic()
    with pytest.raises(MlflowException) as failed:
        MlflowClient().get_registered_model("anything")
    assert time.monotonic() - started <= mlflow_registry.DEFAULT_WAIT_S
    line = mlflow_registry.one_line(failed.value)
    assert "\n" not in line and uri in line and "connection refused" in line and "MLFLOW_TRACKING_URI" in line


def test_the_reachability_check_names_the_uri_in_one_line_and_never_its_password(clean_env):
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(mlflow_registry.TrackingUnavailable) as failed:
        mlflow_registry.check_tracking_server(f"http://alice:s3cret@127.0.0.1:{port}", wait_s=5)
    assert time.monotonic() - started < 5
    message = str(failed.value)
    assert "\n" not in message and f"http://127.0.0.1:{port}" in message and "s3cret" not in message
    assert "connection refused" in message and "mlflow server" in message and "MLFLOW_TRACKING_URI" in message
    mlflow_registry.check_tracking_server("sqlite:///nowhere.db")  # no server to check


def test_a_server_that_never_answers_is_given_up_on_after_the_wait(clean_env):
    with socket.socket() as listening:  # accepts connections (the backlog), never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        started = time.monotonic()
        with pytest.raises(mlflow_registry.TrackingUnavailable, match=r"no answer, \d+ s; ALLOOP_MLFLOW_TIMEOUT=1\)"):
            mlflow_registry.check_tracking_server(f"http://127.0.0.1:{listening.getsockname()[1]}", wait_s=1)
        assert time.monotonic() - started < 5
