"""One simulation as ``alloop simulate`` runs it: the dataset read, its backbone features (cached),
the loop replayed for every strategy, auto-label mode and seed, and all of it logged as one MLflow
run (params, curves and summary CSVs, the learning-curve PNG, metrics per strategy and mode).

The replay itself is :mod:`mlproject.loop.simulate`, the features :mod:`mlproject.loop.feature_cache`.
What a person waiting should see along the way goes to ``notify``; how it is shown is the caller's.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np
from mlflow.entities import Metric

from integrations import mlflow_registry, mlflow_runs
from mlproject.data.decode import BadImageError
from mlproject.data.loaders import DatasetError, load_dataset, manifest_hash
from mlproject.data.sizing import AUTO, parse_image_size, resolve_image_size
from mlproject.loop.feature_cache import FeatureSet, backbone_features
from mlproject.loop.simulate import SimulationConfig, config_params, plot_learning_curves, simulate, summarize
from mlproject.models.backbone import describe_weights
from mlproject.models.feature_transforms import DEFAULT_FEATURES

SYNTHETIC = "synthetic"
#: Layouts whose runs are named after the DAGM class rather than the data folder.
PATTERN_LAYOUTS = ("auto", "dagm", "dagm-dev")
#: Images each class needs: some for the fixed test split, two for the initial batch.
MIN_PER_CLASS = 3
#: The tracking store takes at most 1000 metrics per batch.
METRICS_PER_BATCH = 900

Notify = Callable[[str, bool], None]  # (message, is it a warning)


def _quiet(message: str, warning: bool) -> None:
    pass


@dataclass(frozen=True)
class SimulationRun:
    """What one simulation reads, replays and logs; the defaults are ``alloop simulate``'s."""

    config: SimulationConfig = field(default_factory=SimulationConfig)
    data: str = SYNTHETIC  # dataset folder or manifest; "synthetic": generated DAGM-like textures
    layout: str = "auto"
    pattern: str = "Class1"
    positive_label: str = "defect"
    weights: str = "hed"
    image_size: int | str = AUTO
    pooling: str = DEFAULT_FEATURES.pooling
    feature_layers: tuple[str, ...] = DEFAULT_FEATURES.layers
    skip_bad_images: bool = False
    cache_dir: Path | None = None  # None: feature_cache.default_cache_dir()
    rebuild_features: bool = False
    batch_size: int = 16
    experiment: str = "alloop-simulate"
    run_name: str | None = None  # None: simulate-<pattern, or the data folder's name>
    out: Path | None = None  # also keep the curves, summary and plot here
    progress: bool = True

    def __post_init__(self):
        from mlproject.models.layers import POOLINGS  # Keras: loaded once a run is described, not on import

        parse_image_size(self.image_size)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not self.feature_layers:
            raise ValueError("feature_layers must name at least one VGG16 layer, e.g. block5_pool")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 image per backbone batch, got {self.batch_size}")


@dataclass(frozen=True)
class SimulationResult:
    """What is left to tell once the run is logged."""

    run_id: str
    experiment_id: str
    run_name: str
    tracking_uri: str
    class_names: tuple[str, str]
    sizes: dict  # pool, test, pool_positive, test_positive
    full_accuracy: float
    target_accuracy: float
    table: str  # format_summary of the summary


def run_simulation(run: SimulationRun, *, notify: Notify = _quiet) -> SimulationResult:
    """Read the data, get its backbone features, replay the loop and log it all as one MLflow run.

    Refused before any feature pass: unusable data (:class:`DatasetError`), a positive label that is
    not one of exactly two labels, per-class policy settings naming a class the data lacks (both
    ValueErrors naming the field). Bad images raise :class:`~mlproject.data.images.BadImagesError`
    unless ``skip_bad_images``; an unknown feature layer raises a ValueError naming ``feature_layers``.
    """
    data = run.data
    if data == SYNTHETIC:
        from mlproject.data.synthetic import generate_synthetic_dagm
        from mlproject.training.common import synthetic_data_dir

        data = str(generate_synthetic_dagm(synthetic_data_dir(), pattern=run.pattern))
        notify(f"data=synthetic: GENERATED DAGM-like textures in {data}, not real images.", True)
    records = load_dataset(data, pattern=run.pattern, layout=run.layout)
    class_names = binary_class_names(records, run.positive_label, data)
    run.config.policy.check_class_names(class_names)
    size = resolve_image_size(run.image_size, records)
    notify(f"image size {size.size} px ({size.reason})", False)

    try:
        feature_set = backbone_features(records, weights=run.weights, image_size=size.size, pooling=run.pooling,
                                        feature_layers=run.feature_layers, manifest_hash=manifest_hash(records),
                                        skip_bad_images=run.skip_bad_images, cache_dir=run.cache_dir,
                                        rebuild=run.rebuild_features, batch_size=run.batch_size,
                                        progress=run.progress)
    except BadImageError:
        raise
    except ValueError as exc:  # building the backbone names an unknown layer and the choices
        raise ValueError(f"feature_layers {','.join(run.feature_layers)}: {exc}") from exc
    if feature_set.bad_files:
        first = feature_set.bad_files[0]
        notify(f"Skipped {len(feature_set.bad_files)} unreadable image(s), e.g. "
               f"{first.path}: {first.reason}", True)
    notify(f"Backbone features: {'reused' if feature_set.from_cache else 'computed and cached'} "
           f"{feature_set.cache_path} ({feature_set.features.shape[0]} images x {feature_set.features.shape[1]})",
           False)

    labels = np.array([int(r.label == class_names[1]) for r in feature_set.records], dtype=int)
    counts = np.bincount(labels, minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise DatasetError(f"{counts[1]} {class_names[1]!r} and {counts[0]} {class_names[0]!r} images were read; a "
                           f"simulation needs at least {MIN_PER_CLASS} of each (test split, initial batch)")
    run_name = run.run_name or f"simulate-{run.pattern if run.layout in PATTERN_LAYOUTS else Path(data).name}"
    return _log_simulation(run, data, feature_set, labels, class_names, run_name)


def binary_class_names(records: list, positive_label: str, data: str) -> tuple[str, str]:
    """(negative, positive) class names of a dataset with exactly two labels, one of them positive."""
    found = sorted({r.label for r in records})
    if positive_label not in found or len(found) != 2:
        raise ValueError(f"positive_label {positive_label!r}: {data} has the labels {found}; a simulation needs "
                         "exactly two, one of them the positive label")
    return next(label for label in found if label != positive_label), positive_label


def _mode_name(auto: bool) -> str:
    return "with_auto" if auto else "without_auto"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def summary_metrics(summary) -> dict[str, float]:
    """Per strategy and mode: labels to target, ratio against random, share of the pool, auto-label
    precision, seeds reaching the target. Values that do not exist (never reached, no auto-labels) are
    left out rather than logged as NaN."""
    metrics = {}
    for row in summary.itertuples():
        suffix = f"{row.strategy}.{_mode_name(bool(row.auto_labels))}"
        values = {"labels_to_target": row.labels_to_target, "ratio_to_random": row.ratio_to_random,
                  "share_of_pool": row.share_of_pool, "auto_label_precision": row.auto_label_precision,
                  "auto_labels_made": row.auto_labels_made, "seeds_reaching_target": row.seeds_reaching_target}
        for name, value in values.items():
            if not _missing(value):
                metrics[f"{name}.{suffix}"] = float(value)
    return metrics


def format_summary(summary) -> str:
    """The summary as a plain-text table for the terminal and the run."""
    def number(value, fmt):
        return "-" if _missing(value) else format(value, fmt)

    header = ("strategy", "auto-labels", "labels to target", "per seed", "vs random", "share of pool",
              "auto-labels made", "auto precision")
    rows = [header]
    for row in summary.itertuples():
        rows.append((row.strategy, "with" if row.auto_labels else "without", number(row.labels_to_target, ".1f"),
                     row.labels_to_target_per_seed, number(row.ratio_to_random, ".2f"),
                     number(row.share_of_pool, ".1%"), str(int(row.auto_labels_made)),
                     number(row.auto_label_precision, ".2%") if row.auto_labels else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def curve_metrics(curves) -> list[tuple[str, float, int]]:
    """Mean balanced accuracy over seeds per number of human labels, one metric per strategy and mode
    (``curve.<strategy>.<mode>``, step = human labels), so the MLflow UI can chart the curves."""
    points = []
    grouped = curves.groupby(["strategy", "auto_labels", "n_human"], sort=False)["balanced_accuracy"].mean()
    for (strategy, auto, n_human), value in grouped.items():
        points.append((f"curve.{strategy}.{_mode_name(bool(auto))}", float(value), int(n_human)))
    return points


def _log_simulation(run: SimulationRun, data: str, feature_set: FeatureSet, labels: np.ndarray,
                    class_names: tuple[str, str], run_name: str) -> SimulationResult:
    config, info, features = run.config, feature_set.info, feature_set.features
    uri = mlflow_registry.configure_tracking()
    with mlflow.start_run(run_name=run_name, experiment_id=mlflow_runs.experiment_id(run.experiment)) as active:
        mlflow.set_tags({"kind": "simulation", "pattern": run.pattern, "manifest_hash": info["manifest_hash"],
                         "synthetic_data": str("alloop-synthetic" in data)})
        mlflow_runs.log_params({
            **config_params(config), "data_path": data, "layout": run.layout, "pattern": run.pattern,
            "class_names": ",".join(class_names), "n_images": len(labels), "n_positive": int(labels.sum()),
            "weights": info["weights"], "weights_description": describe_weights(info["weights"]).description,
            "image_size": info["image_size"], "pooling": info["pooling"],
            "feature_layers": info["feature_layers"], "feature_dim": features.shape[1],
            "manifest_hash": info["manifest_hash"], "feature_cache_key": feature_set.key,
            "features_from_cache": feature_set.from_cache, "fast_variant": "svm variant's calibrated linear SVM (fit_svm)",
        })
        mlflow.log_metric("bad_images", len(feature_set.bad_files))
        if feature_set.bad_files:
            mlflow_runs.log_rows([{"path": b.path, "reason": b.reason} for b in feature_set.bad_files],
                                 "data", "bad_images.csv")

        curves, full, sizes = simulate(features, labels, class_names, config, progress=run.progress)
        summary = summarize(curves, full, sizes["pool"])
        target = summary.attrs["target_accuracy"]
        mlflow_runs.log_params({f"n_{k}": v for k, v in sizes.items()})
        mlflow.log_metrics({"full_label_accuracy": full, "target_accuracy": target, **summary_metrics(summary)})
        client = mlflow.MlflowClient()
        points = [Metric(key, value, 0, step) for key, value, step in curve_metrics(curves)]
        for start in range(0, len(points), METRICS_PER_BATCH):
            client.log_batch(active.info.run_id, metrics=points[start : start + METRICS_PER_BATCH])
        table = format_summary(summary)
        title = (f"{Path(data).name} {run.pattern}: {info['weights']} {info['image_size']}px "
                 f"{info['pooling']}; budget {config.budget}/round, {len(config.seeds)} seeds")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(run.out) if run.out else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            curves.to_csv(folder / "curves.csv", index=False)
            summary.to_csv(folder / "summary.csv", index=False)
            (folder / "summary.txt").write_text(
                f"full-label accuracy {full:.4f}; target (99%) {target:.4f}; "
                f"pool {sizes['pool']} ({sizes['pool_positive']} positive), test {sizes['test']} "
                f"({sizes['test_positive']} positive)\n\n{table}\n")
            plot_learning_curves(curves, full, folder / "learning_curves.png", title=title)
            mlflow_runs.log_files([folder / name for name in ("curves.csv", "summary.csv", "summary.txt",
                                                              "learning_curves.png")], "simulation")
    return SimulationResult(active.info.run_id, active.info.experiment_id, run_name, uri, class_names, sizes, full,
                            target, table)
