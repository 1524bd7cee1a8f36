"""The saved Label Studio connection: round trip, private files, shell quoting, locations."""

from __future__ import annotations

import logging
import stat
import subprocess

from integrations.labelstudio import settings as ls_settings
from integrations.labelstudio.settings import LabelStudioSettings, load_settings


def _settings(**overrides) -> LabelStudioSettings:
    values = dict(url="http://127.0.0.1:8080", api_key="it's-a-key", token_kind="pat", username="a@b.c",
                  data_dir="/d", document_root="/f", pid=None, port=8080, password="pw")
    return LabelStudioSettings(**{**values, **overrides})


def test_settings_round_trip_in_private_files_and_the_env_file_survives_a_shell(tmp_path):
    saved = _settings(pid=123)
    path = saved.save(tmp_path / "deep" / "labelstudio.json")
    env_path = ls_settings.env_file_path(path)
    assert env_path == tmp_path / "deep" / "labelstudio.env"
    for written in (path, env_path):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600, written
    assert load_settings(path) == saved
    echoed = subprocess.run(["bash", "-c", f'source "{env_path}"; echo "$LABEL_STUDIO_API_KEY|$LABEL_STUDIO_URL"'],
                            capture_output=True, text=True, check=True).stdout
    assert echoed == "it's-a-key|http://127.0.0.1:8080\n"


def test_missing_or_unreadable_settings_are_none(tmp_path, caplog):
    assert load_settings(tmp_path / "missing.json") is None
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert load_settings(broken) is None
    assert "Ignoring unreadable settings file" in caplog.text and str(broken) in caplog.text


def test_unknown_keys_are_ignored_and_locations_follow_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "labelstudio.json"
    path.write_text(_settings().save(path).read_text().replace('"port"', '"from_a_newer_version": 1, "port"'))
    assert load_settings(path) == _settings()

    monkeypatch.setenv("ALLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ALLOOP_LS_VENV", str(tmp_path / "venv"))
    assert ls_settings.default_settings_path() == tmp_path / "state" / "labelstudio.json"
    assert ls_settings.default_data_dir() == tmp_path / "state" / "labelstudio-data"
    assert ls_settings.default_document_root() == tmp_path / "state" / "files"
    assert ls_settings.label_studio_executable() == tmp_path / "venv" / "bin" / "label-studio"
    assert load_settings() is None
