"""``alloop simulate``: the labelling loop replayed offline on a fully labelled dataset, an oracle answering.

The options parsed into a :class:`~mlproject.loop.simulation_run.SimulationRun`, handed to
:func:`~mlproject.loop.simulation_run.run_simulation` (data, cached backbone features, the replay,
one MLflow run), and the summary printed. The dataclasses check the values; their errors are
reported here as the option that set them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

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
    POLICY_OPTIONS,
    TAU,
    option_error,
    policy_config,
)

AUTO_MODES = {"both": (False, True), "on": (True,), "off": (False,)}

#: The option that sets each SimulationRun / SimulationConfig field, for their errors.
OPTIONS = {**POLICY_OPTIONS, "auto_label_modes": "--auto-labels", "cache_dir": "--cache-dir",
           **{name: "--" + name.replace("_", "-") for name in (
               "data", "layout", "pattern", "positive_label", "weights", "image_size", "pooling", "feature_layers",
               "skip_bad_images", "batch_size", "strategies", "seeds", "budget", "initial_labels", "max_human",
               "test_fraction", "split_seed", "pca_dims")}}


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


def _notify(message: str, warning: bool) -> None:
    if warning:
        typer.secho(message, fg="yellow", err=True)
    else:
        typer.echo(message)


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
    from mlproject.data.loaders import DatasetError
    from mlproject.loop.simulate import SimulationConfig
    from mlproject.loop.simulation_run import SimulationRun, run_simulation
    from mlproject.models.backbone import WeightsUnavailableError

    # Everything that needs no data first: a typo should not cost a feature pass.
    if auto_labels not in AUTO_MODES:
        fail(f"--auto-labels must be one of {', '.join(AUTO_MODES)}, got {auto_labels!r}")
    seed_list = _seeds(seeds)
    if len(seed_list) < 3:
        typer.secho(f"Warning: {len(seed_list)} seed(s); curves over fewer than 3 seeds are noisy "
                    "(their spread cannot be told from their mean).", fg="yellow", err=True)
    policy = policy_config(tau=tau, class_tau=class_tau, cluster_confidence=cluster_confidence,
                           cluster_agreement=cluster_agreement, clusters=clusters,
                           max_auto_per_class=max_auto_per_class, diversity=diversity, diversity_pool=diversity_pool)
    try:
        config = SimulationConfig(
            strategies=_names(strategies, "strategies"), auto_label_modes=AUTO_MODES[auto_labels], seeds=seed_list,
            initial_labels=initial_labels, budget=budget, max_human=max_human or None, test_fraction=test_fraction,
            split_seed=split_seed, log_features=log_features, pca_dims=pca_dims, policy=policy)
        run = SimulationRun(
            config=config, data=data, layout=layout, pattern=pattern, positive_label=positive_label, weights=weights,
            image_size=image_size, pooling=pooling, feature_layers=_names(feature_layers, "feature-layers"),
            skip_bad_images=skip_bad_images, cache_dir=cache_dir, rebuild_features=rebuild_features,
            batch_size=batch_size, experiment=experiment, run_name=run_name, out=out, progress=progress)
    except ValueError as exc:
        fail(option_error(exc, OPTIONS))

    try:
        result = run_simulation(run, notify=_notify)
    except DatasetError as exc:
        fail(f"--data {data}: {exc}")
    except BadImageError as exc:
        exc.hint = "Fix or remove the files, or pass --skip-bad-images to leave them out (counted and logged)."
        fail(str(exc))
    except WeightsUnavailableError as exc:
        fail(f"--weights {weights}: {exc}")
    except ValueError as exc:
        fail(option_error(exc, OPTIONS))
    _print_result(run, result)


def _print_result(run, result) -> None:
    sizes, config, positive = result.sizes, run.config, result.class_names[1]
    typer.echo(f"\nPool {sizes['pool']} images ({sizes['pool_positive']} {positive}), fixed test split "
               f"{sizes['test']} ({sizes['test_positive']} {positive}); {len(config.seeds)} seeds, "
               f"{config.budget} human labels per round.")
    typer.echo(f"Full-label accuracy (fast variant, every pool label): {result.full_accuracy:.4f}; "
               f"target = 99% of it = {result.target_accuracy:.4f} balanced accuracy.\n")
    typer.echo(result.table)
    typer.echo("\n'labels to target': human labels at the first round whose balanced accuracy reaches the target "
               "(mean over seeds; '-' if a seed never does). 'vs random': against random in the same mode.")
    if run.out:
        typer.echo(f"Files: {Path(run.out).resolve()}")
    typer.secho(
        f"\nMLflow run {result.run_id} in experiment '{run.experiment}' (id {result.experiment_id}).\n"
        f"Look at it: mlflow ui --backend-store-uri {result.tracking_uri} --port 5000, open http://127.0.0.1:5000 -> "
        f"experiment '{run.experiment}' -> run '{result.run_name}':\n"
        f"  Artifacts simulation/learning_curves.png, curves.csv, summary.csv; metrics labels_to_target.*, "
        f"ratio_to_random.*, share_of_pool.*, auto_label_precision.*, full_label_accuracy; "
        f"charts curve.<strategy>.<mode> (x = human labels).", fg="green")
