"""integrations.postgres without a server: the switch, the settings files, URIs and environments, the
commands as root or not, and Label Studio's environment on either database."""

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from integrations import postgres
from integrations.labelstudio import server

SETTINGS = postgres.PostgresSettings(host="127.0.0.1", port=54321, user="alloop", password="pw:with\\odd",
                                     data_dir="/state/postgres", passfile="/state/postgres.pgpass")


@pytest.mark.parametrize("value, expected", [(None, False), ("", False), ("sqlite", False), ("postgres", True),
                                             (" Postgres ", True)])
def test_alloop_db_selects_postgres_and_defaults_to_sqlite(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(postgres.DB_ENV, raising=False)
    else:
        monkeypatch.setenv(postgres.DB_ENV, value)
    assert postgres.selected() is expected


def test_an_unknown_alloop_db_says_which_values_work(monkeypatch):
    monkeypatch.setenv(postgres.DB_ENV, "mysql")
    with pytest.raises(postgres.PostgresError, match="ALLOOP_DB='mysql': set it to sqlite .* or postgres"):
        postgres.selected()


def test_paths_follow_the_state_dir_or_the_settings_override(monkeypatch, tmp_path):
    monkeypatch.delenv(postgres.SETTINGS_ENV, raising=False)
    monkeypatch.setenv("ALLOOP_STATE_DIR", str(tmp_path))
    assert postgres.settings_path() == tmp_path / "postgres.json"
    assert postgres.default_data_dir() == tmp_path / "postgres"
    assert postgres.passfile_path() == tmp_path / "postgres.pgpass"
    monkeypatch.setenv(postgres.SETTINGS_ENV, str(tmp_path / "elsewhere" / "pg.json"))
    assert postgres.default_data_dir() == tmp_path / "elsewhere" / "pg"


def test_settings_and_password_file_are_private_and_round_trip(tmp_path):
    settings = postgres.PostgresSettings(**{**vars(SETTINGS), "passfile": str(tmp_path / "pg.pgpass")})
    path = settings.save(tmp_path / "pg.json")
    for secret in (path, tmp_path / "pg.pgpass"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert postgres.load_settings(path) == settings
    assert (tmp_path / "pg.pgpass").read_text() == "127.0.0.1:54321:*:alloop:pw\\:with\\\\odd\n"
    assert "password" not in settings.describe() and SETTINGS.password not in json.dumps(settings.describe())


def test_unreadable_or_missing_settings_read_as_none_and_requiring_them_says_what_to_run(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    assert postgres.load_settings(tmp_path / "bad.json") is None
    assert postgres.load_settings(tmp_path / "missing.json") is None
    with pytest.raises(postgres.PostgresError, match="run `alloop postgres start`"):
        postgres.require_settings(tmp_path / "missing.json")


def test_uris_and_environments_never_carry_the_password_but_label_studio_gets_it(monkeypatch):
    created = []
    monkeypatch.setattr(postgres, "create_database", lambda name, settings, **kw: created.append(name))
    monkeypatch.delenv(postgres.LS_DATABASE_ENV, raising=False)
    assert postgres.mlflow_backend_uri(SETTINGS) == "postgresql+psycopg://alloop@127.0.0.1:54321/mlflow"
    assert postgres.mlflow_backend_uri(SETTINGS, "mlflow_x1") == "postgresql+psycopg://alloop@127.0.0.1:54321/mlflow_x1"
    assert postgres.client_env(SETTINGS) == {"PGPASSFILE": "/state/postgres.pgpass"}
    assert postgres.labelstudio_env(SETTINGS) == {
        "DJANGO_DB": "default", "POSTGRE_NAME": "labelstudio", "POSTGRE_USER": "alloop",
        "POSTGRE_PASSWORD": SETTINGS.password, "POSTGRE_HOST": "127.0.0.1", "POSTGRE_PORT": "54321"}
    monkeypatch.setenv(postgres.LS_DATABASE_ENV, "labelstudio_second")
    assert postgres.labelstudio_env(SETTINGS)["POSTGRE_NAME"] == "labelstudio_second"
    assert created == ["labelstudio", "labelstudio_second"]  # made when missing


@pytest.mark.parametrize("name", ["", "Mlflow", "ml-flow", "x; drop database mlflow", "a" * 64, "1abc"])
def test_database_names_are_plain_identifiers(name):
    with pytest.raises(postgres.PostgresError, match="lower-case letters, digits and _"):
        postgres.check_identifier(name)
    assert postgres.check_identifier("mlflow_0a1b") == "mlflow_0a1b"


def test_server_tools_run_as_the_postgres_user_only_when_we_are_root():
    tool = Path("/usr/lib/postgresql/15/bin/initdb")
    assert postgres.server_command(tool, "-D", Path("/d"), euid=0) == ["runuser", "-u", "postgres", "--",
                                                                        str(tool), "-D", "/d"]
    assert postgres.server_command(tool, "-D", Path("/d"), euid=1000) == [str(tool), "-D", "/d"]


def test_the_first_folder_the_server_user_cannot_enter_is_found():
    modes = {"/": (0, 0, 0o755), "/home": (0, 0, 0o755), "/home/ann": (1000, 1000, 0o700),
             "/home/ann/state": (1000, 1000, 0o755), "/srv": (0, 104, 0o750), "/srv/pg": (101, 104, 0o700)}

    def fake_stat(folder):
        uid, gid, mode = modes[str(folder)]
        return SimpleNamespace(st_uid=uid, st_gid=gid, st_mode=stat.S_IFDIR | mode)

    assert postgres.blocking_ancestor(Path("/home/ann/state/postgres"), 101, {104}, fake_stat) == Path("/home/ann")
    assert postgres.blocking_ancestor(Path("/srv/pg/data"), 101, {104}, fake_stat) is None  # group, then owner
    assert postgres.blocking_ancestor(Path("/srv/pg/data"), 102, {105}, fake_stat) == Path("/srv")


def server_env(tmp_path):
    return server._server_env(data_dir=tmp_path / "data", document_root=tmp_path / "files", username="u@x",
                              password="p", legacy_token=None, venv=tmp_path / "venv")


def test_label_studio_stays_on_sqlite_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv(postgres.DB_ENV, raising=False)
    monkeypatch.setattr(postgres, "start", lambda **kw: pytest.fail("no cluster without ALLOOP_DB=postgres"))
    env = server_env(tmp_path)
    assert not {k for k in env if k.startswith("POSTGRE_") or k == "DJANGO_DB"} - set(os.environ)


def test_label_studio_on_postgres_gets_the_database_variables(monkeypatch, tmp_path):
    monkeypatch.setenv(postgres.DB_ENV, "postgres")
    monkeypatch.setattr(postgres, "start", lambda **kw: SETTINGS)
    monkeypatch.setattr(postgres, "create_database", lambda *a, **kw: None)
    env = server_env(tmp_path)
    assert env["DJANGO_DB"] == "default" and env["POSTGRE_PORT"] == "54321" and env["POSTGRE_NAME"] == "labelstudio"


def test_label_studio_on_postgres_without_a_cluster_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv(postgres.DB_ENV, "postgres")

    def no_tools(**kw):
        raise postgres.PostgresError("PostgreSQL's server tools (initdb, pg_ctl) are not installed: run scripts/setup.sh")

    monkeypatch.setattr(postgres, "start", no_tools)
    with pytest.raises(server.LabelStudioError, match="Label Studio on PostgreSQL .*not installed: run scripts/setup"):
        server_env(tmp_path)
