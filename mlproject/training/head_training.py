"""Training the ``frozen`` and ``finetune`` variants: head warm-up, then unfreeze the tail blocks.

The fixed blocks never change, so their outputs can be computed once and the trainable part trained
on them (measured about 5x faster here). Augmentation does not prevent that: it draws from the 8
flip/rotation views of each image, a finite set, so the cache holds the fixed blocks' outputs for all
8 views of every training image (8 times the cache's build time and memory) and each epoch draws
one view per image, as the from-images path does. Both paths train the same layers with the same
losses, weights and augmentation draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from mlproject.models.variants import HeadClassifier
from mlproject.training.batches import (
    DIHEDRAL_VIEWS,
    CachedViewBatches,
    ImageBatches,
    dihedral_view,
    predict_in_batches,
)

EpochCallback = Callable[[int, dict], None]

#: Images per forward pass when building the cache (its working memory is checked up front).
CACHE_BATCH_SIZE = 32


@dataclass(frozen=True)
class HeadTrainingConfig:
    warmup_epochs: int = 5
    finetune_epochs: int = 10
    batch_size: int = 16
    lr_head: float = 1e-3
    lr_finetune: float = 1e-5
    patience: int = 4
    augment: bool = False
    cache_frozen_outputs: bool = True
    seed: int = 0


def available_memory_bytes() -> int | None:
    """Memory the OS can give now without swapping (Linux's MemAvailable); None where it cannot tell."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def forward_batch_bytes(model: keras.Model, batch_size: int) -> int:
    """Working memory of one ``batch_size`` forward pass of ``model``: its largest layer input +
    output (float32) 2.5 times over, for oneDNN's reordered copies and allocator slack. The factor is
    measured: the process's RSS swung by 9-10 GB per 32-image batch through VGG16 blocks 1-4 at
    512 px here; this gives 10 GiB."""
    largest = max((int(np.prod(layer.input.shape[1:])) + int(np.prod(layer.output.shape[1:]))
                   for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)), default=0)
    return int(2.5 * batch_size * largest * 4)


def check_cache_fits(n_train: int, n_val: int, views: int, per_image_bytes: int, working_bytes: int,
                     available: int | None, batch_size: int = CACHE_BATCH_SIZE) -> None:
    """Fail before hours of work when the cached outputs plus the forward passes that build them
    cannot fit in memory."""
    cached = (n_train * views + n_val) * per_image_bytes
    needed = cached + working_bytes
    if available is not None and needed > 0.8 * available:
        raise MemoryError(
            f"caching the frozen blocks' outputs needs {needed / 2**30:.1f} GiB: {cached / 2**30:.1f} GiB of "
            f"outputs ({n_train} training images x {views} view(s) + {n_val} validation images, "
            f"{per_image_bytes / 2**20:.1f} MiB each) and {working_bytes / 2**30:.1f} GiB to compute them "
            f"{batch_size} images at a time, but only {available / 2**30:.1f} GiB is free. "
            "Pass cache_frozen_outputs=false (train from images), a smaller image_size, or fewer trainable_blocks."
        )


def balanced_sample_weights(labels: np.ndarray) -> np.ndarray:
    """Weights n / (2 * n_class) per sample, so both classes weigh the same in the loss."""
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2).astype(float)
    per_class = np.where(counts > 0, len(labels) / (2.0 * np.maximum(counts, 1)), 0.0)
    return per_class[labels]


class _EpochRelay(keras.callbacks.Callback):
    """Relays each epoch's logs to a plain function, numbering epochs across training phases."""

    def __init__(self, history: dict, offset: int, on_epoch: EpochCallback | None):
        super().__init__()
        self.history, self.offset, self.on_epoch = history, offset, on_epoch
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items() if k in ("accuracy", "loss", "val_accuracy", "val_loss")}
        logs["epoch_seconds"] = time.perf_counter() - self.started
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        if self.on_epoch:
            self.on_epoch(self.offset + epoch, logs)


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )


def _fit(model, train, validation, epochs, config, history, offset, on_epoch):
    """``train`` is a batch sequence, or (x, y, sample weights) arrays shuffled by Keras."""
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        _EpochRelay(history, offset, on_epoch),
    ]
    if isinstance(train, tuple):
        x, y, w = train
        model.fit(x, y, sample_weight=w, validation_data=validation, epochs=epochs, batch_size=config.batch_size,
                  shuffle=True, callbacks=callbacks, verbose=2)
    else:
        try:
            model.fit(train, validation_data=validation, epochs=epochs, callbacks=callbacks, verbose=2)
        finally:
            train.release()  # each phase makes its own; Keras would keep its data alive
    return len(history.get("loss", [])) - offset


def _cached_train(outputs: list, y, weights, config):
    """Training data from cached outputs: one array, or all 8 views when augmenting."""
    if config.augment:
        return CachedViewBatches(outputs, y, batch_size=config.batch_size, sample_weights=weights, seed=config.seed)
    return outputs[0], y, weights


def train_head_classifier(
    classifier: HeadClassifier,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: HeadTrainingConfig,
    *,
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Train ``classifier`` in place on uint8 images; return the per-epoch history.

    ``history`` holds ``accuracy``, ``loss``, ``val_accuracy``, ``val_loss`` lists across both phases,
    ``phase_boundary`` = [epochs of the warm-up] when a fine-tuning phase followed, and
    ``val_p_defect``: P(defect) of each validation image under the weights kept (from the cached
    outputs where there are some: the operating point is picked on these without another pass
    through the fixed blocks, ~1-1.5 s per image at 512 px here).
    """
    keras.utils.set_random_seed(config.seed)
    y_train = np.asarray(y_train, dtype=np.float32)
    y_val = np.asarray(y_val, dtype=np.float32)
    weights = balanced_sample_weights(y_train)
    history: dict = {}
    has_tail = bool(classifier.tail_conv_layers)

    if config.cache_frozen_outputs:
        # Both the fixed blocks' and the (warm-up) tail's outputs are kept, per image and view.
        per_image_bytes = 4 * sum(int(np.prod(m.output.shape[1:])) for m in (classifier.fixed, classifier.tail))
        check_cache_fits(len(x_train), len(x_val), DIHEDRAL_VIEWS if config.augment else 1, per_image_bytes,
                         forward_batch_bytes(classifier.fixed, CACHE_BATCH_SIZE), available_memory_bytes(),
                         CACHE_BATCH_SIZE)

        def fixed_outputs(images, desc):
            return predict_in_batches(classifier.fixed, images, batch_size=CACHE_BATCH_SIZE, desc=desc)

        if config.augment:
            fixed_train = [fixed_outputs(dihedral_view(x_train, v), f"frozen blocks (train, view {v + 1}/{DIHEDRAL_VIEWS})")
                           for v in range(DIHEDRAL_VIEWS)]
        else:
            fixed_train = [fixed_outputs(x_train, "frozen blocks (train)")]
        fixed_val = fixed_outputs(x_val, "frozen blocks (val)")
        # During warm-up the tail is frozen too, so its output can be cached as well.
        classifier.set_tail_trainable(False)
        tail_train = [np.asarray(classifier.tail.predict(f, batch_size=config.batch_size, verbose=0))
                      for f in fixed_train]
        tail_val = np.asarray(classifier.tail.predict(fixed_val, batch_size=config.batch_size, verbose=0))
        _compile(classifier.head, config.lr_head)
        warmup = _fit(classifier.head, _cached_train(tail_train, y_train, weights, config), (tail_val, y_val),
                      config.warmup_epochs, config, history, 0, on_epoch)
        if has_tail and config.finetune_epochs > 0:
            classifier.set_tail_trainable(True)
            tail_input = keras.Input(shape=tuple(classifier.fixed.output.shape[1:]))
            trainable_part = keras.Model(tail_input, classifier.head(classifier.tail(tail_input)))
            _compile(trainable_part, config.lr_finetune)
            _fit(trainable_part, _cached_train(fixed_train, y_train, weights, config), (fixed_val, y_val),
                 config.finetune_epochs, config, history, warmup, on_epoch)
            history["phase_boundary"] = [warmup]
            p_val = trainable_part.predict(fixed_val, batch_size=config.batch_size, verbose=0)
        else:
            p_val = classifier.head.predict(tail_val, batch_size=config.batch_size, verbose=0)
    else:
        def image_batches():  # a fresh sequence per phase, as the cached path makes one
            return ImageBatches(x_train, y_train, batch_size=config.batch_size, sample_weights=weights,
                                augment=config.augment, seed=config.seed)

        validation = ImageBatches(x_val, y_val, batch_size=config.batch_size, shuffle=False)
        classifier.set_tail_trainable(False)
        _compile(classifier.full, config.lr_head)
        warmup = _fit(classifier.full, image_batches(), validation, config.warmup_epochs, config, history, 0,
                      on_epoch)
        if has_tail and config.finetune_epochs > 0:
            classifier.set_tail_trainable(True)
            _compile(classifier.full, config.lr_finetune)
            _fit(classifier.full, image_batches(), validation, config.finetune_epochs, config, history, warmup,
                 on_epoch)
            history["phase_boundary"] = [warmup]
        p_val = predict_in_batches(classifier.full, x_val, desc="val (operating point)")
    classifier.set_tail_trainable(False)
    history["val_p_defect"] = np.asarray(p_val, dtype=float)[:, 0]
    return history
