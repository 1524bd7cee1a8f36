"""``score``: score an archive of images with a registered model on Spark; log the summary and the CSV.

The images: a folder (recursive), a manifest .csv/.jsonl (column ``image``) or a Parquet file/folder
(column ``path`` or ``image``). Writes ``scores.parquet`` and ``scores.csv`` under ``--output``
(see :mod:`mlproject.serving.spark_scoring`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import mlflow

from integrations import mlflow_registry, mlflow_runs
from mlproject.serving import spark_scoring
from mlproject.serving.spark_inputs import ScoringInputError
from mlproject.training import common


def build_parser() -> argparse.ArgumentParser:
    """Every option of this entry point; MLproject declares each as a parameter."""
    parser = argparse.ArgumentParser(prog="score", description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True,
                        help="folder of images, manifest .csv/.jsonl (column image) or Parquet (column path or image)")
    parser.add_argument("--model-uri", default=spark_scoring.DEFAULT_MODEL_URI,
                        help="models:/NAME@ALIAS or models:/NAME/VERSION (an alias is resolved once, at the start)")
    parser.add_argument("--master", default=spark_scoring.DEFAULT_MASTER,
                        help="Spark master: local[*], local[N] or a cluster URL (spark://host:7077, yarn)")
    parser.add_argument("--batch-size", type=common.integer, default=spark_scoring.DEFAULT_BATCH_SIZE,
                        help="rows per Arrow batch, i.e. per model call (bounds each worker's memory)")
    parser.add_argument("--output", default="scores", help="folder for scores.parquet and scores.csv")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    settings = spark_scoring.ScoreSettings(images=Path(args.images), output=Path(args.output),
                                           model_uri=args.model_uri, master=args.master, batch_size=args.batch_size,
                                           progress=sys.stderr.isatty())  # no progress bar in a log file
    mlflow_registry.configure_tracking()
    with mlflow.start_run(run_name=f"score-{Path(args.images).name}"):
        mlflow.set_tags({"task": "score"})
        mlflow_runs.log_params(vars(args))
        try:
            summary = spark_scoring.score_archive(settings)
        except (ScoringInputError, spark_scoring.ScoringError) as exc:
            mlflow.set_tag("error", str(exc)[:500])
            raise SystemExit(f"score: {exc}") from None
        mlflow_runs.log_params(summary.params())
        mlflow.log_metrics(summary.metrics())
        mlflow.set_tags({"scored_model_version": summary.model_version or summary.model_uri})
        mlflow.log_artifact(summary.csv, artifact_path="scores")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "summary.json"
            path.write_text(json.dumps(summary.to_dict(), indent=2))
            mlflow.log_artifact(str(path), artifact_path="scores")
        run_id = mlflow.active_run().info.run_id
    for line in summary.lines():
        print(line)
    print(f"MLflow run {run_id}: summary as params/metrics, scores/scores.csv and scores/summary.json as artifacts")


if __name__ == "__main__":
    main()
