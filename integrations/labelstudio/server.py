"""Install, start, stop and inspect a local Label Studio server for alloop.

One command (`alloop labelstudio start`, `scripts/labelstudio.sh start` or
`python -m integrations.labelstudio.server start`) installs Label Studio 1.23.2 into its own venv,
starts it on 127.0.0.1 with offline settings and a local-files document root, creates the admin
non-interactively, obtains an API token and writes the connection settings to
`<state_dir>/labelstudio.json` (for Python) and `<state_dir>/labelstudio.env` (for shells).

This module never imports `label_studio`: the server runs from its own venv as a subprocess.
Only `label_studio_sdk` (installed in the project venv) is used, to verify the token.

Environment overrides:
    ALLOOP_STATE_DIR  where settings, data and files live (default `<repo>/.alloop`)
    ALLOOP_LS_VENV    the Label Studio venv (default `<repo>/.venv-labelstudio`)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, Optional

import requests
import typer

from integrations.files import atomic_write

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_PORT = 8080
DEFAULT_USERNAME = "admin@alloop.local"
HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 10.0

REPO_ROOT = Path(__file__).resolve().parents[2]

TokenKind = Literal["pat", "legacy"]


class LabelStudioError(RuntimeError):
    """A problem the user can act on; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------------------------


def state_dir() -> Path:
    return Path(os.environ.get("ALLOOP_STATE_DIR") or REPO_ROOT / ".alloop").resolve()


def venv_dir() -> Path:
    return Path(os.environ.get("ALLOOP_LS_VENV") or REPO_ROOT / ".venv-labelstudio").resolve()


def default_settings_path() -> Path:
    return state_dir() / "labelstudio.json"


def default_data_dir() -> Path:
    return state_dir() / "labelstudio-data"


def default_document_root() -> Path:
    return state_dir() / "files"


def label_studio_executable(venv: Optional[Path] = None) -> Path:
    return Path(venv or venv_dir()) / "bin" / "label-studio"


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass
class LabelStudioSettings:
    """How to reach the running server. Holds secrets: written with mode 0600."""

    url: str
    api_key: str
    token_kind: TokenKind
    username: str
    data_dir: str
    document_root: str
    pid: Optional[int]
    port: int
    # Kept so a restarted server (same data dir) can be logged into again for a new token.
    password: str = ""

    def save(self, path: Optional[Path] = None) -> Path:
        """Write the JSON settings and, next to them, a `.env` file with shell exports."""
        path = Path(path or default_settings_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(asdict(self), indent=2) + "\n", private=True)
        atomic_write(env_file_path(path), self.env_exports(), private=True)
        return path

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "LabelStudioSettings":
        path = Path(path or default_settings_path())
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def env_exports(self) -> str:
        # The variable names the SDK and Label Studio's own tools read.
        return (
            f"export LABEL_STUDIO_URL={_shell_quote(self.url)}\n"
            f"export LABEL_STUDIO_API_KEY={_shell_quote(self.api_key)}\n"
        )


def env_file_path(settings_path: Optional[Path] = None) -> Path:
    return Path(settings_path or default_settings_path()).with_suffix(".env")


def load_settings(path: Optional[Path] = None) -> Optional[LabelStudioSettings]:
    """The saved settings, or None when there are none (or they cannot be read)."""
    path = Path(path or default_settings_path())
    if not path.exists():
        return None
    try:
        return LabelStudioSettings.load(path)
    except (ValueError, TypeError) as exc:
        print(f"Ignoring unreadable settings file {path}: {exc}", file=sys.stderr)
        return None


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


# ---------------------------------------------------------------------------------------------
# Install
# ---------------------------------------------------------------------------------------------


def install(venv: Optional[Path] = None) -> Path:
    """Create the venv and install Label Studio into it unless it is already there."""
    venv = Path(venv or venv_dir())
    exe = label_studio_executable(venv)
    if exe.exists():
        print(f"Label Studio already installed: {exe}")
        return exe
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"Creating venv {venv}")
        # sys.executable may itself be a venv python; `-m venv` then uses its base interpreter.
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"Installing label-studio=={LABEL_STUDIO_VERSION} into {venv} (about 70 s, 1 GB) ...", flush=True)
    started = time.monotonic()
    # pip's output goes to a log (mirror configs can print hundreds of warnings); shown on failure.
    log_path = venv / "pip-install.log"
    with open(log_path, "w") as log:
        for args in (["--upgrade", "pip"], [f"label-studio=={LABEL_STUDIO_VERSION}"]):
            result = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *args], stdout=log, stderr=subprocess.STDOUT
            )
            if result.returncode != 0:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                raise LabelStudioError(f"pip install {' '.join(args)} failed; end of {log_path}:\n{tail}")
    if not exe.exists():
        raise LabelStudioError(f"pip finished but {exe} is missing; inspect {venv}")
    print(f"Installed in {time.monotonic() - started:.0f} s: {exe}")
    return exe


# ---------------------------------------------------------------------------------------------
# Processes and ports
# ---------------------------------------------------------------------------------------------


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something listens on host:port (or the port cannot be bound there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR ignores TIME_WAIT leftovers, like Django's server does, but not listeners.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (for tests and parallel servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _reap(pid: int) -> bool:
    """Reap pid if it is our exited child. True while it is our child and cannot be reaped yet.

    A server started by this very process (tests) stays a zombie, "alive" to os.kill, until reaped;
    a multi-threaded one shows as a zombie before its last threads are gone.
    """
    try:
        reaped_pid, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child (or already reaped): init takes care of it
    return reaped_pid == 0


def is_server_process(pid: Optional[int]) -> bool:
    """True when pid is a live Label Studio process (not a recycled pid of something else)."""
    if not pid:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: a recycled pid, not our server
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no procfs (macOS): trust the pid
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = proc.joinpath("cmdline").read_bytes()
    except OSError:
        return False
    return b"label-studio" in cmdline or b"label_studio" in cmdline


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also "finds" zombies; only members that still run count.
    return _group_has_live_members(pgid)


def _group_has_live_members(pgid: int) -> bool:
    proc_root = Path("/proc")
    if not proc_root.exists():
        return True
    for stat in proc_root.glob("[0-9]*/stat"):
        try:
            stat_fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, process_group = stat_fields[0], int(stat_fields[2])
        if process_group == pgid and state != "Z":
            return True
    return False


def _signal(pid: int, sig: int, *, group: bool) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except ProcessLookupError:
        pass  # exited meanwhile


def terminate(pid: int, grace: float = STOP_GRACE_SECONDS) -> str:
    """SIGTERM a server's process group, SIGKILL it after `grace` seconds. Says what happened.

    Also used for the other servers alloop starts in their own session (the demo's backend and UI).
    """
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return "already gone"
    # start() makes the server a session leader (pgid == pid). Anything else is not a group we own
    # (never our own one): signal the process alone.
    group = pgid == pid and pgid != os.getpgid(0)
    _signal(pid, signal.SIGTERM, group=group)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = _group_alive(pid) if group else is_server_process(pid)
        if not alive and not _reap(pid):  # also leave no zombie behind in our own process
            return "stopped (SIGTERM)"
        time.sleep(0.2)
    _signal(pid, signal.SIGKILL, group=group)
    time.sleep(0.5)
    _reap(pid)
    return f"killed (SIGKILL after {grace:.0f} s)"


def _server_env(
    *,
    data_dir: Path,
    document_root: Path,
    username: str,
    password: str,
    legacy_token: Optional[str],
    venv: Path,
) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    home = data_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
            # A private HOME and data dir: otherwise it writes into ~/.local/share and ~/.config.
            "HOME": str(home),
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            # Offline: no Sentry, no analytics, no version check against pypi.
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
            # Tasks may point at images under the document root (/data/local-files/?d=...).
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
            # The alloop ML backend runs on 127.0.0.1; both guards would refuse it (403).
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            # Non-interactive admin, created on the first start of an empty data dir.
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        }
    )
    if legacy_token:
        # Read only when the organisation is first created; later `_legacy_token` switches it over the API.
        env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] = "true"
        env["LABEL_STUDIO_USER_TOKEN"] = legacy_token
    return env


def _launch(*, exe: Path, port: int, data_dir: Path, env: dict) -> int:
    log_path = data_dir / "server.log"
    with open(log_path, "a") as log:
        log.write(
            f"\n=== alloop: starting Label Studio on {HOST}:{port} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        )
        log.flush()
        proc = subprocess.Popen(
            [
                str(exe),
                "start",
                "--no-browser",
                "--internal-host",
                HOST,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            cwd=str(data_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: survives the CLI, and stop() kills it whole
        )
    return proc.pid


def _log_tail(data_dir: Path, lines: int = 30) -> str:
    log_path = Path(data_dir) / "server.log"
    if not log_path.exists():
        return "(no server.log)"
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# Health and tokens
# ---------------------------------------------------------------------------------------------


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        response = requests.get(f"{url}/health", timeout=timeout)
        return response.ok and response.json().get("status") == "UP"
    except (requests.RequestException, ValueError):
        return False


def wait_until_healthy(url: str, *, pid: int, data_dir: Path, timeout: float) -> float:
    """Poll /health until UP; prints progress dots. Returns the seconds it took."""
    if is_healthy(url):
        return 0.0
    started = time.monotonic()
    print(
        f"Waiting for {url}/health (first start on an empty data dir takes about a minute) ",
        end="",
        flush=True,
    )
    while True:
        if is_healthy(url):
            elapsed = time.monotonic() - started
            print(f" UP after {elapsed:.0f} s", flush=True)
            return elapsed
        if not is_server_process(pid):
            print(flush=True)
            raise LabelStudioError(
                f"Label Studio (pid {pid}) exited before it became healthy. Last lines of "
                f"{data_dir / 'server.log'}:\n{_log_tail(data_dir)}"
            )
        if time.monotonic() - started > timeout:
            print(flush=True)
            raise LabelStudioError(
                f"Label Studio (pid {pid}) is not healthy after {timeout:.0f} s. Last lines of "
                f"{data_dir / 'server.log'}:\n{_log_tail(data_dir)}\n"
                "It may still be migrating on a slow or busy machine: run `start` again with a larger "
                "--timeout (it reuses the running process), or `stop` and read the whole log."
            )
        print(".", end="", flush=True)
        time.sleep(2.0)


def _login(url: str, username: str, password: str) -> requests.Session:
    """A browser-like session: CSRF cookie from the login page, then the login form."""
    session = requests.Session()
    login_url = f"{url}/user/login/"
    session.get(login_url, timeout=30).raise_for_status()
    csrf = session.cookies.get("csrftoken", "")
    session.post(
        login_url,
        data={"email": username, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": login_url},
        timeout=30,
    )
    if session.get(f"{url}/api/current-user/whoami", timeout=30).status_code != 200:
        raise LabelStudioError(
            f"Could not log in to {url} as {username}. The data dir was probably created with another "
            "password: pass the right one with --password, or stop the server and delete the data dir."
        )
    # DRF's session auth checks CSRF on unsafe methods.
    session.headers.update({"X-CSRFToken": session.cookies.get("csrftoken", csrf), "Referer": login_url})
    return session


def _create_personal_access_token(session: requests.Session, url: str, *, replace: bool) -> Optional[str]:
    """A new PAT, or None when the user already has one (the server keeps only one, shown once)."""
    response = session.post(f"{url}/api/token/", timeout=30)
    if response.status_code == 409 and replace:
        # The listing shows each token without its signature, which is enough to revoke it.
        for token in session.get(f"{url}/api/token/", timeout=30).json():
            session.post(f"{url}/api/token/blacklist/", json={"refresh": token["token"]}, timeout=30)
        response = session.post(f"{url}/api/token/", timeout=30)
    if response.status_code == 409:
        return None
    response.raise_for_status()
    return response.json()["token"]


def _legacy_token(session: requests.Session, url: str) -> str:
    # The env switch only applies to a new organisation; an existing one is switched over the API.
    jwt_settings = session.get(f"{url}/api/jwt/settings", timeout=30)
    jwt_settings.raise_for_status()
    if not jwt_settings.json().get("legacy_api_tokens_enabled"):
        print("Enabling legacy API tokens for the organisation")
        session.post(
            f"{url}/api/jwt/settings",
            json={**jwt_settings.json(), "legacy_api_tokens_enabled": True},
            timeout=30,
        ).raise_for_status()
    response = session.get(f"{url}/api/current-user/token", timeout=30)
    response.raise_for_status()
    return response.json()["token"]


def whoami(url: str, api_key: str):
    """The SDK's view of the token's user; raises if the token does not work."""
    from label_studio_sdk.client import LabelStudio  # project venv; the SDK exchanges PATs itself

    return LabelStudio(base_url=url, api_key=api_key).users.whoami()


def token_works(url: str, api_key: str) -> bool:
    if not api_key:
        return False
    try:
        whoami(url, api_key)
        return True
    except Exception:  # the SDK raises its own ApiError subclasses; any failure means "not usable"
        return False


def obtain_token(
    url: str, username: str, password: str, *, kind: TokenKind, saved_key: str = "", replace: bool = False
) -> str:
    """An API token of `kind` for the admin, reusing `saved_key` when it still works."""
    if saved_key and not replace and token_works(url, saved_key):
        return saved_key
    session = _login(url, username, password)
    if kind == "legacy":
        return _legacy_token(session, url)
    token = _create_personal_access_token(session, url, replace=replace)
    if token is None:
        raise LabelStudioError(
            f"{username} already has a personal access token and it is not in the saved settings "
            "(the server shows a token only once). To recover: run `start --replace-token` (revokes the "
            "old token and creates a new one), or create one in the UI (Account & Settings > Personal "
            "Access Token) and put it in the settings file, or use `--legacy-token`, or stop the server "
            "and delete the data dir."
        )
    return token


# ---------------------------------------------------------------------------------------------
# Start, stop, status
# ---------------------------------------------------------------------------------------------


def start(
    *,
    port: int = DEFAULT_PORT,
    data_dir: Optional[Path] = None,
    document_root: Optional[Path] = None,
    username: str = DEFAULT_USERNAME,
    password: Optional[str] = None,
    legacy_token: bool = False,
    timeout: float = 180,
    settings_path: Optional[Path] = None,
    venv: Optional[Path] = None,
    replace_token: bool = False,
) -> LabelStudioSettings:
    """Start Label Studio in the background (or reuse the running one), get a token, save settings.

    Idempotent: when the settings at `settings_path` name a live server with the same port and data
    dir, that server and its saved token are reused. `legacy_token=True` returns a legacy
    `Token <key>` instead of a personal access token (JWT refresh token, the default).
    """
    settings_path = Path(settings_path or default_settings_path())
    data_dir = Path(data_dir or default_data_dir()).resolve()
    document_root = Path(document_root or default_document_root()).resolve()
    url = f"http://{HOST}:{port}"
    kind: TokenKind = "legacy" if legacy_token else "pat"
    saved = load_settings(settings_path)
    # Saved credentials only apply to the same admin in the same database.
    same_database = saved is not None and Path(saved.data_dir) == data_dir and saved.username == username

    if saved is not None and is_server_process(saved.pid):
        if saved.port != port or Path(saved.data_dir) != data_dir:
            raise LabelStudioError(
                f"A Label Studio server recorded in {settings_path} already runs (pid {saved.pid}, "
                f"{saved.url}, data dir {saved.data_dir}). Stop it first, or start with the same "
                "--port and --data-dir to reuse it."
            )
        if Path(saved.document_root) != document_root:
            print(f"Note: the running server keeps its document root {saved.document_root}")
            document_root = Path(saved.document_root)
        pid = saved.pid
        print(f"Label Studio already running (pid {pid}) at {saved.url}: reusing it")
    else:
        exe = label_studio_executable(venv)
        if not exe.exists():
            raise LabelStudioError(f"Label Studio is not installed ({exe} is missing): run `install` first")
        if port_in_use(port):
            raise LabelStudioError(
                f"Port {port} on {HOST} is already in use; Label Studio would silently move to another "
                "port. Stop whatever listens there (`stop`, if it is a server of ours) or choose "
                "another --port."
            )
        password = password or (saved.password if same_database else "") or secrets.token_urlsafe(18)
        data_dir.mkdir(parents=True, exist_ok=True)
        document_root.mkdir(parents=True, exist_ok=True)
        env = _server_env(
            data_dir=data_dir,
            document_root=document_root,
            username=username,
            password=password,
            legacy_token=secrets.token_hex(20) if legacy_token else None,
            venv=exe.parent.parent,
        )
        pid = _launch(exe=exe, port=port, data_dir=data_dir, env=env)
        print(
            f"Started Label Studio {LABEL_STUDIO_VERSION} (pid {pid}) on {url}; log: {data_dir / 'server.log'}"
        )
        # Save at once: `stop` then works and the admin password is kept even if the wait fails.
        saved = LabelStudioSettings(
            url=url,
            api_key=saved.api_key if same_database else "",
            token_kind=saved.token_kind if same_database else kind,
            username=username,
            data_dir=str(data_dir),
            document_root=str(document_root),
            pid=pid,
            port=port,
            password=password,
        )
        saved.save(settings_path)

    wait_until_healthy(url, pid=pid, data_dir=data_dir, timeout=timeout)
    password = password or saved.password
    reusable_key = saved.api_key if same_database and saved.token_kind == kind else ""
    api_key = obtain_token(url, username, password, kind=kind, saved_key=reusable_key, replace=replace_token)
    user = whoami(url, api_key)
    if (user.email or "").lower() != username.lower():
        raise LabelStudioError(f"The token belongs to {user.email}, not {username}")
    settings = LabelStudioSettings(
        url=url,
        api_key=api_key,
        token_kind=kind,
        username=username,
        data_dir=str(data_dir),
        document_root=str(document_root),
        pid=pid,
        port=port,
        password=password,
    )
    settings.save(settings_path)
    print(f"Label Studio ready at {url} as {username} ({kind} token); settings: {settings_path}")
    return settings


def stop(settings_path: Optional[Path] = None) -> str:
    """Stop the server recorded in the settings. Idempotent; returns (and prints) what it did."""
    settings_path = Path(settings_path or default_settings_path())
    saved = load_settings(settings_path)
    if saved is None:
        message = f"No Label Studio settings at {settings_path}: nothing to stop"
    elif not saved.pid:
        message = "Label Studio is not running (no pid recorded)"
    elif not is_server_process(saved.pid):
        message = f"Label Studio (pid {saved.pid}) is not running any more"
    else:
        message = f"Label Studio (pid {saved.pid}) {terminate(saved.pid)}"
    if saved is not None and saved.pid:
        # Keep the rest: the token stays valid for the next start on the same data dir.
        saved.pid = None
        saved.save(settings_path)
    print(message)
    return message


def status(settings_path: Optional[Path] = None) -> dict:
    """Where the settings are, whether the recorded server runs and answers /health."""
    settings_path = Path(settings_path or default_settings_path())
    saved = load_settings(settings_path)
    running = saved is not None and is_server_process(saved.pid)
    return {
        "settings_path": str(settings_path),
        "configured": saved is not None,
        "running": running,
        "healthy": running and is_healthy(saved.url),
        "url": saved.url if saved else None,
        "pid": saved.pid if running else None,
        "token_kind": saved.token_kind if saved else None,
        "username": saved.username if saved else None,
        "data_dir": saved.data_dir if saved else None,
        "document_root": saved.document_root if saved else None,
        "installed": label_studio_executable().exists(),
    }


# ---------------------------------------------------------------------------------------------
# CLI: `alloop labelstudio ...` or `python -m integrations.labelstudio.server ...`
# ---------------------------------------------------------------------------------------------

app = typer.Typer(
    help=(
        "Run a local Label Studio server (own venv, 127.0.0.1, offline, local files) and keep its "
        "connection settings in <state dir>/labelstudio.json and labelstudio.env."
    ),
    no_args_is_help=True,
)


def _fail(exc: Exception) -> None:
    typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command("install")
def install_command() -> None:
    """Create the Label Studio venv ($ALLOOP_LS_VENV or .venv-labelstudio) and install it there."""
    try:
        install()
    except (LabelStudioError, subprocess.CalledProcessError) as exc:
        _fail(exc)


@app.command("start")
def start_command(
    port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: the saved one, else 8080)"),
    data_dir: Optional[Path] = typer.Option(
        None, help="Database and uploads (default: <state dir>/labelstudio-data)"
    ),
    document_root: Optional[Path] = typer.Option(
        None, help="Root for local-files storage (default: <state dir>/files)"
    ),
    username: Optional[str] = typer.Option(
        None, help=f"Admin e-mail (default: saved, else {DEFAULT_USERNAME})"
    ),
    password: Optional[str] = typer.Option(
        None, envvar="ALLOOP_LS_PASSWORD", help="Admin password (default: saved, else generated and saved)"
    ),
    legacy_token: bool = typer.Option(
        False, "--legacy-token", help="Use a legacy `Token <key>` instead of a PAT"
    ),
    replace_token: bool = typer.Option(
        False,
        "--replace-token",
        help="Revoke the admin's existing personal access token and create a new one",
    ),
    timeout: float = typer.Option(180, help="Seconds to wait for /health"),
) -> None:
    """Install if needed, start (or reuse) the server, get a token and save the settings."""
    saved = load_settings()
    try:
        if not label_studio_executable().exists():
            install()
        settings = start(
            port=port or (saved.port if saved else DEFAULT_PORT),
            data_dir=data_dir or (Path(saved.data_dir) if saved else None),
            document_root=document_root or (Path(saved.document_root) if saved else None),
            username=username or (saved.username if saved else DEFAULT_USERNAME),
            password=password,
            legacy_token=legacy_token,
            timeout=timeout,
            replace_token=replace_token,
        )
    except (LabelStudioError, subprocess.CalledProcessError, requests.RequestException) as exc:
        _fail(exc)
    typer.echo(f"For a shell: source {env_file_path()}")
    typer.echo(
        f"Open {settings.url} and log in as {settings.username} (password in {default_settings_path()})"
    )


@app.command("stop")
def stop_command() -> None:
    """Stop the server recorded in the settings (SIGTERM, then SIGKILL after 10 s)."""
    stop()


@app.command("status")
def status_command() -> None:
    """Show whether the server runs and answers /health (exit code 1 when it does not)."""
    info = status()
    for key, value in info.items():
        typer.echo(f"{key:14} {value}")
    if not info["healthy"]:
        raise typer.Exit(1)


@app.command("env")
def env_command() -> None:
    """Print `export LABEL_STUDIO_URL=... LABEL_STUDIO_API_KEY=...` lines for `eval`."""
    saved = load_settings()
    if saved is None or not saved.api_key:
        typer.secho("No Label Studio settings yet: run `start` first", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(saved.env_exports(), nl=False)


if __name__ == "__main__":
    app()
