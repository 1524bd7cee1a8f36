"""A local PostgreSQL cluster that carries Label Studio's and MLflow's databases (``ALLOOP_DB=postgres``).

No system service: the cluster's files are in ``<state_dir>/postgres`` and its connection settings in
``<state_dir>/postgres.json`` (``$ALLOOP_POSTGRES_SETTINGS`` names another settings file; the data dir
then sits beside it). :func:`start` makes the cluster on first use (initdb), runs it on 127.0.0.1 only
(no Unix socket) and creates the user ``alloop`` (its owner) and the databases ``mlflow`` and
``labelstudio``; :func:`stop` and :func:`status` do what they say. ``alloop postgres ...`` is the CLI.

Authentication is scram-sha-256 with a generated password, which is never put into a URI nor
printed: it is kept in the settings (mode 0600) and in a libpq password file ``postgres.pgpass``
(0600) that MLflow's driver finds through ``PGPASSFILE`` (:func:`client_env`); Label Studio gets it
in its environment (:func:`labelstudio_env`).

initdb refuses to run as root: as root the server tools run as the ``postgres`` system user (through
``runuser``), which then owns the data dir; as anyone else they run directly.

``ALLOOP_DB=postgres`` (:func:`selected`) puts Label Studio on the ``labelstudio`` database
(``$ALLOOP_LS_DATABASE`` names another, e.g. for a second server) and the demo's MLflow on ``mlflow``
(:func:`mlflow_backend_uri`); the default, ``sqlite``, leaves everything as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional

from integrations import processes
from integrations.files import atomic_write
from mlproject.state import state_dir

DB_ENV = "ALLOOP_DB"
SETTINGS_ENV = "ALLOOP_POSTGRES_SETTINGS"
LS_DATABASE_ENV = "ALLOOP_LS_DATABASE"
HOST = processes.LOOPBACK
DEFAULT_PORT = 5433  # not 5432: a system PostgreSQL may come later and would take that one
USER = "alloop"
SERVER_USER = "postgres"  # runs the server when we are root (initdb refuses root)
LOG_NAME = "alloop-server.log"  # inside the data dir: the server user must be able to write it
TOOL_TIMEOUT_S = 120
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")

log = logging.getLogger(__name__)
Say = Callable[[str], None]


class PostgresError(RuntimeError):
    """A problem the user can act on; the message says what to do."""


def selected() -> bool:
    """True when ``ALLOOP_DB=postgres``; ``sqlite`` (or unset) is the default."""
    value = (os.environ.get(DB_ENV) or "sqlite").strip().lower()
    if value not in ("sqlite", "postgres"):
        raise PostgresError(f"{DB_ENV}={value!r}: set it to sqlite (the default) or postgres")
    return value == "postgres"


def settings_path() -> Path:
    return Path(os.environ.get(SETTINGS_ENV) or state_dir() / "postgres.json").resolve()


def default_data_dir(path: Optional[Path] = None) -> Path:
    return Path(path or settings_path()).with_suffix("")  # postgres.json -> postgres/


def passfile_path(path: Optional[Path] = None) -> Path:
    return Path(path or settings_path()).with_suffix(".pgpass")


@dataclass
class PostgresSettings:
    """How to reach the cluster. Holds its password: written with mode 0600."""

    host: str
    port: int
    user: str
    password: str
    data_dir: str
    passfile: str
    mlflow_database: str = "mlflow"
    labelstudio_database: str = "labelstudio"

    def save(self, path: Optional[Path] = None) -> Path:
        path = Path(path or settings_path())
        atomic_write(path, json.dumps(asdict(self), indent=2) + "\n", private=True)
        atomic_write(self.passfile, passfile_line(self.host, self.port, self.user, self.password), private=True)
        return path

    def describe(self) -> dict:
        """Everything but the password, for people."""
        return {"host": self.host, "port": self.port, "user": self.user,
                "databases": f"{self.mlflow_database}, {self.labelstudio_database}",
                "mlflow_backend_uri": mlflow_backend_uri(self), "passfile": self.passfile,
                "data_dir": self.data_dir, "log": str(Path(self.data_dir) / LOG_NAME)}


def load_settings(path: Optional[Path] = None) -> Optional[PostgresSettings]:
    """The saved settings, or None when there are none (or they cannot be read)."""
    path = Path(path or settings_path())
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(PostgresSettings)}
        return PostgresSettings(**{k: v for k, v in raw.items() if k in known})
    except (ValueError, TypeError) as exc:
        log.warning("Ignoring unreadable PostgreSQL settings %s: %s", path, exc)
        return None


def require_settings(path: Optional[Path] = None) -> PostgresSettings:
    path = Path(path or settings_path())
    saved = load_settings(path)
    if saved is None:
        raise PostgresError(f"No PostgreSQL settings at {path}: run `alloop postgres start` first")
    return saved


# --- pure helpers -----------------------------------------------------------------------------------------


def passfile_line(host: str, port: int, user: str, password: str) -> str:
    """One libpq password-file line (``host:port:database:user:password``) for every database."""

    def escape(value: str) -> str:
        return str(value).replace("\\", "\\\\").replace(":", "\\:")

    return f"{escape(host)}:{port}:*:{escape(user)}:{escape(password)}\n"


def check_identifier(name: str) -> str:
    """``name`` when it is a plain lower-case PostgreSQL identifier, else a PostgresError."""
    if not _IDENTIFIER.fullmatch(name or ""):
        raise PostgresError(f"database name {name!r}: use lower-case letters, digits and _ (63 at most)")
    return name


def server_command(tool: Path, *args, euid: int) -> list[str]:
    """A server tool's command line: as the postgres user when we are root, else as ourselves."""
    command = [str(tool), *map(str, args)]
    return ["runuser", "-u", SERVER_USER, "--", *command] if euid == 0 else command


def blocking_ancestor(path: Path, uid: int, gids: set[int], stat_of=os.stat) -> Optional[Path]:
    """The first folder above ``path`` that user ``uid`` (groups ``gids``) cannot enter, or None."""
    for folder in reversed(Path(path).parents):
        info = stat_of(folder)
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return folder
    return None


def mlflow_backend_uri(settings: Optional[PostgresSettings] = None, database: Optional[str] = None) -> str:
    """The SQLAlchemy URI of the MLflow database (psycopg 3; no password: it comes from PGPASSFILE)."""
    settings = settings or require_settings()
    name = check_identifier(database or settings.mlflow_database)
    return f"postgresql+psycopg://{settings.user}@{settings.host}:{settings.port}/{name}"


def client_env(settings: Optional[PostgresSettings] = None) -> dict[str, str]:
    """What a process needs in its environment to log in with :func:`mlflow_backend_uri`."""
    return {"PGPASSFILE": (settings or require_settings()).passfile}


def labelstudio_env(settings: Optional[PostgresSettings] = None, database: Optional[str] = None) -> dict[str, str]:
    """Label Studio's database variables; its database (``$ALLOOP_LS_DATABASE``, default labelstudio)
    is created when missing."""
    settings = settings or require_settings()
    name = database or os.environ.get(LS_DATABASE_ENV) or settings.labelstudio_database
    create_database(name, settings, exist_ok=True)
    return {"DJANGO_DB": "default",  # Label Studio's name for its PostgreSQL configuration
            "POSTGRE_NAME": name, "POSTGRE_USER": settings.user, "POSTGRE_PASSWORD": settings.password,
            "POSTGRE_HOST": settings.host, "POSTGRE_PORT": str(settings.port)}


# --- the server tools -------------------------------------------------------------------------------------


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: Debian's newest /usr/lib/postgresql/N/bin, else the PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresError("PostgreSQL's server tools (initdb, pg_ctl) are not installed: run scripts/setup.sh "
                        "(it installs Debian's postgresql package) or `apt-get install -y postgresql`")


def _run(tool: str, *args, what: str, log_file: Optional[Path] = None) -> str:
    command = server_command(bin_dir() / tool, *args, euid=os.geteuid())
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PostgresError(f"{what}: `{tool}` still running after {TOOL_TIMEOUT_S} s; "
                            f"see {log_file or 'its output'}") from None
    if done.returncode != 0:
        tail = processes.log_tail(log_file) if log_file else ""
        raise PostgresError(f"{what} failed ({tool} exit {done.returncode}):\n{done.stdout}{done.stderr}{tail}")
    return done.stdout


def _server_ids() -> tuple[int, int, set[int]]:
    """The postgres user's uid, primary gid and all its groups."""
    import grp
    import pwd

    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresError(f"Running as root needs the `{SERVER_USER}` system user to run the server (initdb "
                            "refuses root); Debian's postgresql package creates it: `apt-get install -y postgresql`, "
                            "or run alloop as a normal user") from None
    gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if SERVER_USER in g.gr_mem}
    return user.pw_uid, user.pw_gid, gids


def _prepare_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        data_dir.chmod(0o700)
        return
    uid, gid, gids = _server_ids()
    blocked = blocking_ancestor(data_dir, uid, gids)
    if blocked is not None:
        raise PostgresError(f"The {SERVER_USER} user (it runs the server: initdb refuses root) cannot enter {blocked} "
                            f"(mode {stat.S_IMODE(blocked.stat().st_mode):o}): `chmod o+x {blocked}`, or keep the "
                            "cluster elsewhere (ALLOOP_STATE_DIR)")
    os.chown(data_dir, uid, gid)
    data_dir.chmod(0o700)


def _initdb(data_dir: Path, password: str) -> None:
    _prepare_data_dir(data_dir)
    with tempfile.TemporaryDirectory(prefix="alloop-pg-") as tmp:
        pwfile = Path(tmp) / "pw"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            uid, gid, _ = _server_ids()
            for path in (Path(tmp), pwfile):
                os.chown(path, uid, gid)
        _run("initdb", "-D", data_dir, "-U", USER, "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
             "--locale=C", what=f"initdb of {data_dir}")
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write("\n# alloop: loopback only, no Unix socket (the settings are in postgres.json)\n"
                   "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")


def _postmaster(data_dir: Path) -> Optional[tuple[int, int]]:
    """(pid, port) of the server running on ``data_dir``, or None."""
    try:
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if processes.is_ours(pid, "postgres") else None


# --- start, stop, status ----------------------------------------------------------------------------------


def start(port: Optional[int] = None, *, path: Optional[Path] = None, say: Say = log.info) -> PostgresSettings:
    """Start the cluster (making it first when its data dir is new), or report the running one; make
    sure the user and both databases exist; save and return the settings. Idempotent."""
    path = Path(path or settings_path())
    saved = load_settings(path)
    data_dir = Path(saved.data_dir) if saved else default_data_dir(path)
    running = _postmaster(data_dir)
    if running:
        pid, running_port = running
        if port and port != running_port:
            raise PostgresError(f"PostgreSQL already runs on {data_dir} (pid {pid}, port {running_port}): stop it "
                                f"first (`alloop postgres stop`) or start with --port {running_port}")
        if saved is None:
            raise PostgresError(f"PostgreSQL runs on {data_dir} (pid {pid}) but its settings {path} are missing: "
                                f"stop it (`pg_ctl -D {data_dir} stop`) and restore the settings file")
        settings = replace(saved, port=running_port)
        say(f"PostgreSQL already running (pid {pid}) on {HOST}:{running_port}: reusing it")
    else:
        port = port or (saved.port if saved else DEFAULT_PORT)
        if processes.port_in_use(port):
            raise PostgresError(f"Port {port} on {HOST} is already in use by something other than alloop's "
                                f"PostgreSQL ({data_dir}): stop what listens there or choose another port "
                                "(`alloop postgres start --port N`)")
        if not (data_dir / "PG_VERSION").exists():
            password = secrets.token_urlsafe(24)
            say(f"Creating a PostgreSQL cluster in {data_dir}")
            _initdb(data_dir, password)
        elif saved is None or not saved.password:
            raise PostgresError(f"{data_dir} holds a cluster but its settings {path} (with its password) are "
                                f"missing: restore them, or delete {data_dir} to start afresh (its databases are lost)")
        else:
            password = saved.password
        base = saved or PostgresSettings(HOST, port, USER, "", str(data_dir), str(passfile_path(path)))
        settings = replace(base, host=HOST, port=port, password=password, data_dir=str(data_dir))
        settings.save(path)  # before the start: `stop` then finds the server even if the wait fails
        server_log = data_dir / LOG_NAME
        _run("pg_ctl", "-D", data_dir, "-l", server_log, "-w", "-t", "60", "-o", f"-p {port}", "start",
             what=f"Starting PostgreSQL on {HOST}:{port}", log_file=server_log)
        say(f"Started PostgreSQL on {HOST}:{port} (data {data_dir}; log {server_log})")
    for name in (settings.mlflow_database, settings.labelstudio_database):
        create_database(name, settings, exist_ok=True)
    settings.save(path)
    return settings


def stop(path: Optional[Path] = None) -> str:
    """Stop the cluster named by the settings (fast shutdown). Idempotent; says what it did."""
    path = Path(path or settings_path())
    saved = load_settings(path)
    if saved is None:
        return f"No PostgreSQL settings at {path}: nothing to stop"
    running = _postmaster(Path(saved.data_dir))
    if not running:
        return f"PostgreSQL ({saved.data_dir}) is not running"
    _run("pg_ctl", "-D", saved.data_dir, "-m", "fast", "-w", "-t", "60", "stop",
         what=f"Stopping PostgreSQL (pid {running[0]})", log_file=Path(saved.data_dir) / LOG_NAME)
    return f"PostgreSQL (pid {running[0]}, port {running[1]}) stopped"


def status(path: Optional[Path] = None) -> dict:
    """Where the settings are, whether the cluster runs and answers a query; never the password."""
    path = Path(path or settings_path())
    saved = load_settings(path)
    running = _postmaster(Path(saved.data_dir)) if saved else None
    info = {"settings_path": str(path), "configured": saved is not None, "running": running is not None,
            "answers": False, "pid": running[0] if running else None}
    if saved is not None:
        info.update(saved.describe())
        if running:
            try:
                with connect(replace(saved, port=running[1])) as conn:
                    info["answers"] = conn.execute("select 1").fetchone() == (1,)
            except PostgresError:
                pass
    return info


# --- databases ------------------------------------------------------------------------------------------------


def connect(settings: Optional[PostgresSettings] = None, database: str = "postgres"):
    """A psycopg connection (autocommit) to ``database`` on the cluster."""
    try:
        import psycopg
    except ImportError:
        raise PostgresError("MLflow's PostgreSQL driver is missing: `pip install 'psycopg[binary]'` "
                            "(scripts/setup.sh installs it)") from None
    settings = settings or require_settings()
    try:
        return psycopg.connect(host=settings.host, port=settings.port, user=settings.user, password=settings.password,
                               dbname=database, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise PostgresError(f"Cannot reach PostgreSQL at {settings.host}:{settings.port} (database {database}): "
                            f"{str(exc).strip()}; is it running? `alloop postgres status`") from None


def create_database(name: str, settings: Optional[PostgresSettings] = None, *, template: Optional[str] = None,
                    exist_ok: bool = False) -> str:
    """Create database ``name`` (a copy of ``template`` when given); with ``exist_ok`` an existing one is kept."""
    from psycopg import sql

    check_identifier(name)
    with connect(settings) as conn:
        if exist_ok and conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            return name
        statement = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" template {}").format(sql.Identifier(check_identifier(template)))
        conn.execute(statement)
    return name


def drop_database(name: str, settings: Optional[PostgresSettings] = None) -> None:
    """Drop database ``name`` if it exists, closing the connections still open to it."""
    from psycopg import sql

    with connect(settings) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(check_identifier(name))))
