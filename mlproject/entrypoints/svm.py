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
from mlproject.training.svm_training import (AUTO, KERNELS, METRIC_PREFIX, SEARCH_DATA, SvmSettings, Trial,
                                             fit_svm, out_of_fold_scores, parse_C, search_svm)


def build_parser() -> argparse.ArgumentParser:
    """Every option of this entry point; MLproject declares each as a parameter (a test checks it)."""
    parser = argparse.ArgumentParser(prog="svm", description=__doc__)
    common.add_training_arguments(parser)
    common.add_feature_arguments(parser)
    parser.add_argument("--C", type=parse_C, default=AUTO, help="SVM regularisation, or 'auto' (searched)")
    parser.add_argument("--kernel", default=AUTO, choices=[AUTO, *KERNELS], help="SVM kernel, or 'auto' (searched)")
    common.add_search_arguments(parser, prefix="", defaults=SvmSettings, searched="C or kernel", search_data=SEARCH_DATA)
    parser.add_argument("--batch-size", type=common.integer, default=32)
    return parser


def svm_settings(args) -> SvmSettings:
    return SvmSettings(C=args.C, kernel=args.kernel, log_features=args.log_features,
                       search_trials=args.search_trials, search_budget_s=args.search_budget_s,
                       search_data=args.search_data, search_folds=args.search_folds, seed=args.seed)


def log_trial(trial: Trial) -> None:
    """One search candidate as a child run of the entry point's run (MLflow's convention: the UI
    compares them side by side); its metrics are named by what they were scored on (``val_`` or ``cv_``)."""
    prefix = METRIC_PREFIX[trial.scored_on]
    with mlflow.start_run(run_name=f"svm-trial-{trial.number}", nested=True):
        mlflow.log_params({"C": trial.C, "kernel": trial.kernel, "trial": trial.number, "scored_on": trial.scored_on})
        mlflow.log_metrics({f"{prefix}roc_auc": trial.roc_auc, f"{prefix}hinge": trial.hinge,
                            "fit_seconds": trial.seconds})


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    mlflow_registry.configure_tracking()
    with mlflow.start_run(run_name=f"svm-{args.pattern}"):
        mlflow.set_tags({"variant": "svm", "pattern": args.pattern})
        mlflow_runs.log_params({**vars(args), "variant": "svm",
                                "weights_description": describe_weights(args.weights).description})
        prepared = common.prepare_data(common.DataSettings.from_args(args))
        common.log_data(prepared)
        import keras

        keras.utils.set_random_seed(args.seed)  # weights=none: the same random backbone for the same seed
        layers = common.feature_layers(args.feature_layers)
        extractor = build_feature_extractor(args.weights, prepared.image_size, feature_layers=layers, pooling=args.pooling)
        features = {name: predict_in_batches(extractor, prepared.x[name], batch_size=args.batch_size,
                                             desc=f"VGG16 features ({name})")
                    for name in ("train", "val", "test")}
        settings = svm_settings(args)
        search = search_svm((features["train"], prepared.y["train"]), (features["val"], prepared.y["val"]), settings,
                            on_trial=log_trial)
        mlflow.log_params({"C_chosen": search.C, "kernel_chosen": search.kernel, "search_trials_run": len(search.trials),
                           "search_data_used": search.search_data})
        if search.searched and search.search_data != settings.search_data:
            print(f"search_data={settings.search_data}: too few images of a class for {settings.search_folds} folds, "
                  f"so the search scored on the validation split (param search_data_used); lower search_folds "
                  f"to cross-validate")
        pipeline = fit_svm(features["train"], prepared.y["train"], C=search.C, kernel=search.kernel, seed=args.seed,
                           log_features=settings.log_features)
        p_val = pipeline.predict_proba(features["val"])[:, 1]
        y_pool, p_pool = prepared.y["val"], p_val
        oof = out_of_fold_scores(features["train"], prepared.y["train"], C=search.C, kernel=search.kernel,
                                 seed=args.seed, log_features=settings.log_features)
        if oof is not None:
            y_pool, p_pool = np.concatenate([y_pool, prepared.y["train"]]), np.concatenate([p_pool, oof])
        mlflow.log_param("threshold_data", "val" if oof is None else "val+train_out_of_fold")
        threshold = resolve_threshold(args.threshold, y_pool, p_pool)
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
            config = model_config_dict(variant="svm", image_size=prepared.image_size, class_names=prepared.class_names,
                                       threshold=threshold, weights=args.weights, model_version="")
            ref = common.register_model(DefectClassifierModel(),
                                        {"keras_model": str(keras_path), "sklearn_model": str(svm_path)},
                                        config, prepared, common.RegistrationSettings.from_args(args), "svm")
        mlflow_registry.tag_version(ref, {"chosen.C": search.C, "chosen.kernel": search.kernel})
        common.print_where_to_look(ref)


if __name__ == "__main__":
    main()
