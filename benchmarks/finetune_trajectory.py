"""Diagnostic: how `finetune`'s test balanced accuracy moves epoch by epoch on DAGM class 1.

The `finetune` entry point reports the test split once, for the weights early stopping keeps. To see
whether a miss comes from *which* epoch was kept or from what the model can learn at all, this
script trains the same layers the same way (head warm-up on cached block5 outputs, then block5 + head
on cached block4 outputs, balanced sample weights, Adam, early stopping on validation loss) and scores
the test split after every epoch. The test scores never steer training; they are only printed.

block4 outputs are computed once per (data, split, image size, weights) and stored in float16 under
``--cache`` (~600 MB at 512 px), so several settings can be compared without recomputing them
(~15 min here at 512 px).

Usage:
  python benchmarks/finetune_trajectory.py --data ../shared/data/dagm --warmup-epochs 8 --epochs 20 \
      --patience 100 --out benchmarks/out/trajectory-plain.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # run as a script from a checkout


def block4_outputs(args) -> dict:
    import numpy as np

    cache = Path(args.cache)
    if cache.exists():
        stored = np.load(cache)
        return {key: stored[key] for key in stored.files}
    from mlproject.training.batches import predict_in_batches

    prepared, classifier = split_and_backbone(args)
    out = {}
    for name in ("train", "val", "test"):
        out[f"f_{name}"] = predict_in_batches(classifier.fixed, prepared.x[name], desc=name).astype(np.float16)
        out[f"y_{name}"] = prepared.y[name]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


#: The product's view numbers (``dihedral_view``: v % 4 quarter turns, mirrored if v >= 4), ordered so
#: that the first 2 and the first 4 are subgroups: identity and a half turn; then the two mirrors;
#: then the quarter turns.
VIEW_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def train_views(args, first_view):
    """block4 outputs of the training images under the first ``--train-views`` dihedral transforms.

    Flips and quarter turns leave a texture's label unchanged; the group is finite, so caching every
    view and drawing one per image per epoch samples the same augmentations as transforming images
    on the fly would.
    """
    import numpy as np

    views = [first_view]
    prepared = classifier = None
    for view in VIEW_ORDER[1 : args.train_views]:
        path = Path(args.cache).with_suffix(f".view-{view}.npy")
        if not path.exists():
            if prepared is None:
                from mlproject.training.batches import dihedral_view, predict_in_batches

                prepared, classifier = split_and_backbone(args)
            images = dihedral_view(prepared.x["train"], view)
            np.save(path, predict_in_batches(classifier.fixed, images, desc=f"train view {view}").astype(np.float16))
        views.append(np.load(path))
    return views


def tta_view_cache(args) -> None:
    """``--tta-views``: the frozen blocks' outputs for the 8 views of the validation and test images.

    ``bench_tta.py`` builds this folder from a registered model; on a machine that has none (a fresh
    one), it is built here from the same backbone, with the same function and layout.
    """
    folder = Path(args.tta_views)
    if (folder / "rows.csv").exists() and all((folder / f"view-{v}.npy").exists() for v in range(8)):
        return
    from bench_tta import block4_views

    prepared, classifier = split_and_backbone(args)
    # val then test, each in the order of the split's arrays (the labels come from those arrays)
    rows = [{"image": record.path, "split": name, "label": record.label}
            for name in ("val", "test") for record in prepared.kept[name]]
    block4_views(classifier.fixed, rows, args.image_size, folder)


def split_and_backbone(args):
    """The split's decoded images and the `finetune` classifier whose frozen blocks make the caches."""
    from mlproject.models.variants import build_head_classifier
    from mlproject.training import common

    prepared = common.prepare_data(data_arguments(args), args.image_size)
    return prepared, build_head_classifier(args.weights, args.image_size, trainable_blocks=1, pooling=args.pooling)


def data_arguments(args) -> argparse.Namespace:
    return argparse.Namespace(data=args.data, layout="auto", pattern=args.pattern, positive_label="defect",
                              split_seed=args.split_seed, val_fraction=0.15, test_fraction=0.2,
                              skip_bad_images=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dagm"))
    parser.add_argument("--pattern", default="Class1")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--weights", default="hed")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--pooling", default="stats")
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--head-norm", action="store_true", help="BatchNormalization after pooling (tried, not used)")
    parser.add_argument("--warmup-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--lr-head", type=float, default=1e-3)
    parser.add_argument("--lr-finetune", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-views", type=int, default=1, choices=[1, 2, 4, 8],
                        help="augment with this many dihedral views of each training image (1 = none)")
    parser.add_argument("--cache", default=str(REPO / "benchmarks" / "out" / "block4-class1-512-hed.npz"))
    parser.add_argument("--tta-views", default=None,
                        help="folder of bench_tta.py's cached views of the val and test images: also score the kept "
                             "model as the mean over the 8 views")
    parser.add_argument("--kept-only", action="store_true",
                        help="score the test split only for the models early stopping keeps, not after every epoch "
                             "(~15%% faster; for checking more seeds)")
    parser.add_argument("--out", required=True, help="JSON lines, one per epoch")
    args = parser.parse_args()

    import keras
    import numpy as np
    from bench_threshold import operating_point
    from sklearn.metrics import roc_auc_score

    from mlproject.evaluation.threshold import resolve_threshold
    from mlproject.models.layers import global_pool
    from mlproject.models.variants import build_head_classifier
    from mlproject.training.head_training import balanced_sample_weights

    started = time.perf_counter()
    stored = block4_outputs(args)
    fixed = {k: stored[f"f_{k}"].astype(np.float32) for k in ("train", "val", "test")}
    y = {k: stored[f"y_{k}"].astype(np.float32) for k in ("train", "val", "test")}
    keras.utils.set_random_seed(args.seed)
    classifier = build_head_classifier(args.weights, args.image_size, trainable_blocks=1, pooling=args.pooling,
                                       dropout=args.dropout)
    # The entry point's head structure (pool, dropout, dense, dropout, sigmoid), built here so that
    # BatchNormalization after pooling can be tried; without --head-norm it is the product's head.
    inputs = keras.Input(shape=tuple(classifier.tail.output.shape[1:]))
    h = global_pool(inputs, args.pooling, name="pool")
    if args.head_norm:
        h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(args.dropout)(h)
    h = keras.layers.Dense(256, activation="relu")(h)
    h = keras.layers.Dropout(args.dropout)(h)
    head = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    classifier.set_tail_trainable(False)
    tail = {k: np.asarray(classifier.tail.predict(v, batch_size=16, verbose=0)) for k, v in fixed.items()}
    # the other views stay float16 (8 views x 374 images in float32 would take 6 GB more) and are
    # widened per batch
    fixed_views = [fixed["train"]] + train_views(args, stored["f_train"])[1:]
    if args.tta_views:
        tta_view_cache(args)
    tail_views = [tail["train"]] + [np.asarray(classifier.tail.predict(v.astype(np.float32), batch_size=16, verbose=0))
                                    for v in fixed_views[1:]]
    weights = balanced_sample_weights(y["train"])
    log = open(args.out, "w")

    def score(model, inputs, phase, epoch, logs):
        p_val = model.predict(inputs["val"], batch_size=16, verbose=0)[:, 0]
        p_test = model.predict(inputs["test"], batch_size=16, verbose=0)[:, 0]
        record(phase, epoch, logs, p_val, p_test)

    def record(phase, epoch, logs, p_val=None, p_test=None):
        """One JSON line: the epoch's training logs, and the test scores if given."""
        row = {"phase": phase, "epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        if p_val is not None:
            # the threshold as the entry point picks it
            point = operating_point(y["test"], p_test, resolve_threshold("auto", y["val"], p_val))
            row.update({"val_auc": roc_auc_score(y["val"], p_val), "threshold": point["threshold"],
                        "test_auc": roc_auc_score(y["test"], p_test),
                        "test_balanced_accuracy": point["balanced_accuracy"],
                        "test_defects_missed": point["defects"] - point["defects_found"],
                        "test_false_alarms": point["false_alarms"]})
        row["seconds"] = time.perf_counter() - started
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    class RecordEachEpoch(keras.callbacks.Callback):
        def __init__(self, inputs, phase):
            super().__init__()
            self.inputs, self.phase = inputs, phase

        def on_epoch_end(self, epoch, logs=None):
            if args.kept_only:  # the training curves only
                record(self.phase, epoch, logs)
            else:
                score(self.model, self.inputs, self.phase, epoch, logs)

    class RandomViewBatches(keras.utils.PyDataset):
        """Each epoch, each training image in one of its cached views, drawn at random."""

        def __init__(self, views):
            super().__init__()
            self.views, self.rng = views, np.random.default_rng(args.seed)
            self.order = self.rng.permutation(len(y["train"]))

        def __len__(self):
            return -(-len(self.order) // 16)

        def __getitem__(self, index):
            idx = self.order[index * 16 : (index + 1) * 16]
            picked = self.rng.integers(len(self.views), size=len(idx))
            x = np.stack([self.views[v][i] for v, i in zip(picked, idx)]).astype(np.float32)
            return x, y["train"][idx], weights[idx]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(self.order))

    def fit(model, inputs, views, epochs, learning_rate, phase):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True)
        callbacks = [stop, RecordEachEpoch(inputs, phase)]
        if len(views) == 1:
            model.fit(inputs["train"], y["train"], sample_weight=weights, validation_data=(inputs["val"], y["val"]),
                      epochs=epochs, batch_size=16, shuffle=True, verbose=0, callbacks=callbacks)
        else:
            model.fit(RandomViewBatches(views), validation_data=(inputs["val"], y["val"]), epochs=epochs, verbose=0,
                      callbacks=callbacks)
        score(model, inputs, f"{phase}-kept", stop.best_epoch, {})
        if phase == "finetune" and args.tta_views:
            score_test_time_views(model, stop.best_epoch)

    def score_test_time_views(model, epoch):
        """The kept model scored as the mean over the 8 views of each validation and test image
        (`bench_tta.py`'s cached block4 outputs; rows in the split's order, val and test interleaved)."""
        import csv

        with open(Path(args.tta_views) / "rows.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        is_val = np.array([r["split"] == "val" for r in rows])
        by_view = np.stack([model.predict(np.load(Path(args.tta_views) / f"view-{v}.npy", mmap_mode="r"),
                                          batch_size=16, verbose=0)[:, 0] for v in range(8)], axis=1)
        p = by_view.mean(axis=1)
        record("finetune-kept-8-views", epoch, {}, p[is_val], p[~is_val])
        # each image's scores, so that a miss can be named and looked at
        with open(Path(args.out).with_suffix(".8-views.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "split", "label", "p_mean", *(f"p_view{v}" for v in range(8))])
            for row, mean, scores in zip(rows, p, by_view):
                writer.writerow([row["image"], row["split"], row["label"], f"{mean:.6f}", *(f"{s:.6f}" for s in scores)])

    fit(head, tail, tail_views, args.warmup_epochs, args.lr_head, "warmup")
    classifier.set_tail_trainable(True)
    tail_input = keras.Input(shape=tuple(fixed["train"].shape[1:]))
    fit(keras.Model(tail_input, head(classifier.tail(tail_input))), fixed, fixed_views, args.epochs,
        args.lr_finetune, "finetune")


if __name__ == "__main__":
    main()
