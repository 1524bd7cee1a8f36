"""``alloop score``: an archive of images scored on Spark by the champion (or any registered version).

The options parsed into a :class:`~mlproject.serving.spark_scoring.ScoreSettings`, handed to
:func:`~mlproject.serving.spark_scoring.score_archive`, and its summary printed. Nothing is logged
to MLflow here; ``mlflow run . -e score`` does the same inside a run.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlproject.cli._app import app, fail, mlflow_errors, tracking


@app.command()
def score(
    images: Path = typer.Option(..., "--images", exists=True, help="a folder of images (searched recursively), a "
                                "manifest .csv/.jsonl with an 'image' column, or Parquet with a 'path' column"),
    output: Path = typer.Option(Path("scores"), "--output", help="folder for scores.parquet and scores.csv"),
    model_name: str = typer.Option("alloop-defect-classifier", "--model-name", envvar="ALLOOP_MODEL_NAME",
                                   help="registered model whose champion scores (unless --model-uri)"),
    model_uri: str = typer.Option(None, "--model-uri", show_default=False,
                                  help="models:/NAME@ALIAS or models:/NAME/VERSION instead of NAME@champion"),
    master: str = typer.Option("local[*]", "--master", help="Spark master: local[*], local[N] or a cluster URL"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="rows per Arrow batch, i.e. per model call"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Spark's console progress bar"),
):
    """Score an archive of images with the champion on Spark.

    Writes scores.parquet and scores.csv (path, p_defect, label, model_version, error) under --output.
    A file that cannot be read or decoded gets a row naming it and why; the job goes on.
    """
    from mlproject.serving.spark_inputs import ScoringInputError
    from mlproject.serving.spark_scoring import ScoreSettings, ScoringError, score_archive

    tracking()
    uri = model_uri or f"models:/{model_name}@champion"
    try:
        settings = ScoreSettings(images=images, output=output, model_uri=uri, master=master, batch_size=batch_size,
                                 progress=progress)
        with mlflow_errors():
            summary = score_archive(settings, say=typer.echo)
    except (ScoringInputError, ScoringError) as exc:
        fail(str(exc))
    for line in summary.lines():
        typer.echo(line)
