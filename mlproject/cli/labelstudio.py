"""``alloop labelstudio install|start|stop|status|env``: a local Label Studio server.

Its own venv, 127.0.0.1, offline, local files; the connection settings are kept in
<state dir>/labelstudio.json and labelstudio.env (``scripts/labelstudio.sh`` runs these commands).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

import requests
import typer

from integrations.labelstudio import server
from integrations.labelstudio.settings import (
    LabelStudioError,
    default_settings_path,
    env_file_path,
    label_studio_executable,
    load_settings,
)
from mlproject.cli._app import app, fail

labelstudio_app = typer.Typer(
    help=(
        "Run a local Label Studio server (own venv, 127.0.0.1, offline, local files) and keep its "
        "connection settings in <state dir>/labelstudio.json and labelstudio.env."
    ),
    no_args_is_help=True,
)
app.add_typer(labelstudio_app, name="labelstudio", help="Install, start and stop a local Label Studio.")


@labelstudio_app.command("install")
def install_command() -> None:
    """Create the Label Studio venv ($ALLOOP_LS_VENV or .venv-labelstudio) and install it there."""
    try:
        server.install(say=typer.echo)
    except (LabelStudioError, subprocess.CalledProcessError) as exc:
        fail(str(exc))


@labelstudio_app.command("start")
def start_command(
    port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: the saved one, else 8080)"),
    data_dir: Optional[Path] = typer.Option(
        None, help="Database and uploads (default: <state dir>/labelstudio-data)"
    ),
    document_root: Optional[Path] = typer.Option(
        None, help="Root for local-files storage (default: <state dir>/files)"
    ),
    username: Optional[str] = typer.Option(
        None, help=f"Admin e-mail (default: saved, else {server.DEFAULT_USERNAME})"
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
            server.install(say=typer.echo)
        settings = server.start(
            port=port or (saved.port if saved else server.DEFAULT_PORT),
            data_dir=data_dir or (Path(saved.data_dir) if saved else None),
            document_root=document_root or (Path(saved.document_root) if saved else None),
            username=username or (saved.username if saved else server.DEFAULT_USERNAME),
            password=password,
            legacy_token=legacy_token,
            timeout=timeout,
            replace_token=replace_token,
            say=typer.echo,
        )
    except (LabelStudioError, subprocess.CalledProcessError, requests.RequestException) as exc:
        fail(str(exc))
    typer.echo(f"For a shell: source {env_file_path()}")
    typer.echo(
        f"Open {settings.url} and log in as {settings.username} (password in {default_settings_path()})"
    )


@labelstudio_app.command("stop")
def stop_command() -> None:
    """Stop the server recorded in the settings (SIGTERM, then SIGKILL after 10 s)."""
    typer.echo(server.stop())


@labelstudio_app.command("status")
def status_command() -> None:
    """Show whether the server runs and answers /health (exit code 1 when it does not)."""
    info = server.status()
    for key, value in info.items():
        typer.echo(f"{key:14} {value}")
    if not info["healthy"]:
        raise typer.Exit(1)


@labelstudio_app.command("env")
def env_command() -> None:
    """Print `export LABEL_STUDIO_URL=... LABEL_STUDIO_API_KEY=...` lines for `eval`."""
    saved = load_settings()
    if saved is None or not saved.api_key:
        fail("No Label Studio settings yet: run `start` first")
    typer.echo(saved.env_exports(), nl=False)
