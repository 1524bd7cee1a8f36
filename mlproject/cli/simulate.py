"""``alloop simulate``: the labelling loop replayed offline on a fully labelled dataset, an oracle answering.

The command around :mod:`mlproject.loop.simulate`: load the dataset, compute (or reuse) the backbone
features, replay every strategy with and without auto-labels over several seeds, log one MLflow run
(params, curves and summary CSVs, the learning-curve PNG, metrics per strategy and mode) and print
the summary.

Backbone features are cached on disk, one ``.npz`` per (dataset manifest hash, weights, image size,
pooling, layers): the backbone does not train in the fast variant, so a second simulation of the same
data (other strategies, seeds, thresholds) starts at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import typer

from integrations.files import atomic_write
from mlproject.data.sizing import parse_image_size, resolve_image_size
from mlproject.models.feature_transforms import DEFAULT_FEATURES

from mlproject.cli._app import app, fail
from mlproject.cli._policy import (
    CLASS_TAU,
    CLUSTER_AGREEMENT,
    CLUSTER_CONFIDENCE,
    CLUSTERS,
    DIVERSITY,
    DIVERSITY_POOL,
    MAX_AUTO,
    TAU,
    policy_config,
)

log = logging.getLogger("alloop.simulate")

#: Bump when what is stored in a feature cache file changes: old files are then recomputed.
FEATURE_CACHE_VERSION = 2  # 2: non-square images padded, not stretched


# --- the feature cache -----------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$ALLOOP_STATE_DIR/features`` (default ``<repo>/.alloop/features``)."""
    from integrations.labelstudio.server import state_dir

    return state_dir() / "features"


def weights_identity(weights: str) -> str:
    """What identifies the backbone's weights in the cache key.

    A weights file is named by its resolved path, size and modification time, so replacing the file
    invalidates the cached features; ``none`` (random init) is keyed as such, so its cached features
    stay the ones of the first random draw.
    """
    if weights in ("imagenet", "none"):
        return weights
    if weights == "hed":
        from mlproject.models.backbone import hed_weights_path

        path = hed_weights_path()
    else:
        path = Path(weights)
        if not path.is_file():
            return f"file:{weights}"  # building the backbone reports the missing file
    stat = path.resolve().stat()
    return f"{weights if weights == 'hed' else 'file'}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def feature_cache_key(manifest_hash: str, weights: str, image_size: int, pooling: str,
                      feature_layers: tuple[str, ...], skip_bad_images: bool) -> str:
    """sha256 (first 24 hex digits) of everything the features depend on."""
    identity = {"version": FEATURE_CACHE_VERSION, "manifest_hash": manifest_hash,
                "weights": weights_identity(weights), "image_size": int(image_size), "pooling": pooling,
                "feature_layers": list(feature_layers), "skip_bad_images": bool(skip_bad_images)}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


@dataclass
class FeatureSet:
    features: np.ndarray  # N x D float32, one row per loaded record
    records: list  # the LabeledImage records actually loaded, in row order
    bad_files: list  # BadFile: skipped, with the reason
    cache_path: Path
    key: str
    from_cache: bool
    info: dict = field(default_factory=dict)


def _read_cache(path: Path, records: list, key: str):
    """``(features, kept records, bad files)`` from a cache file, or None if it is missing or unusable."""
    from mlproject.data.images import BadFile

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key:
                return None
            features = np.asarray(stored["features"], dtype=np.float32)
            paths = [str(p) for p in stored["paths"]]
            bad = [BadFile(str(p), str(r)) for p, r in zip(stored["bad_paths"], stored["bad_reasons"])]
    except Exception as exc:  # a truncated or foreign file: recompute rather than fail
        log.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
        return None
    by_path = {r.path: r for r in records}
    if len(paths) != len(features) or any(p not in by_path for p in paths):
        log.warning("feature cache %s does not match the dataset; recomputing", path)
        return None
    return features, [by_path[p] for p in paths], bad


def backbone_features(records: list, *, weights: str, image_size: int, pooling: str,
                      feature_layers: tuple[str, ...], manifest_hash: str, skip_bad_images: bool = False,
                      cache_dir: Path | None = None, rebuild: bool = False, batch_size: int = 16,
                      progress: bool = True) -> FeatureSet:
    """Pooled VGG16 features of ``records``, computed once and cached as an ``.npz``.

    Images are read and pushed through the backbone one batch at a time, so memory stays flat at any
    image size. Bad images raise one :class:`~mlproject.data.images.BadImagesError` naming them all,
    unless ``skip_bad_images``: then they are left out and returned in ``bad_files``.
    """
    from tqdm.auto import tqdm

    from mlproject.data.decode import TRAINING_FIT
    from mlproject.data.images import BadImagesError, load_images
    from mlproject.models.variants import build_feature_extractor
    from mlproject.training.batches import predict_in_batches

    key = feature_cache_key(manifest_hash, weights, image_size, pooling, feature_layers, skip_bad_images)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"features-{key}.npz"
    info = {"weights": weights, "image_size": image_size, "pooling": pooling,
            "feature_layers": ",".join(feature_layers), "manifest_hash": manifest_hash}
    if not rebuild:
        cached = _read_cache(path, records, key)
        if cached is not None:
            features, kept, bad = cached
            log.info("backbone features: reusing cache %s (%d images x %d features)", path, *features.shape)
            return FeatureSet(features, kept, bad, path, key, True, info)

    log.info("backbone features: computing %s (%d images, %s weights, %d px, %s pooling of %s)",
             path, len(records), weights, image_size, pooling, ",".join(feature_layers))
    extractor = build_feature_extractor(weights, image_size, feature_layers=tuple(feature_layers), pooling=pooling)
    chunks, kept, bad = [], [], []
    with tqdm(total=len(records), desc=f"backbone features ({weights}, {image_size}px)", unit="img",
              disable=not progress) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            # Read on past a bad file so one error names them all; features only while none is bad.
            images, loaded, bad_here = load_images(chunk, image_size, skip_bad=True, progress=False,
                                                   fit=TRAINING_FIT)
            if len(images) and (skip_bad_images or not (bad or bad_here)):
                chunks.append(predict_in_batches(extractor, images, batch_size=batch_size, progress=False))
            kept.extend(loaded)
            bad.extend(bad_here)
            bar.update(len(chunk))
    if bad and not skip_bad_images:
        raise BadImagesError(bad)
    dim = int(extractor.output.shape[-1])
    features = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
    atomic_write(path, lambda handle: np.savez(
        handle, key=np.array(key), features=features, paths=np.array([r.path for r in kept], dtype=str),
        bad_paths=np.array([b.path for b in bad], dtype=str), bad_reasons=np.array([b.reason for b in bad], dtype=str),
        info=np.array(json.dumps(info))))
    log.info("backbone features: wrote %s", path)
    return FeatureSet(features, kept, bad, path, key, False, info)


# --- parsing the options ---------------------------------------------------------------------------


def _names(value: str, what: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        fail(f"--{what} is empty; give a comma-separated list")
    if len(set(items)) != len(items):
        fail(f"--{what} lists a name twice: {value!r}")
    return items


def _seeds(value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in _names(value, "seeds"))
    except ValueError:
        fail(f"--seeds must be comma-separated whole numbers, e.g. 0,1,2; got {value!r}")
    return seeds


AUTO_MODES = {"both": (False, True), "on": (True,), "off": (False,)}


# --- the command -----------------------------------------------------------------------------------


@app.command()
def simulate(
    data: str = typer.Option("synthetic", help="dataset folder or manifest (.csv/.jsonl); 'synthetic' = generated "
                                                "DAGM-like textures (not real images)"),
    layout: str = typer.Option("auto", help="auto | dagm | dagm-dev | folders | manifest"),
    pattern: str = typer.Option("Class1", help="DAGM class folder (dagm, dagm-dev layouts)"),
    positive_label: str = typer.Option("defect", help="label of the positive class"),
    weights: str = typer.Option("hed", help="imagenet | hed | none | path to a VGG16 no-top weights file"),
    image_size: str = typer.Option("auto", help="backbone input size in px, or auto (as the svm entry point)"),
    pooling: str = typer.Option(DEFAULT_FEATURES.pooling, help="avg | max | avgmax | stats (per-channel mean, std, "
                                                           "max, min); the default is the svm entry point's"),
    feature_layers: str = typer.Option(",".join(DEFAULT_FEATURES.layers), help="comma-separated VGG16 layers to pool"),
    log_features: bool = typer.Option(DEFAULT_FEATURES.log_features, help="fast variant input: log(1 + features) first"),
    pca_dims: int = typer.Option(0, help="fast variant input: this many whitened principal components of the "
                                         "standardised features, fitted once on all images without labels "
                                         "(0: the features as they are)"),
    strategies: str = typer.Option("random,least_confidence,margin,entropy,cluster",
                                   help="comma-separated query strategies (random is the baseline)"),
    auto_labels: str = typer.Option("both", help="both | on | off: replay with and/or without auto-labels"),
    seeds: str = typer.Option("0,1,2", help="comma-separated seeds; at least 3, so a curve's spread can be told from its mean"),
    budget: int = typer.Option(10, help="human labels per round (the review queue the oracle answers)"),
    initial_labels: int = typer.Option(10, help="the first, random batch a person labels"),
    max_human: int = typer.Option(0, help="stop each curve after this many human labels (0: the whole pool)"),
    tau: float = TAU,
    class_tau: str = CLASS_TAU,
    cluster_confidence: float = CLUSTER_CONFIDENCE,
    cluster_agreement: float = CLUSTER_AGREEMENT,
    clusters: int = CLUSTERS,
    max_auto_per_class: str = MAX_AUTO,
    diversity: bool = DIVERSITY,
    diversity_pool: int = DIVERSITY_POOL,
    test_fraction: float = typer.Option(0.2, help="fixed stratified test split the curves are measured on"),
    split_seed: int = typer.Option(0, help="seed of that split"),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images",
                                         help="skip unreadable images (counted, logged) instead of stopping"),
    cache_dir: Path = typer.Option(None, help="feature cache folder (default $ALLOOP_STATE_DIR/features, "
                                              "i.e. .alloop/features)"),
    rebuild_features: bool = typer.Option(False, "--rebuild-features", help="recompute cached features"),
    batch_size: int = typer.Option(16, help="images per backbone batch"),
    experiment: str = typer.Option("alloop-simulate", help="MLflow experiment"),
    run_name: str = typer.Option(None, help="MLflow run name (default simulate-<pattern or data>)"),
    out: Path = typer.Option(None, help="also write curves.csv, summary.csv and learning_curves.png here"),
    progress: bool = typer.Option(True, help="progress bars"),
):
    """Replay the loop offline: an oracle answers the review queue, the fast variant retrains each round.

    Learning curves (balanced accuracy on a fixed test split against human labels) per strategy, with
    and without auto-labels, over several seeds; the human labels needed to reach 99% of the
    full-label accuracy, the ratio against random and the auto-labels' precision. One MLflow run.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mlproject.data.decode import BadImageError
    from mlproject.data.loaders import DatasetError, load_dataset, manifest_hash
    from mlproject.loop.policy import STRATEGIES
    from mlproject.loop.simulate import SimulationConfig
    from mlproject.models.backbone import WeightsUnavailableError
    from mlproject.models.layers import POOLINGS

    # Options that need no data first: a typo should not cost a feature pass.
    strategy_names = _names(strategies, "strategies")
    unknown = [s for s in strategy_names if s not in STRATEGIES]
    if unknown:
        fail(f"--strategies: unknown {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
    if auto_labels not in AUTO_MODES:
        fail(f"--auto-labels must be one of {', '.join(AUTO_MODES)}, got {auto_labels!r}")
    seed_list = _seeds(seeds)
    if len(seed_list) < 3:
        typer.secho(f"Warning: {len(seed_list)} seed(s); curves over fewer than 3 seeds are noisy "
                    "(their spread cannot be told from their mean).", fg="yellow", err=True)
    if pooling not in POOLINGS:
        fail(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    layers = _names(feature_layers, "feature-layers")
    try:
        parse_image_size(image_size)
    except ValueError as exc:
        fail(f"--image-size: {exc}")
    if not 0.0 < test_fraction < 1.0:
        fail(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if budget < 1:
        fail(f"--budget must be >= 1 human label per round, got {budget}")
    if initial_labels < 2:
        fail(f"--initial-labels must be >= 2 (the classifier needs both classes), got {initial_labels}")
    if max_human < 0 or pca_dims < 0 or batch_size < 1:
        fail("--max-human and --pca-dims must be >= 0 (0 = off) and --batch-size >= 1")
    policy_config(tau=tau, class_tau="", cluster_confidence=cluster_confidence, cluster_agreement=cluster_agreement,
                  clusters=clusters, max_auto_per_class="0", diversity=diversity, diversity_pool=diversity_pool)

    # The data.
    if data == "synthetic":
        from mlproject.data.synthetic import generate_synthetic_dagm
        from mlproject.training.common import synthetic_data_dir

        data = str(generate_synthetic_dagm(synthetic_data_dir(), pattern=pattern))
        typer.secho(f"data=synthetic: GENERATED DAGM-like textures in {data}, not real images.", fg="yellow")
    try:
        records = load_dataset(data, pattern=pattern, layout=layout)
    except DatasetError as exc:
        fail(f"--data {data}: {exc}")
    labels_found = sorted({r.label for r in records})
    if positive_label not in labels_found or len(labels_found) != 2:
        fail(f"--data {data}: expected exactly two labels, one of them {positive_label!r} (--positive-label); "
             f"the data has {labels_found}")
    class_names = [next(label for label in labels_found if label != positive_label), positive_label]
    policy = policy_config(tau=tau, class_tau=class_tau, cluster_confidence=cluster_confidence,
                           cluster_agreement=cluster_agreement, clusters=clusters,
                           max_auto_per_class=max_auto_per_class, diversity=diversity, diversity_pool=diversity_pool,
                           class_names=class_names)
    digest = manifest_hash(records)
    size = resolve_image_size(image_size, records)
    image_size = size.size
    typer.echo(f"image size {image_size} px ({size.reason})")
    try:
        config = SimulationConfig(
            strategies=strategy_names, auto_label_modes=AUTO_MODES[auto_labels], seeds=seed_list,
            initial_labels=initial_labels, budget=budget, max_human=max_human or None, test_fraction=test_fraction,
            split_seed=split_seed, log_features=log_features, pca_dims=pca_dims,
            policy=policy)
    except ValueError as exc:
        fail(str(exc))

    try:
        feature_set = backbone_features(records, weights=weights, image_size=image_size, pooling=pooling,
                                        feature_layers=layers, manifest_hash=digest,
                                        skip_bad_images=skip_bad_images, cache_dir=cache_dir,
                                        rebuild=rebuild_features, batch_size=batch_size, progress=progress)
    except BadImageError as exc:
        exc.hint = "Fix or remove the files, or pass --skip-bad-images to leave them out (counted and logged)."
        fail(str(exc))
    except WeightsUnavailableError as exc:
        fail(f"--weights {weights}: {exc}")
    except ValueError as exc:  # an unknown feature layer names itself and the choices
        fail(f"--feature-layers {feature_layers}: {exc}")
    if feature_set.bad_files:
        typer.secho(f"Skipped {len(feature_set.bad_files)} unreadable image(s) (--skip-bad-images), e.g. "
                    f"{feature_set.bad_files[0].path}: {feature_set.bad_files[0].reason}", fg="yellow", err=True)
    typer.echo(f"Backbone features: {'reused' if feature_set.from_cache else 'computed and cached'} "
               f"{feature_set.cache_path} ({feature_set.features.shape[0]} images x {feature_set.features.shape[1]})")

    labels = np.array([int(r.label == positive_label) for r in feature_set.records], dtype=int)
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 3:
        fail(f"--data {data}: {counts[1]} {positive_label!r} and {counts[0]} {class_names[0]!r} images were read; "
             "a simulation needs at least 3 of each (test split, initial batch)")
    _run_simulation(features=feature_set.features, labels=labels, class_names=class_names, feature_set=feature_set,
                    data=data, pattern=pattern, layout=layout, config=config, experiment=experiment,
                    run_name=run_name or f"simulate-{pattern if layout in ('auto', 'dagm', 'dagm-dev') else Path(data).name}",
                    out=out, progress=progress)


def _mode_name(auto: bool) -> str:
    return "with_auto" if auto else "without_auto"


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
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                metrics[f"{name}.{suffix}"] = float(value)
    return metrics


def format_summary(summary) -> str:
    """The summary as a plain-text table for the terminal and the run."""
    def number(value, fmt):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

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


def _run_simulation(*, features, labels, class_names, feature_set, data, pattern, layout, config, experiment,
                    run_name, out, progress) -> None:
    import mlflow
    from mlflow.entities import Metric

    from integrations import mlflow_registry, mlflow_runs
    from mlproject.loop.simulate import config_params, plot_learning_curves, simulate, summarize
    from mlproject.models.backbone import describe_weights

    uri = mlflow_registry.configure_tracking()
    with mlflow.start_run(run_name=run_name, experiment_id=mlflow_runs.experiment_id(experiment)) as run:
        mlflow.set_tags({"kind": "simulation", "pattern": pattern, "manifest_hash": feature_set.info["manifest_hash"],
                         "synthetic_data": str("alloop-synthetic" in data)})
        weights = feature_set.info["weights"]
        mlflow_runs.log_params({
            **config_params(config), "data_path": data, "layout": layout, "pattern": pattern,
            "class_names": ",".join(class_names), "n_images": len(labels), "n_positive": int(labels.sum()),
            "weights": weights, "weights_description": describe_weights(weights).description,
            "image_size": feature_set.info["image_size"], "pooling": feature_set.info["pooling"],
            "feature_layers": feature_set.info["feature_layers"], "feature_dim": features.shape[1],
            "manifest_hash": feature_set.info["manifest_hash"], "feature_cache_key": feature_set.key,
            "features_from_cache": feature_set.from_cache, "fast_variant": "svm variant's calibrated linear SVM (fit_svm)",
        })
        mlflow.log_metric("bad_images", len(feature_set.bad_files))
        if feature_set.bad_files:
            mlflow_runs.log_rows([{"path": b.path, "reason": b.reason} for b in feature_set.bad_files],
                                 "data", "bad_images.csv")

        curves, full, sizes = simulate(features, labels, class_names, config, progress=progress)
        summary = summarize(curves, full, sizes["pool"])
        mlflow_runs.log_params({f"n_{k}": v for k, v in sizes.items()})
        mlflow.log_metrics({"full_label_accuracy": full, "target_accuracy": summary.attrs["target_accuracy"],
                            **summary_metrics(summary)})
        client = mlflow.MlflowClient()
        points = [Metric(key, value, 0, step) for key, value, step in curve_metrics(curves)]
        for start in range(0, len(points), 900):  # the store takes at most 1000 metrics per batch
            client.log_batch(run.info.run_id, metrics=points[start : start + 900])
        table = format_summary(summary)
        title = (f"{Path(data).name} {pattern}: {weights} {feature_set.info['image_size']}px "
                 f"{feature_set.info['pooling']}; budget {config.budget}/round, {len(config.seeds)} seeds")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out) if out else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            curves.to_csv(folder / "curves.csv", index=False)
            summary.to_csv(folder / "summary.csv", index=False)
            (folder / "summary.txt").write_text(
                f"full-label accuracy {full:.4f}; target (99%) {summary.attrs['target_accuracy']:.4f}; "
                f"pool {sizes['pool']} ({sizes['pool_positive']} positive), test {sizes['test']} "
                f"({sizes['test_positive']} positive)\n\n{table}\n")
            plot_learning_curves(curves, full, folder / "learning_curves.png", title=title)
            mlflow_runs.log_files([folder / name for name in ("curves.csv", "summary.csv", "summary.txt",
                                                              "learning_curves.png")], "simulation")
        experiment_id = run.info.experiment_id

    typer.echo(f"\nPool {sizes['pool']} images ({sizes['pool_positive']} {class_names[1]}), fixed test split "
               f"{sizes['test']} ({sizes['test_positive']} {class_names[1]}); {len(config.seeds)} seeds, "
               f"{config.budget} human labels per round.")
    typer.echo(f"Full-label accuracy (fast variant, every pool label): {full:.4f}; "
               f"target = 99% of it = {summary.attrs['target_accuracy']:.4f} balanced accuracy.\n")
    typer.echo(table)
    typer.echo("\n'labels to target': human labels at the first round whose balanced accuracy reaches the target "
               "(mean over seeds; '-' if a seed never does). 'vs random': against random in the same mode.")
    if out:
        typer.echo(f"Files: {Path(out).resolve()}")
    typer.secho(
        f"\nMLflow run {run.info.run_id} in experiment '{experiment}' (id {experiment_id}).\n"
        f"Look at it: mlflow ui --backend-store-uri {uri} --port 5000, open http://127.0.0.1:5000 -> "
        f"experiment '{experiment}' -> run '{run_name}':\n"
        f"  Artifacts simulation/learning_curves.png, curves.csv, summary.csv; metrics labels_to_target.*, "
        f"ratio_to_random.*, share_of_pool.*, auto_label_precision.*, full_label_accuracy; "
        f"charts curve.<strategy>.<mode> (x = human labels).", fg="green")
