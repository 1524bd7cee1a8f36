"""``alloop postgres start|stop|status|env``: a local PostgreSQL for Label Studio and MLflow.

Its files are in <state dir>/postgres, its settings (with the password, mode 0600) in
<state dir>/postgres.json; ``ALLOOP_DB=postgres`` then puts Label Studio and the demo's MLflow on it
(``scripts/postgres.sh`` runs these commands). Nothing here prints the password.
"""

from __future__ import annotations

from typing import Optional

import typer

from integrations import postgres
from mlproject.cli._app import app, fail

postgres_app = typer.Typer(
    help=(
        "Run a local PostgreSQL (127.0.0.1, no system service) holding the `mlflow` and `labelstudio` "
        "databases; ALLOOP_DB=postgres puts Label Studio and the demo's MLflow on it."
    ),
    no_args_is_help=True,
)
app.add_typer(postgres_app, name="postgres", help="Start, stop and inspect a local PostgreSQL for Label Studio and MLflow.")


@postgres_app.command("start")
def start_command(
    port: Optional[int] = typer.Option(None, help=f"Port on 127.0.0.1 (default: the saved one, else {postgres.DEFAULT_PORT})"),
) -> None:
    """Create the cluster if needed, start it (or reuse the running one), make the databases; print the settings."""
    try:
        settings = postgres.start(port=port, say=typer.echo)
    except postgres.PostgresError as exc:
        fail(str(exc))
    for key, value in settings.describe().items():
        typer.echo(f"{key:19} {value}")
    typer.echo(f"Settings (password included, mode 0600): {postgres.settings_path()}")
    typer.echo("Use it: export ALLOOP_DB=postgres (Label Studio, the demo); MLflow commands in a shell: "
               'eval "$(alloop postgres env)"')


@postgres_app.command("stop")
def stop_command() -> None:
    """Stop the cluster recorded in the settings (fast shutdown: open sessions are closed)."""
    try:
        typer.echo(postgres.stop())
    except postgres.PostgresError as exc:
        fail(str(exc))


@postgres_app.command("status")
def status_command() -> None:
    """Show whether the cluster runs and answers (exit code 1 when it does not)."""
    info = postgres.status()
    for key, value in info.items():
        typer.echo(f"{key:19} {value}")
    if not info["answers"]:
        raise typer.Exit(1)


@postgres_app.command("env")
def env_command() -> None:
    """Print `export ALLOOP_DB=... PGPASSFILE=... MLFLOW_TRACKING_URI=...` lines for `eval`."""
    try:
        settings = postgres.require_settings()
    except postgres.PostgresError as exc:
        fail(str(exc))
    exports = {"ALLOOP_DB": "postgres", **postgres.client_env(settings),
               "MLFLOW_TRACKING_URI": postgres.mlflow_backend_uri(settings)}
    for key, value in exports.items():
        typer.echo(f"export {key}='{value}'")
