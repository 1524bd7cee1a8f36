"""The Typer app every command module registers on, and the helpers they share."""

from __future__ import annotations

import os
import warnings

import typer

# TensorFlow's start-up chatter and MLflow's advice to model authors say nothing a user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=r".*(type hints|input example|input_example).*", category=UserWarning)

from integrations.labelstudio.server import app as labelstudio_app

app = typer.Typer(help="alloop: train, register, serve and keep improving defect classifiers.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(labelstudio_app, name="labelstudio", help="Install, start and stop a local Label Studio.")


def fail(message: str) -> None:
    """Print an error that says what to do, and exit 1."""
    typer.secho(f"Error: {message}", fg="red", err=True)
    raise typer.Exit(1)
