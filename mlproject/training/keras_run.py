"""Shared body of the ``frozen`` and ``finetune`` entry points."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from integrations import mlflow_registry, mlflow_runs
from mlproject.evaluation.threshold import resolve_threshold
from mlproject.models.backbone import describe_weights
from mlproject.models.variants import build_head_classifier
from mlproject.registry.pyfunc import DefectClassifierModel, model_config_dict
from mlproject.training import common
from mlproject.training.batches import TEST_TIME_VIEWS, mean_over_views, predict_in_batches
from mlproject.training.head_training import HeadTrainingConfig, train_head_classifier


def run_head_variant(args, *, variant: str, trainable_blocks: int, config: HeadTrainingConfig) -> None:
    mlflow_registry.configure_tracking()
    with mlflow.start_run(run_name=f"{variant}-{args.pattern}"):
        mlflow.set_tags({"variant": variant, "pattern": args.pattern})
        mlflow_runs.log_params({**{k: v for k, v in vars(args).items()}, "variant": variant,
                                "trainable_blocks": trainable_blocks,
                                "weights_description": describe_weights(args.weights).description,
                                **{f"train_{k}": v for k, v in config.__dict__.items()}})
        prepared = common.prepare_data(args)
        common.log_data(prepared)
        classifier = build_head_classifier(args.weights, prepared.image_size, trainable_blocks=trainable_blocks,
                                           pooling=args.pooling, dense_units=args.dense_units, dropout=args.dropout)
        history = train_head_classifier(classifier, prepared.x["train"], prepared.y["train"],
                                        prepared.x["val"], prepared.y["val"], config, on_epoch=mlflow_runs.log_epoch)
        common.log_history(history)
        views = args.test_time_views

        def score(split):  # as the registered model will: the mean over `views` views of each image
            return mean_over_views(lambda images: predict_in_batches(classifier.full, images, desc=split)[:, 0],
                                   prepared.x[split], views)

        threshold = args.threshold
        if threshold == "auto":
            p_val = history["val_p_defect"] if views == 1 else score("val")
            threshold = resolve_threshold(threshold, prepared.y["val"], p_val)
        mlflow.log_metric("operating_threshold", threshold)
        p_test = score("test")
        common.log_test_report(prepared, p_test, threshold)
        with tempfile.TemporaryDirectory() as tmp:
            keras_path = Path(tmp) / "classifier.keras"
            classifier.full.save(keras_path)
            model_config = model_config_dict(variant=variant, image_size=prepared.image_size,
                                             class_names=prepared.class_names, threshold=threshold,
                                             weights=args.weights, model_version="", test_time_views=views)
            ref = common.register_model(DefectClassifierModel(), {"keras_model": str(keras_path)}, model_config,
                                        prepared, args, variant)
        common.print_where_to_look(ref)


def add_head_arguments(parser) -> None:
    group = parser.add_argument_group("head")
    group.add_argument("--pooling", default="avg", choices=["avg", "max", "avgmax", "stats"])
    group.add_argument("--dense-units", type=common.integer, default=256)
    group.add_argument("--dropout", type=float, default=0.5)
    group.add_argument("--batch-size", type=common.integer, default=16)
    group.add_argument("--lr-head", type=float, default=1e-3)
    group.add_argument("--patience", type=common.integer, default=4, help="early stopping patience on validation loss")
    group.add_argument("--augment", type=common.str2bool, default=False,
                       help="random flips and 90-degree rotations (label-preserving for textures)")
    group.add_argument("--test-time-views", type=common.integer, default=1, choices=TEST_TIME_VIEWS,
                       help="score each image as the mean P(defect) over its 8 flip/rotation views (8: "
                            "8x the inference cost, in the threshold, the test report and the registered "
                            "model alike; pairs with augment=true) or as it is (1)")
