"""What ``score`` reads and reports, without Spark: the image paths an input names, how executors
read the files, the model version it pins, how it splits the work, and the summary of a run.

Plain Python (the file system aside), so it is unit-tested without a Spark session; the Spark side
is :mod:`mlproject.serving.spark_scoring`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

from mlproject.data.loaders import IMAGE_SUFFIXES, DatasetError, manifest_rows, resolve_manifest_image

#: How an unreadable file's error begins (a model's decoding error begins "cannot decode image"):
#: the summary counts the two apart by it.
READ_ERROR = "cannot read file"
PATH_COLUMNS = ("path", "image")  # a Parquet input's column of image paths, first found wins
KINDS = ("folder", "manifest", "parquet")
INPUTS_HELP = ("a folder of images (searched recursively; " + ", ".join(sorted(IMAGE_SUFFIXES)) + "), "
               "a manifest .csv/.jsonl with an 'image' column, or a Parquet file/folder with a 'path' or "
               "'image' column of image paths")


class ScoringInputError(ValueError):
    """An input ``score`` cannot read; the message names the file or field and what to give instead."""


def read_error(path: str, reason: str) -> str:
    """The error a row gets when its file cannot be read (the model's decode errors name it the same way)."""
    return f"{READ_ERROR} {path!r}: {reason}"


def input_kind(path) -> str:
    """One of :data:`KINDS` for ``path``; :class:`ScoringInputError` saying what is accepted otherwise."""
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".jsonl"):
            return "manifest"
        if suffix == ".parquet":
            return "parquet"
        raise ScoringInputError(f"{path}: cannot score this file; give {INPUTS_HELP}")
    if not path.is_dir():
        raise ScoringInputError(f"{path}: no such file or folder; give {INPUTS_HELP}")
    # A Parquet dataset is a folder of part files (Spark writes _SUCCESS next to them), never images.
    entries = [p for p in path.iterdir() if p.is_file()]
    if any(p.suffix.lower() == ".parquet" for p in entries) and not any(
            p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
        return "parquet"
    return "folder"


@dataclass
class Listing:
    """What listing an input found: how many paths it wrote, and the files it left out (not images)."""

    n_paths: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def skip(self, path: str) -> None:
        self.skipped += 1
        if len(self.skipped_examples) < 5:
            self.skipped_examples.append(path)


def folder_images(folder, listing: Listing | None = None) -> Iterator[str]:
    """Absolute paths of the images under ``folder``, recursively, sorted within each folder.

    Hidden files and folders (``.name``) are not data; other files that are not images by extension
    are counted in ``listing`` (the summary reports them), never dropped unseen.
    """
    listing = listing if listing is not None else Listing()
    for root, dirs, files in os.walk(Path(folder).resolve()):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield full
            else:
                listing.skip(full)


def manifest_images(path) -> Iterator[str]:
    """The ``image`` column of a CSV or JSONL manifest (``label`` and the rest are not needed to score)."""
    path = Path(path)
    try:
        for number, row in manifest_rows(path, required=("image",)):
            image = str(row.get("image") or "").strip()
            if not image:
                raise ScoringInputError(f"{path}, line {number}: field 'image' is empty; give the image's path")
            yield resolve_manifest_image(image, path)
    except DatasetError as exc:
        raise ScoringInputError(str(exc)) from None


def write_path_list(source, kind: str, target: TextIO) -> Listing:
    """Stream the image paths of a folder or manifest into ``target``, one a line, so the driver
    never holds the whole list (Spark reads the file back as its input)."""
    listing = Listing()
    paths = folder_images(source, listing) if kind == "folder" else manifest_images(source)
    for path in paths:
        if "\n" in path or "\r" in path:
            raise ScoringInputError(f"{source}: the path {path!r} contains a line break; rename the file")
        target.write(path + "\n")
        listing.n_paths += 1
    return listing


def _bytes_reader(prefix: str):
    """The executors' file reader: ``paths`` -> ``image`` (bytes, or None) and ``read_error`` (None, or why).

    Self-contained on purpose (imports inside, nothing of ``mlproject``): Spark pickles it by value.
    A worker that has loaded the model imports ``mlproject`` from the copy stored with the model,
    which may predate this module, so a reference to it could not be unpickled there.
    """

    def read_image_bytes(paths):
        from pathlib import Path
        from urllib.parse import unquote, urlparse

        import pandas as pd

        images, errors = [], []
        for path in paths.tolist():
            try:
                if path.startswith("file:"):  # Spark writes local URIs as file:/a/b; users file:///a/b
                    parsed = urlparse(path)
                    if parsed.netloc not in ("", "localhost"):
                        raise ValueError(f"a file URI on another host ({parsed.netloc}) cannot be read here")
                    local = Path(unquote(parsed.path))
                elif "://" in path:
                    raise ValueError("not a local file; copy it to a path every executor can read")
                else:
                    local = Path(path)
                images.append(local.read_bytes())
                errors.append(None)
            except (OSError, ValueError) as exc:
                images.append(None)
                errors.append(f"{prefix} {path!r}: {getattr(exc, 'strerror', None) or exc}")
        return pd.DataFrame({"image": images, "source": paths.tolist(), "read_error": errors})

    return read_image_bytes


#: The executors' reader (Spark calls it a batch at a time; anything can on a ``pd.Series``).
read_image_bytes = _bytes_reader(READ_ERROR)


def parquet_path_column(columns) -> str:
    """The column of image paths in a Parquet input: ``path``, else ``image``."""
    for name in PATH_COLUMNS:
        if name in columns:
            return name
    raise ScoringInputError(f"the Parquet input has no column {' or '.join(map(repr, PATH_COLUMNS))} "
                            f"(columns: {', '.join(columns)}); name the column of image paths 'path'")


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def registry_reference(model_uri: str) -> tuple[str, str] | None:
    """``(name, alias or version)`` of a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI; None
    for any other URI (a run's model, a folder), which is scored as it is."""
    found = _MODELS_URI.match(model_uri.strip())
    if not found:
        return None
    return found["name"], found["alias"] or found["version"]


def partition_count(n_paths: int, parallelism: int, batch_size: int) -> int:
    """Tasks to split ``n_paths`` into: whole waves of one task per core (a last, partial wave would
    leave cores idle), as many waves as there are Arrow batches per core, up to four (they balance
    uneven files and move the progress bar; more only add Python round trips); never an empty task."""
    if n_paths <= 0:
        return 1
    cores = max(1, parallelism)
    waves = min(max(1, math.ceil(n_paths / (batch_size * cores))), 4)
    return min(waves * cores, n_paths)


@dataclass(frozen=True)
class ScoreSummary:
    """What a ``score`` run did; ``metrics()`` and ``params()`` are what the entry point logs."""

    n_images: int
    label_counts: dict[str, int]
    unreadable: int
    undecodable: int
    wall_seconds: float
    scoring_seconds: float
    model_uri: str
    model_version: str
    master: str
    batch_size: int
    partitions: int
    parquet: str
    csv: str
    skipped_files: int = 0

    @property
    def scored(self) -> int:
        return self.n_images - self.unreadable - self.undecodable

    @property
    def images_per_s(self) -> float:
        """Throughput of the scoring job itself (reading, decoding and the model); Spark's start is not in it."""
        return self.n_images / self.scoring_seconds if self.scoring_seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        labels = {f"label_{_metric_name(k)}": float(v) for k, v in self.label_counts.items()}
        return {"n_images": float(self.n_images), "scored_images": float(self.scored),
                "unreadable_files": float(self.unreadable), "undecodable_images": float(self.undecodable),
                "skipped_files": float(self.skipped_files), "images_per_s": self.images_per_s,
                "wall_seconds": self.wall_seconds, "scoring_seconds": self.scoring_seconds, **labels}

    def params(self) -> dict[str, str]:
        """What ran, under names of their own: ``mlflow run`` logs -P values as the shell saw them ('local[*]')."""
        return {"spark_master": self.master, "scored_model_version": self.model_version or self.model_uri,
                "partitions": str(self.partitions)}

    def to_dict(self) -> dict:
        return {**asdict(self), "scored": self.scored, "images_per_s": self.images_per_s}

    def lines(self) -> list[str]:
        counts = ", ".join(f"{label} {n}" for label, n in sorted(self.label_counts.items())) or "none"
        lines = [f"scored {self.n_images} images with {self.model_version or self.model_uri} on {self.master}: "
                 f"{counts}",
                 f"unreadable files {self.unreadable}, undecodable images {self.undecodable} "
                 "(each row's 'error' names the file and why)",
                 f"{self.images_per_s:.1f} images/s; {self.wall_seconds:.1f} s in all "
                 f"({self.scoring_seconds:.1f} s scoring, {self.partitions} tasks, Arrow batches of {self.batch_size})"]
        if self.skipped_files:
            lines.append(f"{self.skipped_files} file(s) under the folder are not images by extension: not scored")
        return lines + [f"Parquet: {self.parquet}", f"CSV: {self.csv}"]


def _metric_name(label: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces; errors have label "".
    return re.sub(r"[^\w\-./ ]", "_", label) if label else "none"
