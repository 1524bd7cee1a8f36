"""Shared body of the ``frozen`` and ``finetune`` entry points."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np

from integrations import mlflow_registry, mlflow_runs
from mlproject.evaluation.threshold import resolve_threshold
from mlproject.models.backbone import describe_weights
from mlproject.models.variants import PRECISIONS, build_head_classifier
from mlproject.models.views import TEST_TIME_VIEWS, view_scores
from mlproject.registry.pyfunc import DefectClassifierModel, model_config_dict
from mlproject.training import common
from mlproject.training.batches import predict_in_batches
from mlproject.training.fast_scoring import choose_fast_scoring, fast_scores
from mlproject.training.head_search import (SEARCHED_HEAD, HeadChoice, HeadSearchSettings, HeadTrial, parse_auto,
                                            search_head)
from mlproject.training.head_training import HeadTrainingConfig, prepare_training_inputs, train_head_classifier
from mlproject.training.svm_training import SEARCH_DATA

log = logging.getLogger("alloop")

#: Default wall-time budget of training (cache, warm-up, fine-tuning) in seconds; test scoring and
#: registration come on top (a few minutes on 2 vCPUs), so the whole run stays under 45 minutes.
DEFAULT_TIME_BUDGET_S = 2400.0


def resolve_precision(choice: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, str]:
    """(precision, why): ``auto`` is bfloat16 where the CPU computes it natively (AVX512_BF16 or
    AMX: a fine-tuning step took half the time here), else float32."""
    if choice in PRECISIONS:
        return choice, "given"
    if choice != "auto":
        raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {choice!r}")
    try:
        flags = cpuinfo.read_text()
    except OSError:
        flags = ""
    for flag in ("avx512_bf16", "amx_bf16"):
        if flag in flags:
            return "bfloat16", f"auto: the CPU has {flag}"
    return "float32", "auto: no native bfloat16 on this CPU"


def head_search_settings(args) -> HeadSearchSettings:
    return HeadSearchSettings(lr_head=args.lr_head, dropout=args.dropout, dense_units=args.dense_units,
                              search_trials=args.head_search_trials, search_budget_s=args.head_search_budget_s,
                              search_data=args.head_search_data, search_folds=args.head_search_folds, seed=args.seed)


def log_head_trial(trial: HeadTrial) -> None:
    """One head candidate as a child run of the entry point's run (the MLflow UI compares them); its
    metrics are named by what they were scored on (``val_`` or ``cv_``)."""
    prefix = trial.metric_prefix
    with mlflow.start_run(run_name=f"head-trial-{trial.number}", nested=True):
        mlflow.log_params({"lr_head": trial.choice.lr_head, "dropout": trial.choice.dropout,
                           "dense_units": trial.choice.dense_units, "trial": trial.number, "scored_on": trial.scored_on})
        mlflow.log_metrics({f"{prefix}loss": trial.val_loss, f"{prefix}roc_auc": trial.val_roc_auc,
                            "epochs": trial.epochs, "fit_seconds": trial.seconds})


def run_head_variant(args, *, variant: str, trainable_blocks: int, config: HeadTrainingConfig) -> None:
    """``config``'s ``lr_head`` is set here: given, or chosen by the head search (``auto``)."""
    mlflow_registry.configure_tracking()
    with mlflow.start_run(run_name=f"{variant}-{args.pattern}"):
        mlflow.set_tags({"variant": variant, "pattern": args.pattern})
        precision, precision_reason = resolve_precision(args.precision)
        mlflow_runs.log_params({**{k: v for k, v in vars(args).items()}, "variant": variant,
                                "trainable_blocks": trainable_blocks, "precision_used": precision,
                                "precision_reason": precision_reason,
                                "weights_description": describe_weights(args.weights).description,
                                **{f"train_{k}": v for k, v in config.__dict__.items() if k != "lr_head"}})
        prepared = common.prepare_data(common.DataSettings.from_args(args))
        common.log_data(prepared)

        def build(compute, head: HeadChoice):
            return build_head_classifier(args.weights, prepared.image_size, trainable_blocks=trainable_blocks,
                                         feature_layers=common.feature_layers(args.feature_layers), pooling=args.pooling,
                                         log_features=args.log_features, dense_units=head.dense_units,
                                         dropout=head.dropout, precision=compute)

        settings = head_search_settings(args)
        head = settings.given_or_default()
        classifier = build(precision, head)
        started = time.perf_counter()  # the time budget counts the cache and the search too
        inputs = prepare_training_inputs(classifier, prepared.x["train"], prepared.x["val"], config)
        if settings.needs_search:
            search = search_head(inputs.vectors_train, prepared.y["train"], inputs.vectors_val, prepared.y["val"],
                                 settings, config, on_trial=log_head_trial)
            mlflow.log_params({"lr_head_chosen": search.choice.lr_head, "dropout_chosen": search.choice.dropout,
                               "dense_units_chosen": search.choice.dense_units,
                               "head_search_trials_run": len(search.trials),
                               "head_search_data_used": search.search_data})
            if search.search_data != settings.search_data:
                print(f"head_search_data={settings.search_data}: too few images of a class for "
                      f"{settings.search_folds} folds, or augmented training views, so the head search scored on "
                      "the validation split (param head_search_data_used)")
            if (search.choice.dense_units, search.choice.dropout) != (head.dense_units, head.dropout):
                # Another head on the same blocks: the cached outputs and vectors stay valid.
                rebuilt = build(precision, search.choice)
                rebuilt.fixed.set_weights(classifier.fixed.get_weights())
                if classifier.tail is not None:
                    rebuilt.tail.set_weights(classifier.tail.get_weights())
                classifier = rebuilt
            head = search.choice
        config = replace(config, lr_head=head.lr_head)
        history = train_head_classifier(classifier, prepared.x["train"], prepared.y["train"],
                                        prepared.x["val"], prepared.y["val"], config, on_epoch=mlflow_runs.log_epoch,
                                        inputs=inputs, started_at=started)
        common.log_history(history)
        mlflow.log_metrics({"train_seconds": history["train_seconds"],
                            "stopped_by_budget": float(history["stopped_by_budget"])})
        mlflow.set_tags({"kept_weights": history["kept"]})
        p_val_training = history["val_p_defect"]
        if precision != "float32":
            # The registered model computes in float32 (serving anywhere); copy the trained weights.
            trained = classifier
            classifier = build("float32")
            classifier.full.set_weights(trained.full.get_weights())
            del trained
        views = args.test_time_views

        def one_view(split):
            return predict_in_batches(classifier.full, prepared.x[split], desc=split)[:, 0]

        def score_views(split, first=None):  # exactly: each of the `views` views of each image, (N, views)
            return view_scores(lambda images: predict_in_batches(classifier.full, images, desc=split)[:, 0],
                               prepared.x[split], views, first=first)

        threshold = args.threshold
        p_val_one = p_val_training if precision == "float32" else None
        if views > 1 or p_val_one is None:
            p_val_views = score_views("val", first=p_val_one)
        else:
            p_val_views = p_val_one[:, None]
        p_val = p_val_views.mean(axis=1)
        if threshold == "auto":
            threshold = resolve_threshold(threshold, prepared.y["val"], p_val)
        if precision != "float32" and views == 1:
            agree = float(np.mean((p_val >= threshold) == (p_val_training >= threshold)))
            mlflow.log_metrics({"bfloat16_val_decision_agreement": agree,
                                "bfloat16_val_max_abs_diff": float(np.max(np.abs(p_val - p_val_training), initial=0))})
            log.info("bfloat16 training vs float32 serving: %.1f%% of validation decisions agree", 100 * agree)
        mlflow.log_metric("operating_threshold", threshold)
        fast = {}
        p_test = score_views("test").mean(axis=1)
        if views > 1:
            # The registered model scores fast; the test report shows what it serves.
            fast, fast_metrics = choose_fast_scoring(classifier.full, prepared.x["val"], p_val_views, threshold)
            mlflow.log_params({key: value for key, value in fast.items() if key != "view_gate_margins"})
            mlflow.log_metrics(fast_metrics)  # the margins are among them
            p_test_exact = p_test
            p_test = fast_scores(classifier.full, prepared.x["test"], threshold, views, **fast)
            mlflow.log_metric("fast_scoring_test_flips", int(((p_test >= threshold) != (p_test_exact >= threshold)).sum()))
        common.log_test_report(prepared, p_test, threshold)
        with tempfile.TemporaryDirectory() as tmp:
            keras_path = Path(tmp) / "classifier.keras"
            classifier.full.save(keras_path)
            model_config = model_config_dict(variant=variant, image_size=prepared.image_size,
                                             class_names=prepared.class_names, threshold=threshold,
                                             weights=args.weights, model_version="", test_time_views=views, **fast)
            ref = common.register_model(DefectClassifierModel(), {"keras_model": str(keras_path)}, model_config,
                                        prepared, common.RegistrationSettings.from_args(args), variant)
        if settings.needs_search:
            mlflow_registry.tag_version(ref, {"chosen.lr_head": head.lr_head, "chosen.dropout": head.dropout,
                                              "chosen.dense_units": head.dense_units})
        common.print_where_to_look(ref)


def add_head_arguments(parser, *, patience: int, patience_help: str) -> None:
    """The head's options; by default the head is searched (``SEARCHED_HEAD``: every setting ``auto``)."""
    defaults = SEARCHED_HEAD
    common.add_feature_arguments(parser)
    group = parser.add_argument_group("head")
    group.add_argument("--dense-units", type=parse_auto(int), default=defaults.dense_units,
                       help="units of the head's hidden layer (0: a linear head), or 'auto' (searched)")
    group.add_argument("--dropout", type=parse_auto(float), default=defaults.dropout,
                       help="dropout before each of the head's dense layers, or 'auto' (searched)")
    group.add_argument("--batch-size", type=common.integer, default=16)
    group.add_argument("--lr-head", type=parse_auto(float), default=defaults.lr_head,
                       help="the head's learning rate (standardised inputs), or 'auto' (searched)")
    common.add_search_arguments(group, prefix="head-", defaults=defaults, searched="lr_head, dropout or dense_units",
                                search_data=SEARCH_DATA, cv_note="; not with augment")
    group.add_argument("--patience", type=common.integer, default=patience, help=patience_help)
    group.add_argument("--augment", type=common.str2bool, default=False,
                       help="random flips and 90-degree rotations (label-preserving for textures); cached, "
                            "it costs 8 forward passes per training image")
    group.add_argument("--test-time-views", type=common.integer, default=1, choices=TEST_TIME_VIEWS,
                       help="score each image as the mean P(defect) over its 8 flip/rotation views (8: "
                            "in the threshold, the test report and the registered model alike; pairs with "
                            "augment=true; the registered model scores the other 7 views only near the "
                            "threshold, see view_gate_margins) or as it is (1)")
    group.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                       help="the conv blocks' compute precision in training; auto: bfloat16 where the CPU "
                            "has it natively. The registered model computes in float32 (with 8 test-time views, "
                            "fast scoring may choose bfloat16 on validation).")
    group.add_argument("--time-budget-s", type=float, default=DEFAULT_TIME_BUDGET_S,
                       help="training's wall-time budget in seconds: no epoch starts that would end past it")
