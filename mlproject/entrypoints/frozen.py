"""``frozen``: VGG16 frozen, a dense head trained on its standardised multi-block features."""

from __future__ import annotations

import argparse

from mlproject.training import common
from mlproject.training.head_search import AUTO, HeadSearchSettings
from mlproject.training.head_training import HeadTrainingConfig
from mlproject.training.keras_run import add_head_arguments, run_head_variant

#: The head is searched by default, each candidate cross-validated over train + validation. On repeated
#: splits without the test part (benchmarks/head_search_cv.py, RESULTS.md "The `frozen` head") it was at
#: least the fixed 256-unit head on every suite dataset and far above it on DAGM, whose small training
#: set the wide head overfits; scored on the validation split alone it lost on elpv.
HEAD_DEFAULTS = HeadSearchSettings(lr_head=AUTO, dropout=AUTO, dense_units=AUTO, search_data="train+val_cv")


def build_parser() -> argparse.ArgumentParser:
    """Every option of this entry point; MLproject declares each as a parameter (a test checks it)."""
    parser = argparse.ArgumentParser(prog="frozen", description=__doc__)
    common.add_training_arguments(parser)
    add_head_arguments(parser, patience=10, patience_help="early stopping patience on validation loss (head epochs)",
                       defaults=HEAD_DEFAULTS)
    parser.add_argument("--epochs", type=common.integer, default=100,
                        help="head epochs on cached features (early stopping usually ends sooner)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    # The head reads pooled vectors: cached even with augmentation (8 vectors per image).
    config = HeadTrainingConfig(warmup_epochs=args.epochs, finetune_epochs=0, batch_size=args.batch_size,
                                warmup_patience=args.patience, augment=args.augment,
                                cache_frozen_outputs=True, time_budget_s=args.time_budget_s, seed=args.seed)
    run_head_variant(args, variant="frozen", trainable_blocks=0, config=config)


if __name__ == "__main__":
    main()
