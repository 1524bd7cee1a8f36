"""The local Label Studio server: start, reuse, tokens, settings files, refusals (real server)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from integrations.labelstudio import server
from integrations.labelstudio.settings import LabelStudioError, LabelStudioSettings
from mlproject.cli import app
from tests.support.labelstudio import labelstudio_server

pytestmark = pytest.mark.integration


def test_health_is_up(labelstudio):
    response = requests.get(f"{labelstudio.url}/health", timeout=10)
    assert response.json()["status"] == "UP"
    assert labelstudio.url == f"http://127.0.0.1:{labelstudio.port}"


def test_personal_access_token_works_with_the_sdk(labelstudio):
    from label_studio_sdk.client import LabelStudio

    assert labelstudio.token_kind == "pat"
    assert labelstudio.api_key.count(".") == 2  # a JWT refresh token, not a legacy key
    me = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.api_key).users.whoami()
    assert me.email == labelstudio.username == server.DEFAULT_USERNAME


def test_settings_and_env_files_are_private_and_complete(labelstudio):
    settings_path = Path(os.environ["ALLOOP_STATE_DIR"]) / "labelstudio.json"
    env_path = settings_path.with_suffix(".env")
    for path in (settings_path, env_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert LabelStudioSettings.load(settings_path) == labelstudio
    env_text = env_path.read_text()
    assert f"export LABEL_STUDIO_URL='{labelstudio.url}'" in env_text
    assert f"export LABEL_STUDIO_API_KEY='{labelstudio.api_key}'" in env_text
    assert os.environ["LABEL_STUDIO_API_KEY"] == labelstudio.api_key

    cli = CliRunner()
    assert cli.invoke(app, ["labelstudio", "env"]).output == env_text
    status = cli.invoke(app, ["labelstudio", "status"])
    assert status.exit_code == 0, status.output
    assert "healthy        True" in status.output


def test_start_again_reuses_the_running_server(labelstudio):
    again = server.start(
        port=labelstudio.port,
        data_dir=Path(labelstudio.data_dir),
        document_root=Path(labelstudio.document_root),
    )
    assert again.pid == labelstudio.pid
    assert again.api_key == labelstudio.api_key
    assert server.is_server_process(labelstudio.pid)


def test_a_taken_port_is_refused(labelstudio, tmp_path):
    # Another state dir, so this is a second server, not a reuse of the session's one.
    with pytest.raises(LabelStudioError, match=f"Port {labelstudio.port} .* already in use"):
        server.start(port=labelstudio.port, data_dir=tmp_path / "data", settings_path=tmp_path / "ls.json")
    assert not (tmp_path / "ls.json").exists()

    with socket.socket() as other_listener:  # anything listening, not only Label Studio
        other_listener.bind(("127.0.0.1", 0))
        other_listener.listen()
        port = other_listener.getsockname()[1]
        with pytest.raises(LabelStudioError, match="already in use"):
            server.start(port=port, data_dir=tmp_path / "data", settings_path=tmp_path / "ls.json")


def test_stop_is_idempotent_without_a_server(tmp_path):
    assert "nothing to stop" in server.stop(tmp_path / "missing.json")


def test_legacy_token_on_a_second_server(labelstudio, tmp_path):
    with labelstudio_server(tmp_path, legacy_token=True) as legacy:
        assert legacy.port != labelstudio.port and legacy.pid != labelstudio.pid
        assert legacy.token_kind == "legacy"
        response = requests.get(
            f"{legacy.url}/api/current-user/whoami",
            headers={"Authorization": f"Token {legacy.api_key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["email"] == legacy.username
    assert not server.is_server_process(legacy.pid)
    assert "not running" in server.stop(tmp_path / "labelstudio.json")
    assert server.is_healthy(labelstudio.url)  # the session's server is untouched
