"""The local PostgreSQL cluster (real server): start, reuse, refusals, stop/status, MLflow and Label Studio on it.

Each test but the last makes its own cluster in a temporary folder (about 4 s). The last one checks the
session's Label Studio; it runs in the PostgreSQL pass of scripts/test (ALLOOP_DB=postgres), where that
server is on PostgreSQL, instead of starting another Label Studio here (about a minute).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from integrations import postgres
from integrations.processes import free_port, is_ours
from mlproject.cli import app
from tests.support.postgres import cluster_folder

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster_dir():
    with contextlib.ExitStack() as stack:
        root = cluster_folder(stack)
        try:
            yield root
        finally:
            postgres.stop(root / "postgres.json")


@pytest.fixture
def cluster(cluster_dir, monkeypatch):
    """A started cluster whose settings `alloop postgres ...` finds (ALLOOP_POSTGRES_SETTINGS)."""
    monkeypatch.setenv(postgres.SETTINGS_ENV, str(cluster_dir / "postgres.json"))
    return postgres.start(port=free_port())


def databases(settings) -> set[str]:
    with postgres.connect(settings) as conn:
        return {row[0] for row in conn.execute("select datname from pg_database")}


def test_start_is_idempotent_and_stop_and_status_say_what_runs(cluster, cluster_dir):
    path = cluster_dir / "postgres.json"
    pid = postgres.status()["pid"]
    again = postgres.start()
    assert again.port == cluster.port and again.password == cluster.password
    assert postgres.status()["pid"] == pid and is_ours(pid, "postgres")  # the same one server
    assert {"mlflow", "labelstudio"} <= databases(cluster)
    with postgres.connect(cluster) as conn:
        assert conn.execute("select current_user").fetchone() == ("alloop",)
    for secret in (path, Path(cluster.passfile)):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    with pytest.raises(postgres.PostgresError, match=f"already runs .* port {cluster.port}"):
        postgres.start(port=free_port())

    cli = CliRunner()
    started = cli.invoke(app, ["postgres", "start"])
    assert started.exit_code == 0, started.output
    assert f"port                {cluster.port}" in started.output and "already running" in started.output
    status = cli.invoke(app, ["postgres", "status"])
    assert status.exit_code == 0 and "answers             True" in status.output, status.output
    env = cli.invoke(app, ["postgres", "env"]).output
    assert f"export MLFLOW_TRACKING_URI='{postgres.mlflow_backend_uri(cluster)}'" in env
    for output in (started.output, status.output, env):
        assert cluster.password not in output

    assert "stopped" in postgres.stop()
    assert not is_ours(pid, "postgres")
    assert "not running" in postgres.stop()
    stopped = cli.invoke(app, ["postgres", "status"])
    assert stopped.exit_code == 1 and "running             False" in stopped.output, stopped.output
    restarted = postgres.start()  # the same data dir, port and password
    assert restarted.port == cluster.port and "mlflow" in databases(restarted)


def test_a_port_in_use_is_refused_naming_the_port(cluster_dir):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(postgres.PostgresError, match=f"Port {port} on 127.0.0.1 is already in use.*--port"):
            postgres.start(port=port, path=cluster_dir / "postgres.json")
    assert not (cluster_dir / "postgres.json").exists() and not (cluster_dir / "postgres").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root the server runs as the postgres user; here we are not root")
def test_as_root_a_folder_the_postgres_user_cannot_enter_is_named():
    with tempfile.TemporaryDirectory(prefix="alloop-pg-closed-") as closed:  # mode 0700
        with pytest.raises(postgres.PostgresError, match=f"cannot enter {closed} .*chmod o\\+x {closed}"):
            postgres.start(port=free_port(), path=Path(closed) / "state" / "postgres.json")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mlflow_logs_a_run_registers_a_model_and_keeps_its_lock_names_unique(cluster, tmp_path, monkeypatch):
    import mlflow
    from mlflow.pyfunc import PythonModel

    from integrations import mlflow_lock

    class Constant(PythonModel):
        def predict(self, context, model_input, params=None):
            return [1] * len(model_input)

    uri = postgres.mlflow_backend_uri(cluster)
    assert uri == f"postgresql+psycopg://alloop@127.0.0.1:{cluster.port}/mlflow"  # no password in the URI
    monkeypatch.setenv("PGPASSFILE", cluster.passfile)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    try:
        # not set_experiment: the active experiment would outlive this test's store
        with mlflow.start_run(experiment_id=mlflow.create_experiment("pg-check")) as run:
            mlflow.log_metric("accuracy", 0.75)
            mlflow.pyfunc.log_model(name="model", python_model=Constant())
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "pg-classifier")
        loaded = mlflow.pyfunc.load_model(f"models:/pg-classifier/{version.version}")
        assert list(loaded.predict([[0], [0]])) == [1, 1]

        # the round lock's test-and-set, raced by 6 threads: exactly one creates it
        barrier, won = threading.Barrier(6), []

        def take():
            barrier.wait()
            won.append(mlflow_lock.create("alloop-round-lock.pg", {"host": "x"}, "test"))

        threads = [threading.Thread(target=take) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(won) == [False] * 5 + [True]

        # a stale lock's takeover (a rename to a unique tombstone), raced: exactly one taker wins, and the
        # others are told they lost (on PostgreSQL the losing UPDATEs match no row), not an error
        barrier, renamed = threading.Barrier(6), {}

        def take_over(index):
            barrier.wait()
            renamed[index] = mlflow_lock.rename("alloop-round-lock.pg", f"alloop-round-lock.pg.tombstone-{index}")

        threads = [threading.Thread(target=take_over, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(renamed.values()) == [False] * 5 + [True]
        winner = next(i for i, won_it in renamed.items() if won_it)
    finally:
        mlflow.set_tracking_uri(None)
    with postgres.connect(cluster, "mlflow") as conn:
        assert conn.execute("select key, value from metrics where run_uuid = %s",
                            (run.info.run_id,)).fetchall() == [("accuracy", 0.75)]
        names = {row[0] for row in conn.execute("select name from registered_models")}
    assert names == {"pg-classifier", f"alloop-round-lock.pg.tombstone-{winner}"}


@pytest.mark.skipif(not postgres.selected(), reason="runs in the PostgreSQL pass of scripts/test (ALLOOP_DB=postgres)")
def test_label_studio_keeps_its_projects_in_postgres(labelstudio):
    from label_studio_sdk.client import LabelStudio

    project = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.api_key).projects.create(title="kept in pg")
    settings = postgres.require_settings()
    with postgres.connect(settings, "labelstudio") as conn:
        assert conn.execute("select title from project where id = %s", (project.id,)).fetchone() == ("kept in pg",)
    assert not list(Path(labelstudio.data_dir).glob("*.sqlite3"))  # no SQLite database beside it
    assert settings.password not in (Path(labelstudio.data_dir) / "server.log").read_text()
