"""A real PostgreSQL cluster for the tests' pass with ``ALLOOP_DB=postgres`` (scripts/test runs it): one per session.

`SharedCluster.acquire()` starts one cluster on a free port in a temporary folder, points
``ALLOOP_POSTGRES_SETTINGS`` (so Label Studio's `_server_env` finds it) and ``PGPASSFILE`` (MLflow's
driver, also in `mlflow run` children) at it for the session, and migrates a template MLflow
database once; `mlflow_database()` then gives a test a fresh, already migrated database in a tenth of
a second (migrating an empty one takes about 3 s). The last `release()` stops the cluster and
removes its folder.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from pathlib import Path

import pytest

from integrations import postgres
from integrations.processes import free_port
from tests.support.shared import SessionResource

TEMPLATE = "mlflow_template"


def cluster_folder(stack: contextlib.ExitStack) -> Path:
    """A temporary folder the postgres user can enter (the server runs as that user when we are root)."""
    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alloop-pg-")))
    root.chmod(0o755)
    return root


def migrate_template(settings: postgres.PostgresSettings, artifacts: Path) -> None:
    """Create MLflow's tables in TEMPLATE and close every connection to it (a template must be idle)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    postgres.create_database(TEMPLATE, settings)
    store = SqlAlchemyStore(postgres.mlflow_backend_uri(settings, TEMPLATE), str(artifacts))
    store.engine.dispose()


class SharedCluster(SessionResource):
    """The session's cluster, started by the first user and stopped by the last one."""

    @classmethod
    def _open(cls, stack: contextlib.ExitStack) -> postgres.PostgresSettings:
        root = cluster_folder(stack)
        path = root / "postgres.json"
        env = stack.enter_context(pytest.MonkeyPatch.context())
        env.setenv(postgres.SETTINGS_ENV, str(path))
        stack.callback(postgres.stop, path)  # runs before the folder goes, also after a failed start
        settings = postgres.start(port=free_port(), path=path)
        env.setenv("PGPASSFILE", settings.passfile)
        migrate_template(settings, root / "template-artifacts")
        return settings

    @classmethod
    def mlflow_database(cls, artifacts: Path) -> str:
        """A fresh MLflow database (a copy of the migrated template) whose Default experiment keeps its
        artifacts in ``artifacts/0``, as a new SQLite store would in ``./mlruns``; drop it with `drop`."""
        name = postgres.create_database(f"mlflow_{uuid.uuid4().hex[:12]}", cls.settings, template=TEMPLATE)
        with postgres.connect(cls.settings, name) as conn:
            conn.execute("update experiments set artifact_location = %s where experiment_id = 0",
                         (str(Path(artifacts) / "0"),))
        return name

    @classmethod
    def drop(cls, name: str) -> None:
        postgres.drop_database(name, cls.settings)
