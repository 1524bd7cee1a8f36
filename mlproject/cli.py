"""The ``alloop`` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

app = typer.Typer(help="alloop: train, register, serve and keep improving defect classifiers.",
                  no_args_is_help=True, add_completion=False)

from integrations.labelstudio.server import app as labelstudio_app  # noqa: E402

app.add_typer(labelstudio_app, name="labelstudio", help="Install, start and stop a local Label Studio.")

PROJECT_DIR = Path(__file__).resolve().parents[1]


def run_entry_point(entry_point: str, parameters: dict, *, experiment: str) -> str:
    """Run one MLflow project entry point in this environment; returns the run id."""
    import mlflow

    submitted = mlflow.projects.run(str(PROJECT_DIR), entry_point=entry_point, parameters=parameters,
                                    env_manager="local", experiment_name=experiment, synchronous=True)
    return submitted.run_id


@app.command()
def demo(
    weights: str = typer.Option("hed", help="imagenet | hed | none | weights file"),
    image_size: int = typer.Option(64, help="input size; small keeps the demo fast on a CPU"),
    experiment: str = typer.Option("alloop-demo", help="MLflow experiment for the demo runs"),
    model_name: str = typer.Option("alloop-demo-classifier", help="registered model name"),
):
    """Train and register all three VGG16 variants on the embedded SYNTHETIC data, then promote the best."""
    from integrations import mlflow_registry

    uri = mlflow_registry.configure_tracking()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    common = {"data": "synthetic", "weights": weights, "image_size": image_size, "registered_model_name": model_name}
    plan = [
        ("svm", {}),
        ("frozen", {"epochs": 20}),
        ("finetune", {"warmup_epochs": 5, "epochs": 10}),
    ]
    typer.secho("Training on SYNTHETIC DAGM-like textures (generated; not real inspection images).", fg="yellow")
    for entry_point, extra in plan:
        typer.secho(f"\n=== mlflow run . -e {entry_point} ===", bold=True)
        run_entry_point(entry_point, {**common, **extra}, experiment=experiment)
        typer.secho(f"\n=== mlflow run . -e promote (challenger from {entry_point}) ===", bold=True)
        run_entry_point("promote", {"model_name": model_name, "eval_data": "synthetic"}, experiment=experiment)
    champion = mlflow_registry.require(model_name, mlflow_registry.CHAMPION)
    typer.secho(f"\nChampion: {champion}", fg="green", bold=True)
    typer.echo(
        f"Look at the runs: mlflow ui --backend-store-uri {uri} --port 5000  then open http://127.0.0.1:5000\n"
        f"  experiment '{experiment}': params, per-epoch curves, evaluation/ artifacts (classification report,\n"
        f"  confusion matrix, ROC/PR curves); Models -> {model_name}: versions with aliases champion/challenger."
    )


def main() -> None:  # pragma: no cover
    sys.exit(app())
