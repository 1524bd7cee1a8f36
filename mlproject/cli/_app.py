"""The Typer app every command module registers on, and the helpers they share."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import typer

# TensorFlow's start-up chatter and MLflow's advice to model authors say nothing a user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=r".*(type hints|input example|input_example).*", category=UserWarning)

app = typer.Typer(help="alloop: train, register, serve and keep improving defect classifiers.",
                  no_args_is_help=True, add_completion=False)


def fail(message: str) -> None:
    """Print an error that says what to do, and exit 1."""
    typer.secho(f"Error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def tracking() -> str:
    """MLflow tracking set up (retries bounded by ALLOOP_MLFLOW_TIMEOUT) and, for an http(s) URI, the
    server answering; otherwise one line that names the URI and what to check, and exit 1."""
    from integrations import mlflow_registry

    try:
        uri = mlflow_registry.configure_tracking()
        mlflow_registry.check_tracking_server(uri)
    except (mlflow_registry.TrackingUnavailable, ValueError) as exc:
        fail(str(exc))
    return uri


@contextmanager
def mlflow_errors():
    """An MLflow error inside the block ends the command with one line, not a traceback."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        from integrations import mlflow_registry

        fail(mlflow_registry.one_line(exc))


def require_champion(model_name: str):
    """The champion's version reference, or the advice on making one, and exit 1."""
    from integrations import mlflow_registry
    from mlproject.serving.champion import no_champion_message

    tracking()
    with mlflow_errors():
        ref = mlflow_registry.resolve(model_name, mlflow_registry.CHAMPION)
    if ref is None:
        fail(no_champion_message(model_name))
    return ref
