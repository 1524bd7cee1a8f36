"""``svm``: VGG16 features (no fine-tuning) + a balanced SVM with calibrated probabilities, one per pattern."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import joblib
import mlflow
import numpy as np
from sklearn.metrics import accuracy_score, log_loss

from integrations import mlflow_registry, mlflow_runs
from mlproject.evaluation.threshold import resolve_threshold
from mlproject.models.backbone import describe_weights
from mlproject.models.variants import build_feature_extractor
from mlproject.registry.pyfunc import DefectClassifierModel, model_config_dict
from mlproject.training import common
from mlproject.training.batches import predict_in_batches
from mlproject.training.svm_training import fit_svm


def build_parser() -> argparse.ArgumentParser:
    """Every option of this entry point; MLproject declares each as a parameter (a test checks it)."""
    parser = argparse.ArgumentParser(prog="svm", description=__doc__)
    common.add_training_arguments(parser)
    parser.add_argument("--pooling", default="avg", choices=["avg", "max", "avgmax", "stats"])
    parser.add_argument("--feature-layers", default="block5_pool",
                        help="comma-separated VGG16 layers whose pooled outputs are concatenated")
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--kernel", default="rbf", choices=["rbf", "linear", "poly", "sigmoid"])
    parser.add_argument("--batch-size", type=common.integer, default=32)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    mlflow_registry.configure_tracking()
    with mlflow.start_run(run_name=f"svm-{args.pattern}"):
        mlflow.set_tags({"variant": "svm", "pattern": args.pattern})
        mlflow_runs.log_params({**vars(args), "variant": "svm",
                                "weights_description": describe_weights(args.weights).description})
        prepared = common.prepare_data(args, args.image_size)
        common.log_data(prepared)
        layers = tuple(name.strip() for name in args.feature_layers.split(",") if name.strip())
        extractor = build_feature_extractor(args.weights, args.image_size, feature_layers=layers, pooling=args.pooling)
        features = {name: predict_in_batches(extractor, prepared.x[name], batch_size=args.batch_size,
                                             desc=f"VGG16 features ({name})")
                    for name in ("train", "val", "test")}
        pipeline = fit_svm(features["train"], prepared.y["train"], C=args.C, kernel=args.kernel, seed=args.seed)
        p_val = pipeline.predict_proba(features["val"])[:, 1]
        threshold = resolve_threshold(args.threshold, prepared.y["val"], p_val)
        mlflow.log_metric("operating_threshold", threshold)
        for name, prefix in (("train", "train_"), ("val", "val_")):
            p = pipeline.predict_proba(features[name])[:, 1]
            mlflow.log_metrics({
                f"{prefix}accuracy": accuracy_score(prepared.y[name], (p >= threshold).astype(int)),
                f"{prefix}loss": log_loss(prepared.y[name], np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]),
            }, step=0)
        p_test = pipeline.predict_proba(features["test"])[:, 1]
        common.log_test_report(prepared, p_test, threshold)
        with tempfile.TemporaryDirectory() as tmp:
            keras_path, svm_path = Path(tmp) / "feature_extractor.keras", Path(tmp) / "svm.joblib"
            extractor.save(keras_path)
            joblib.dump(pipeline, svm_path)
            config = model_config_dict(variant="svm", image_size=args.image_size, class_names=prepared.class_names,
                                       threshold=threshold, weights=args.weights, model_version="")
            ref = common.register_model(DefectClassifierModel(),
                                        {"keras_model": str(keras_path), "sklearn_model": str(svm_path)},
                                        config, prepared, args, "svm")
        common.print_where_to_look(ref)


if __name__ == "__main__":
    main()
