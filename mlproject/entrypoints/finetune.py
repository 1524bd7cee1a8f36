"""``finetune``: head warm-up on standardised frozen features, then the last N conv blocks unfrozen."""

from __future__ import annotations

import argparse

from mlproject.training import common
from mlproject.training.head_training import WARMUP_PATIENCE, HeadTrainingConfig
from mlproject.training.keras_run import add_head_arguments, run_head_variant


def build_parser() -> argparse.ArgumentParser:
    """Every option of this entry point; MLproject declares each as a parameter (a test checks it)."""
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__)
    common.add_training_arguments(parser)
    add_head_arguments(parser, patience=5, patience_help="early stopping patience of fine-tuning on validation loss")
    parser.add_argument("--trainable-blocks", type=common.integer, default=1, help="last N VGG16 blocks to unfreeze (1 = block5)")
    parser.add_argument("--warmup-epochs", type=common.integer, default=100,
                        help=f"head warm-up epochs on cached features (stops after {WARMUP_PATIENCE} without progress)")
    parser.add_argument("--epochs", type=common.integer, default=30,
                        help="fine-tuning epochs (early stopping or the time budget may end sooner)")
    parser.add_argument("--lr-finetune", type=float, default=5e-5,
                        help="fine-tuning's initial learning rate, halved when validation loss stalls for 2 epochs")
    parser.add_argument("--cache-frozen-outputs", default="auto", choices=["auto", "true", "false"],
                        help="train on the frozen blocks' outputs computed once (auto: unless augmenting); "
                             "with augment=true, true caches all 8 flip/rotation views of each training "
                             "image (8x the cache's build time and memory, then fast epochs)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    cache = (not args.augment) if args.cache_frozen_outputs == "auto" else common.str2bool(args.cache_frozen_outputs)
    config = HeadTrainingConfig(warmup_epochs=args.warmup_epochs, finetune_epochs=args.epochs,
                                batch_size=args.batch_size, lr_finetune=args.lr_finetune,
                                patience=args.patience, augment=args.augment, cache_frozen_outputs=cache,
                                time_budget_s=args.time_budget_s, seed=args.seed)
    run_head_variant(args, variant="finetune", trainable_blocks=args.trainable_blocks, config=config)


if __name__ == "__main__":
    main()
