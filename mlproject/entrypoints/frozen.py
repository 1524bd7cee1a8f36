"""``frozen``: VGG16 frozen, a dense head trained on its standardised multi-block features."""

from __future__ import annotations

import argparse

from mlproject.training import common
from mlproject.training.head_training import HeadTrainingConfig
from mlproject.training.keras_run import add_head_arguments, run_head_variant


def build_parser() -> argparse.ArgumentParser:
    """Every option of this entry point; MLproject declares each as a parameter (a test checks it)."""
    parser = argparse.ArgumentParser(prog="frozen", description=__doc__)
    common.add_training_arguments(parser)
    add_head_arguments(parser, patience=10, patience_help="early stopping patience on validation loss (head epochs)")
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
