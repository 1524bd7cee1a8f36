"""A real Label Studio server for integration tests: one per test session.

tests/integration/conftest.py's `labelstudio` fixture installs Label Studio into its venv if it is missing (about 70 s on a fresh
machine), starts one server on a free port with a temporary data dir and document root (first start
about 50 s), points ALLOOP_STATE_DIR, LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY at it for the
session, yields its `LabelStudioSettings` and stops it at the end.

`labelstudio_server` starts a separate one (for tests of the launcher itself).

With ALLOOP_DB=postgres (the PostgreSQL pass of scripts/test) the servers keep their projects in the
session's PostgreSQL cluster (tests/support/postgres.py): the session's server in the `labelstudio`
database, each separate one in a database of its own.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest

from integrations import postgres
from integrations.labelstudio.server import install, start, stop
from integrations.labelstudio.settings import LabelStudioSettings, default_settings_path, label_studio_executable
from integrations.processes import free_port
from tests.support.postgres import SharedCluster
from tests.support.shared import SessionResource

# A 2-core CI machine busy with TensorFlow can take well over the usual 50 s to migrate.
START_TIMEOUT_S = 600


def ensure_installed() -> None:
    if not label_studio_executable().exists():
        install()


@contextlib.contextmanager
def labelstudio_server(
    state_dir: Path, *, port: Optional[int] = None, database: Optional[str] = None, **start_kwargs
) -> Iterator[LabelStudioSettings]:
    """Start a server whose settings, data and files live under `state_dir`; always stop it.

    With ALLOOP_DB=postgres its database is `database` (default: a new one) on the session's cluster."""
    ensure_installed()
    state_dir = Path(state_dir)
    settings_path = state_dir / "labelstudio.json"
    stack = contextlib.ExitStack()
    try:
        if postgres.selected():
            SharedCluster.acquire()
            stack.callback(SharedCluster.release)
            env = stack.enter_context(pytest.MonkeyPatch.context())
            env.setenv(postgres.LS_DATABASE_ENV, database or f"labelstudio_{uuid.uuid4().hex[:12]}")
        yield start(
            port=port or free_port(),
            data_dir=state_dir / "labelstudio-data",
            document_root=state_dir / "files",
            settings_path=settings_path,
            timeout=START_TIMEOUT_S,
            **start_kwargs,
        )
    finally:
        try:
            stop(settings_path)  # also after a failed start: the process may be up but unhealthy
        finally:
            stack.close()  # then the cluster, if this was its last user


class SharedServer(SessionResource):
    """The session's server, started by the first user and stopped by the last one."""

    @classmethod
    def _open(cls, stack: contextlib.ExitStack) -> LabelStudioSettings:
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alloop-ls-")))
        env = stack.enter_context(pytest.MonkeyPatch.context())
        env.setenv("ALLOOP_STATE_DIR", str(state_dir))  # the CLI then finds these settings
        settings = stack.enter_context(labelstudio_server(state_dir, database="labelstudio"))
        assert default_settings_path() == state_dir / "labelstudio.json"
        env.setenv("LABEL_STUDIO_URL", settings.url)
        env.setenv("LABEL_STUDIO_API_KEY", settings.api_key)
        return settings
