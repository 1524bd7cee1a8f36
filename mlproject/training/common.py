"""Steps every training entry point shares: data in, report out, model registered."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import mlflow
import numpy as np

from integrations import mlflow_registry, mlflow_runs
from mlproject.data.decode import TRAINING_FIT
from mlproject.data.images import BadFile, BadImagesError, load_images
from mlproject.data.loaders import label_counts, load_dataset, manifest_hash, source_counts
from mlproject.data.records import DEFECT, LabeledImage
from mlproject.data.split import Split, stratified_split
from mlproject.data.sizing import AUTO, AUTO_MAX_SIZE, parse_image_size, resolve_image_size
from mlproject.data.synthetic import generate_synthetic_dagm
from mlproject.evaluation.threshold import parse_threshold
from mlproject.evaluation.plots import plot_training_curves
from mlproject.evaluation.report import build_report, write_report_files
from mlproject.models.backbone import describe_weights

log = logging.getLogger("alloop")

#: ``data=synthetic`` selects the embedded default: generated DAGM-like textures, not real data.
SYNTHETIC = "synthetic"
DEFAULT_MODEL_NAME = "alloop-defect-classifier"
#: What to do about unreadable images, in the form the entry points are run (MLproject first).
SKIP_BAD_IMAGES_HINT = ("Fix or remove the files, or skip them (counted and listed in the run's bad_images.csv): "
                        "-P skip_bad_images=true with mlflow run, --skip-bad-images true with "
                        "python -m mlproject.entrypoints.<name>.")


def str2bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def integer(value: str) -> int:
    """An integer parameter; MLflow projects only know float, so accept "224.0" as 224."""
    number = float(value)
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}")
    return int(number)


def image_size_argument(value: str) -> int | str:
    try:
        return parse_image_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_search_arguments(parser, *, prefix: str, defaults, searched: str, search_data: tuple[str, ...],
                         cv_note: str = "") -> None:
    """A budgeted search's four options, ``--{prefix}search-trials/-budget-s/-data/-folds``, with
    ``defaults``' values (a settings dataclass with those fields); ``searched`` names what is ``auto``."""
    parser.add_argument(f"--{prefix}search-trials", type=integer, default=defaults.search_trials,
                        help=f"at most this many candidates when {searched} is 'auto'")
    parser.add_argument(f"--{prefix}search-budget-s", type=float, default=defaults.search_budget_s,
                        help="and at most this many seconds of search")
    parser.add_argument(f"--{prefix}search-data", default=defaults.search_data, choices=search_data,
                        help="what each candidate is scored on: the validation split, or k-fold cross-validation "
                             f"over train + validation (never the test split{cv_note})")
    parser.add_argument(f"--{prefix}search-folds", type=integer, default=defaults.search_folds,
                        help="folds of that cross-validation")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=SYNTHETIC,
                       help="dataset folder or manifest (.csv/.jsonl); 'synthetic' = the embedded synthetic default")
    group.add_argument("--layout", default="auto", choices=["auto", "dagm", "dagm-dev", "folders", "manifest"])
    group.add_argument("--pattern", default="Class1", help="DAGM class: one binary model per pattern")
    group.add_argument("--positive-label", default=DEFECT)
    group.add_argument("--split-seed", type=integer, default=0)
    group.add_argument("--val-fraction", type=float, default=0.15)
    group.add_argument("--test-fraction", type=float, default=0.2)
    group.add_argument("--skip-bad-images", type=str2bool, default=False,
                       help="skip unreadable images (counted and logged as bad_images.csv) instead of failing")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    group = parser.add_argument_group("model")
    group.add_argument("--weights", default="imagenet", help="imagenet | hed | none | path to a VGG16 no-top weights file")
    group.add_argument("--image-size", type=image_size_argument, default=AUTO,
                       help="input size in px, or 'auto': the images' median longer side, at most "
                            f"{AUTO_MAX_SIZE}; non-square images are padded, not stretched")
    group.add_argument("--threshold", type=parse_threshold, default="auto",
                       help="P(defect) at or above which an image is called defective; 'auto' picks the value "
                            "with the best balanced accuracy on the validation split")
    group.add_argument("--seed", type=integer, default=0)
    group.add_argument("--round", type=integer, default=0, help="labelling round this model was trained in (lineage)")
    group.add_argument("--registered-model-name", default=DEFAULT_MODEL_NAME)


@dataclass(frozen=True)
class DataSettings:
    """Which images a training run reads, how it splits them and at what size (the data options)."""

    data: str = SYNTHETIC
    layout: str = "auto"
    pattern: str = "Class1"
    positive_label: str = DEFECT
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    skip_bad_images: bool = False
    image_size: int | str = AUTO

    @classmethod
    def from_args(cls, args) -> "DataSettings":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class RegistrationSettings:
    """What a registered version records about where it came from and under which name it goes."""

    weights: str = "imagenet"
    round: int = 0
    registered_model_name: str = DEFAULT_MODEL_NAME

    @classmethod
    def from_args(cls, args) -> "RegistrationSettings":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """Which pooled VGG16 features a variant reads (svm, frozen and finetune alike)."""
    from mlproject.models.feature_transforms import DEFAULT_FEATURES

    group = parser.add_argument_group("features")
    group.add_argument("--pooling", default=DEFAULT_FEATURES.pooling, choices=["avg", "max", "avgmax", "stats"],
                       help="how each layer's map becomes a vector; stats = per-channel mean, std, max, min")
    # Kept as the comma-separated text it was given: it is logged as a run parameter, and retraining
    # passes the logged value back as -P feature_layers=...
    group.add_argument("--feature-layers", default=",".join(DEFAULT_FEATURES.layers),
                       help="comma-separated VGG16 layers whose pooled outputs are concatenated")
    group.add_argument("--log-features", type=str2bool, default=DEFAULT_FEATURES.log_features,
                       help="sign(x) log(1 + |x|) of the features before standardising them")


def feature_layers(text: str) -> tuple[str, ...]:
    """``--feature-layers`` as layer names."""
    layers = tuple(name.strip() for name in str(text).split(",") if name.strip())
    if not layers:
        raise ValueError("feature_layers must name at least one VGG16 layer, e.g. block3_pool,block4_pool,block5_pool")
    return layers


def synthetic_data_dir() -> Path:
    return Path(tempfile.gettempdir()) / "alloop-synthetic-dagm"


def resolve_data(settings: DataSettings) -> str:
    if settings.data == SYNTHETIC:
        # Generated once per seed/size; it is synthetic, never a stand-in for real inspection data.
        root = generate_synthetic_dagm(synthetic_data_dir(), pattern=settings.pattern)
        log.warning("data=synthetic: training on GENERATED DAGM-like textures in %s, not real images", root)
        return str(root)
    return settings.data


def class_names_for(records: list[LabeledImage], positive_label: str) -> tuple[str, str]:
    """(negative, positive) class names; binary models only."""
    labels = sorted({r.label for r in records})
    if positive_label not in labels or len(labels) != 2:
        raise ValueError(
            f"expected exactly two labels, one of them {positive_label!r}; the data has {labels}. "
            "Name the positive class with -P positive_label=<label> (mlflow run; --positive-label <label> "
            "with python -m), or give one folder per label (two labels)."
        )
    return (next(label for label in labels if label != positive_label), positive_label)


@dataclass
class PreparedData:
    data: str
    records: list[LabeledImage]
    split: Split
    class_names: tuple[str, str]
    manifest_hash: str
    x: dict  # split name -> uint8 images
    y: dict  # split name -> int labels (1 = positive)
    kept: dict  # split name -> records actually loaded
    bad_files: list[BadFile]
    image_size: int = 224
    image_size_reason: str = "given"
    fit: str = TRAINING_FIT


def prepare_data(settings: DataSettings) -> PreparedData:
    """The dataset read, split and loaded at ``settings.image_size`` (resolved here when ``auto``)."""
    data = resolve_data(settings)
    records = load_dataset(data, pattern=settings.pattern, layout=settings.layout)
    class_names = class_names_for(records, settings.positive_label)
    split = stratified_split(records, seed=settings.split_seed, val_fraction=settings.val_fraction,
                             test_fraction=settings.test_fraction)
    size = resolve_image_size(settings.image_size, split.train)  # from the training images only
    log.info("image size %d px (%s)", size.size, size.reason)
    x, y, kept, bad = {}, {}, {}, []
    for name in ("train", "val", "test"):
        # Every split is read even past a bad file, so one error can name the bad files of all three.
        images, loaded, bad_here = load_images(getattr(split, name), size.size, skip_bad=True, fit=TRAINING_FIT)
        x[name], kept[name] = images, loaded
        y[name] = np.array([int(r.label == class_names[1]) for r in loaded], dtype=np.int64)
        bad.extend(bad_here)
    if bad and not settings.skip_bad_images:
        raise BadImagesError(bad, hint=SKIP_BAD_IMAGES_HINT)
    return PreparedData(data, records, split, class_names, manifest_hash(records), x, y, kept, bad,
                        size.size, size.reason)


def log_data(prepared: PreparedData) -> None:
    """The dataset's identity (hash, counts), the exact split and any skipped files."""
    counts = label_counts(prepared.records)
    mlflow_runs.log_params({
        "data_path": prepared.data,
        "manifest_hash": prepared.manifest_hash,
        "class_names": ",".join(prepared.class_names),
        "image_size_used": prepared.image_size, "image_size_reason": prepared.image_size_reason,
        "image_fit": prepared.fit,
        **{f"n_{name}": len(prepared.kept[name]) for name in ("train", "val", "test")},
    })
    mlflow.set_tags({"manifest_hash": prepared.manifest_hash,
                     **{f"labels.{label}": n for label, n in counts.items()},
                     "synthetic_data": str(prepared.data.startswith(str(synthetic_data_dir())))})
    mlflow_runs.log_rows(prepared.split.to_rows(), "data", "split.csv")
    mlflow.log_metric("bad_images", len(prepared.bad_files))
    if prepared.bad_files:
        mlflow_runs.log_rows([asdict(b) for b in prepared.bad_files], "data", "bad_images.csv")
        log.warning("skipped %d unreadable images (listed in the run's data/bad_images.csv)", len(prepared.bad_files))


def log_history(history: dict) -> None:
    if not history.get("loss"):
        return
    if history.get("phase_boundary"):  # where fine-tuning began, e.g. to split the epoch_seconds series
        mlflow.log_metric("warmup_epochs_run", float(history["phase_boundary"][0]))
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_training_curves(history, Path(tmp) / "training_curves.png", title="training / validation")
        mlflow.log_artifact(str(path), artifact_path="training")


def log_test_report(prepared: PreparedData, p_test: np.ndarray, threshold: float, *, prefix: str = "test_"):
    """The seed-format table, metrics, confusion matrix and curves on the test split."""
    y_test = prepared.y["test"]
    report = build_report(y_test, p_test, prepared.class_names, threshold=threshold, prefix=prefix)
    mlflow.log_metrics(report.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_report_files(report, y_test, p_test, Path(tmp), threshold=threshold)
        mlflow_runs.log_files(paths, "evaluation")
    mlflow_runs.log_rows(
        [{"image": r.path, "label": r.label, "p_defect": float(p)} for r, p in zip(prepared.kept["test"], p_test)],
        "evaluation", "predictions.csv")
    print(f"\nTest split ({len(y_test)} images):\n{report.table}")
    return report


def register_model(python_model, artifacts: dict, config: dict, prepared: PreparedData,
                   registration: RegistrationSettings, variant: str):
    """Log the pyfunc and register it as a new version with alias ``challenger``."""
    from mlproject.registry.pyfunc import SIGNATURE, SIGNATURE_DOC, package_dir, pip_requirements

    run = mlflow.active_run()
    # The registry assigns the version number only after logging; until a loader passes the real
    # "NAME/VERSION" (integrations.mlflow_registry.load_pyfunc), predictions name the run.
    config = {**config, "model_version": f"run:{run.info.run_id}"}
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "model_config.json"
        config_path.write_text(json.dumps(config, indent=2))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts={**artifacts, "model_config": str(config_path)},
            code_paths=[package_dir()],
            signature=SIGNATURE,
            pip_requirements=pip_requirements(),
            model_config={"model_version": config["model_version"]},
            metadata=SIGNATURE_DOC,
        )
    sources = source_counts(prepared.records)
    tags = {
        "variant": variant,
        "weights": describe_weights(registration.weights).choice,
        "weights_description": describe_weights(registration.weights).description,
        "manifest_hash": prepared.manifest_hash,
        "round": registration.round,
        "run_id": run.info.run_id,
        "image_size": config["image_size"],
        **{f"labels_by_source.{s}": n for s, n in sources.items()},
    }
    ref = mlflow_registry.register(info.model_uri, registration.registered_model_name, tags=tags)
    mlflow.set_tags({"registered_model": str(ref)})
    return ref


def print_where_to_look(ref) -> None:
    run = mlflow.active_run()
    uri = mlflow.get_tracking_uri()
    print(
        f"\nRegistered {ref} (alias '{mlflow_registry.CHALLENGER}'), run {run.info.run_id}.\n"
        f"MLflow UI: mlflow ui --backend-store-uri {uri}  -> experiment "
        f"'{mlflow.get_experiment(run.info.experiment_id).name}', "
        f"Models -> {ref.name}\n"
        f"Promote it: mlflow run . -e promote -P model_name={ref.name} --env-manager local"
    )
