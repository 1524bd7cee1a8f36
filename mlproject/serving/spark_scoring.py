"""Score an archive of images with a registered model on Spark (local or a cluster).

The driver only lists paths (streamed to a text file under the output folder, so its memory does
not grow with the archive); executors read each file's bytes in a pandas UDF and score them with
``mlflow.pyfunc.spark_udf`` (``env_manager="local"``: the executors run this environment). A file
that cannot be read, or does not decode, becomes a row whose ``error`` names it; the job goes on.

Output, under ``output``: ``scores.parquet`` (a Spark dataset) and ``scores.csv`` (one file, sorted
by path), columns ``path, p_defect, label, model_version, error``; ``p_defect`` is empty where
``error`` is not. An alias (``@champion``) is resolved once, so every row is scored by one version.

On a cluster (``master`` other than ``local``), the executors need the packages of this environment
(mlflow, TensorFlow, ...; alloop itself travels with the model and the UDF) and the input and output
paths mounted where the driver sees them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from mlproject.serving.spark_inputs import (
    INPUTS_HELP,
    READ_ERROR,
    Listing,
    ScoreSummary,
    ScoringInputError,
    input_kind,
    parquet_path_column,
    partition_count,
    read_image_bytes,
    registry_reference,
    write_path_list,
)

logger = logging.getLogger("alloop.score")

DEFAULT_MODEL_URI = "models:/alloop-defect-classifier@champion"
DEFAULT_MASTER = "local[*]"
DEFAULT_BATCH_SIZE = 64  # rows per Arrow batch: one model call; ~3 MB decoded per 512 px image
OUTPUT_COLUMNS = ("path", "p_defect", "label", "model_version", "error")
RESULT_TYPE = "p_defect double, label string, model_version string, error string"


class ScoringError(RuntimeError):
    """``score`` cannot start or finish; the message says what to do."""


@dataclass(frozen=True)
class ScoreSettings:
    images: Path
    output: Path
    model_uri: str = DEFAULT_MODEL_URI
    master: str = DEFAULT_MASTER
    batch_size: int = DEFAULT_BATCH_SIZE
    progress: bool = True  # Spark's console progress bar (stage: done + running / tasks)

    def __post_init__(self):
        if int(self.batch_size) < 1:
            raise ScoringInputError(f"batch_size must be at least 1, got {self.batch_size}")


def _python_env() -> None:
    # The workers must run this interpreter (the one with TensorFlow, mlflow and alloop installed).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def spark_session(master: str = DEFAULT_MASTER, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True):
    """A Spark session for scoring: quiet logs (WARN), no web UI, Arrow batches of ``batch_size``.

    Each task's Python worker runs TensorFlow on one thread, the one CPU Spark gives a task
    (``spark.task.cpus`` = 1): N task slots then use N cores, not N times all of them.
    """
    _python_env()
    # pyspark 4.3 warns that it does not "fully support" pandas 3; nothing here a user can act on.
    warnings.filterwarnings("ignore", message=r"PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark.sql import SparkSession

    threads = "1"
    builder = (SparkSession.builder.master(master).appName("alloop-score")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", str(bool(progress)).lower())
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(int(batch_size)))
               .config("spark.executorEnv.TF_NUM_INTRAOP_THREADS", threads)
               .config("spark.executorEnv.TF_NUM_INTEROP_THREADS", threads)
               .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _read_and_score(model_batches, read):
    """A pandas UDF body: batches of paths -> the model's output rows, one Python worker doing both.

    ``model_batches`` is the function ``mlflow.pyfunc.spark_udf`` wraps (batches of struct(image,
    source) -> its results; it loads the model once per worker). Called here rather than as a second
    UDF because Spark gives two UDFs in a row two Python workers per task, and the model would be
    loaded in both. An unreadable file goes to the model as null bytes; its read error replaces the
    model's.
    """

    def read_and_score(path_batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        from collections import deque

        read_errors = deque()  # the model yields exactly one output per non-empty input, in order

        def model_input():
            for paths in path_batches:
                if len(paths):
                    frame = read(paths)
                    read_errors.append(frame.pop("read_error"))
                    yield frame

        for out in model_batches(model_input()):
            errors = read_errors.popleft()
            failed = errors.notna().to_numpy()
            if failed.any():
                out = out.copy()
                out.loc[failed, "error"] = errors[failed].to_numpy()
                out.loc[failed, "p_defect"] = float("nan")
                out.loc[failed, "label"] = ""
            yield out

    return read_and_score


def pinned_model(model_uri: str) -> tuple[str, str]:
    """``(uri, model_version)``: an alias resolved to ``models:/NAME/VERSION`` (the champion may move
    while a long job runs; every row is scored by the version found now), other URIs as given."""
    from integrations import mlflow_registry

    found = registry_reference(model_uri)
    if found is None:
        return model_uri, ""
    name, ref = found
    version = mlflow_registry.resolve(name, ref)
    if version is None and ref == mlflow_registry.CHAMPION:
        from mlproject.serving.champion import no_champion_message

        raise ScoringError(f"{model_uri}: {no_champion_message(name)}")
    if version is None:
        raise ScoringError(f"{model_uri}: registered model {name!r} has no version or alias {ref!r} in "
                           f"{mlflow_registry.redact(mlflow_registry.mlflow.get_tracking_uri())}; check the URI "
                           "and MLFLOW_TRACKING_URI")
    return version.uri, str(version)


def list_paths(images: Path, kind: str, scratch: Path) -> tuple[Path, Listing]:
    """A folder's or manifest's image paths, written to ``scratch/paths.txt`` (before Spark starts:
    an input without images fails fast); what listing left out is logged."""
    scratch.mkdir(parents=True, exist_ok=True)
    listed = scratch / "paths.txt"
    with listed.open("w") as handle:
        listing = write_path_list(images, kind, handle)
    if listing.skipped:
        logger.warning("%s: %d file(s) are not images by extension and are not scored, e.g. %s", images,
                       listing.skipped, ", ".join(listing.skipped_examples))
    if not listing.n_paths:
        raise ScoringInputError(f"{images}: no images to score in this {kind}; give {INPUTS_HELP}")
    return listed, listing


def parquet_paths(spark, images: Path):
    """The ``path`` (or ``image``) column of a Parquet input, as a one-column ``path`` DataFrame."""
    from pyspark.sql import functions as F

    frame = spark.read.parquet(str(images))
    column = parquet_path_column(frame.columns)
    kind = dict(frame.dtypes)[column]
    if kind != "string":
        raise ScoringInputError(f"{images}: column {column!r} is {kind}, not string; it must hold image paths")
    return frame.select(F.col(column).alias("path")).where(F.col("path").isNotNull())


def score_frame(paths, model_uri: str, model_version: str = ""):
    """``paths`` (one column ``path``) scored: the :data:`OUTPUT_COLUMNS`; nothing runs until written."""
    import mlflow
    from pyspark.sql import functions as F

    config = {"model_version": model_version} if model_version else None
    # env_manager="local" is deliberate (the executors run this environment); MLflow warns about it each call.
    mlflow_log = logging.getLogger("mlflow.pyfunc")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.ERROR)
    try:
        predict = mlflow.pyfunc.spark_udf(paths.sparkSession, model_uri, result_type=RESULT_TYPE,
                                          env_manager="local", model_config=config)
    finally:
        mlflow_log.setLevel(level)
    model_batches = getattr(predict, "func", None)  # pyspark's UDF wrapper keeps the Python function here
    if not callable(model_batches):
        raise ScoringError("mlflow.pyfunc.spark_udf returned a UDF without its Python function (.func); this mlflow/"
                           "pyspark pair is not supported: install the versions pyproject.toml names")
    score = F.pandas_udf(_read_and_score(model_batches, read_image_bytes), returnType=RESULT_TYPE)
    return paths.select("path", score(F.col("path")).alias("scored")).select(
        "path", *(F.col(f"scored.{name}").alias(name) for name in OUTPUT_COLUMNS[1:]))


def _write_csv(frame, target: Path, scratch: Path) -> None:
    """One CSV file sorted by path (from the written Parquet: nothing is scored twice)."""
    folder = scratch / "csv"
    (frame.orderBy("path").coalesce(1).write.mode("overwrite")
     .option("header", True).option("escape", '"').option("emptyValue", "").csv(str(folder)))
    part = next(folder.glob("part-*.csv"))
    shutil.move(str(part), target)


def _counts(frame) -> tuple[dict[str, int], int, int]:
    from pyspark.sql import functions as F

    row = frame.agg(F.sum(F.col("error").startswith(READ_ERROR).cast("int")).alias("unreadable"),
                    F.sum((F.col("error") != "").cast("int")).alias("errors")).first()
    labels = {r["label"]: int(r["count"]) for r in frame.where(F.col("label") != "").groupBy("label").count().collect()}
    unreadable, errors = int(row["unreadable"] or 0), int(row["errors"] or 0)
    return labels, unreadable, errors - unreadable


def score_archive(settings: ScoreSettings, *, spark=None, say: Callable[[str], None] = print) -> ScoreSummary:
    """Score every image ``settings.images`` names; write Parquet and CSV under ``settings.output``.

    ``spark``: a session to use (default: the active one, if any; its master wins over
    ``settings.master``); else one is started for this call and stopped at the end.
    """
    started = time.perf_counter()
    output = Path(settings.output).resolve()
    images = Path(settings.images)
    kind = input_kind(images)  # a bad input or model fails before Spark starts
    uri, version = pinned_model(settings.model_uri)
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()  # a caller's session (a notebook, tests) is theirs to stop
    own = spark is None
    scratch = output / "_scratch"
    try:
        listed, listing = list_paths(images, kind, scratch) if kind != "parquet" else (None, Listing())
        if own:
            spark = spark_session(settings.master, batch_size=settings.batch_size, progress=settings.progress)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(int(settings.batch_size)))
        master = spark.sparkContext.master
        if listed is not None:
            paths, n = spark.read.text(str(listed)).withColumnRenamed("value", "path"), listing.n_paths
        else:
            paths = parquet_paths(spark, images)
            n = paths.count()
            if not n:
                raise ScoringInputError(f"{images}: the Parquet input has no image paths")
        partitions = partition_count(n, spark.sparkContext.defaultParallelism, settings.batch_size)
        say(f"scoring {n} images ({kind} {images}) with {version or uri} on {master}: "
            f"{partitions} tasks, Arrow batches of {settings.batch_size}")
        parquet, csv = output / "scores.parquet", output / "scores.csv"
        scoring_started = time.perf_counter()
        score_frame(paths.repartition(partitions), uri, version).write.mode("overwrite").parquet(str(parquet))
        scoring_s = time.perf_counter() - scoring_started
        written = spark.read.parquet(str(parquet))
        _write_csv(written, csv, scratch)
        labels, unreadable, undecodable = _counts(written)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if own and spark is not None:
            spark.stop()
    return ScoreSummary(n_images=n, label_counts=labels, unreadable=unreadable, undecodable=undecodable,
                        wall_seconds=time.perf_counter() - started, scoring_seconds=scoring_s,
                        model_uri=settings.model_uri, model_version=version, master=master,
                        batch_size=int(settings.batch_size), partitions=partitions, parquet=str(parquet), csv=str(csv),
                        skipped_files=listing.skipped)
