"""Install, start, stop and inspect the local Label Studio server alloop works with.

`start` installs nothing itself (`install` does: Label Studio 1.23.2 in its own venv), starts the
server on 127.0.0.1 with offline settings and a local-files document root, creates the admin
non-interactively, obtains an API token and saves the connection settings (`settings.py`).
`alloop labelstudio ...` is the command line for all of it.

This module never imports `label_studio`: the server runs from its own venv as a subprocess.
Only `label_studio_sdk` (installed in the project venv) is used, to verify the token.
Progress goes to `say` (one line per call; the CLI prints it, everyone else gets log records).
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import requests

from integrations import postgres, processes
from integrations.labelstudio.settings import (
    LabelStudioError,
    LabelStudioSettings,
    TokenKind,
    default_data_dir,
    default_document_root,
    default_settings_path,
    label_studio_executable,
    load_settings,
    venv_dir,
)
from integrations.labelstudio.tokens import obtain_token, whoami

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_PORT = 8080
DEFAULT_USERNAME = "admin@alloop.local"
HOST = processes.LOOPBACK
# Both spellings: the `label-studio` script, and `python -m label_studio...` children.
COMMAND_MARKERS = ("label-studio", "label_studio")

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def install(venv: Optional[Path] = None, *, say: Say = log.info) -> Path:
    """Create the venv and install Label Studio into it unless it is already there."""
    venv = Path(venv or venv_dir())
    exe = label_studio_executable(venv)
    if exe.exists():
        say(f"Label Studio already installed: {exe}")
        return exe
    python = venv / "bin" / "python"
    if not python.exists():
        say(f"Creating venv {venv}")
        # sys.executable may itself be a venv python; `-m venv` then uses its base interpreter.
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    say(f"Installing label-studio=={LABEL_STUDIO_VERSION} into {venv} (about 70 s, 1 GB) ...")
    started = time.monotonic()
    # pip's output goes to a log (mirror configs can print hundreds of warnings); shown on failure.
    log_path = venv / "pip-install.log"
    with open(log_path, "w") as pip_log:
        for args in (["--upgrade", "pip"], [f"label-studio=={LABEL_STUDIO_VERSION}"]):
            result = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *args], stdout=pip_log, stderr=subprocess.STDOUT
            )
            if result.returncode != 0:
                tail = processes.log_tail(log_path)
                raise LabelStudioError(f"pip install {' '.join(args)} failed; end of {log_path}:\n{tail}")
    if not exe.exists():
        raise LabelStudioError(f"pip finished but {exe} is missing; inspect {venv}")
    say(f"Installed in {time.monotonic() - started:.0f} s: {exe}")
    return exe


def is_server_process(pid: Optional[int]) -> bool:
    """True when pid is a live Label Studio process (not a recycled pid of something else)."""
    return processes.is_ours(pid, *COMMAND_MARKERS)


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
        # Read only when the organisation is first created; later `tokens.obtain_token` switches it over the API.
        env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] = "true"
        env["LABEL_STUDIO_USER_TOKEN"] = legacy_token
    try:
        if postgres.selected():
            # ALLOOP_DB=postgres: the projects live in the local cluster's `labelstudio` database (started
            # here if it is not running); Label Studio 1.23 brings its driver (psycopg 3) itself.
            env.update(postgres.labelstudio_env(postgres.start()))
    except postgres.PostgresError as exc:
        raise LabelStudioError(f"Label Studio on PostgreSQL ({postgres.DB_ENV}=postgres): {exc}") from None
    return env


def _launch(*, exe: Path, port: int, data_dir: Path, env: dict) -> int:
    server_log = data_dir / "server.log"
    with open(server_log, "a") as out:
        out.write(f"\n=== alloop: starting Label Studio on {HOST}:{port} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    command = [exe, "start", "--no-browser", "--internal-host", HOST, "--port", str(port), "--data-dir", data_dir]
    return processes.spawn(command, log=server_log, env=env, cwd=data_dir, append=True)


def _health_is_up(response: requests.Response) -> bool:
    return response.ok and response.json().get("status") == "UP"


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return _health_is_up(requests.get(f"{url}/health", timeout=timeout))
    except (requests.RequestException, ValueError):
        return False


def wait_until_healthy(url: str, *, pid: int, data_dir: Path, timeout: float, say: Say = log.info) -> float:
    """Poll /health until UP, saying so every 15 s. Returns the seconds it took."""
    if is_healthy(url):
        return 0.0
    say(f"Waiting for {url}/health (first start on an empty data dir takes about a minute)")
    next_note = [15.0]

    def note(elapsed: float) -> None:
        if elapsed >= next_note[0]:
            say(f"  ... not up yet after {elapsed:.0f} s")
            next_note[0] += 15.0

    try:
        elapsed = processes.wait_http(
            f"{url}/health", timeout=timeout, pid=pid, log=Path(data_dir) / "server.log", what="Label Studio",
            ready=_health_is_up, interval=2.0, on_wait=note,
        )
    except processes.WaitFailed as exc:
        advice = "" if exc.exited else (
            "\nIt may still be migrating on a slow or busy machine: run `start` again with a larger "
            "--timeout (it reuses the running process), or `stop` and read the whole log."
        )
        raise LabelStudioError(f"{exc}{advice}") from None
    say(f"UP after {elapsed:.0f} s")
    return elapsed


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
    say: Say = log.info,
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
            say(f"Note: the running server keeps its document root {saved.document_root}")
            document_root = Path(saved.document_root)
        pid = saved.pid
        say(f"Label Studio already running (pid {pid}) at {saved.url}: reusing it")
    else:
        exe = label_studio_executable(venv)
        if not exe.exists():
            raise LabelStudioError(f"Label Studio is not installed ({exe} is missing): run `install` first")
        if processes.port_in_use(port):
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
        say(f"Started Label Studio {LABEL_STUDIO_VERSION} (pid {pid}) on {url}; log: {data_dir / 'server.log'}")
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

    wait_until_healthy(url, pid=pid, data_dir=data_dir, timeout=timeout, say=say)
    password = password or saved.password
    reusable_key = saved.api_key if same_database and saved.token_kind == kind else ""
    api_key = obtain_token(
        url, username, password, kind=kind, saved_key=reusable_key, replace=replace_token, say=say
    )
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
    say(f"Label Studio ready at {url} as {username} ({kind} token); settings: {settings_path}")
    return settings


def stop(settings_path: Optional[Path] = None) -> str:
    """Stop the server recorded in the settings. Idempotent; returns what it did."""
    settings_path = Path(settings_path or default_settings_path())
    saved = load_settings(settings_path)
    if saved is None:
        message = f"No Label Studio settings at {settings_path}: nothing to stop"
    elif not saved.pid:
        message = "Label Studio is not running (no pid recorded)"
    elif not is_server_process(saved.pid):
        message = f"Label Studio (pid {saved.pid}) is not running any more"
    else:
        message = f"Label Studio (pid {saved.pid}) {processes.terminate(saved.pid)}"
    if saved is not None and saved.pid:
        # Keep the rest: the token stays valid for the next start on the same data dir.
        saved.pid = None
        saved.save(settings_path)
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
