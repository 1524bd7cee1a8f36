"""Training the ``frozen`` and ``finetune`` variants: head warm-up on standardised features, then
the tail blocks unfrozen.

The warm-up trains only the head on the pooled feature vectors, computed once (a dense layer on
cached vectors: seconds per epoch), so it can run until validation stops improving instead of for a
fixed handful of epochs; the head's ``Standardise`` layer is fitted on the training vectors first,
so its learning rate sees unit-scale inputs on any dataset. Fine-tuning then trains the tail on the
fixed blocks' cached outputs (measured about 5x faster here than from images), with the learning
rate halved when validation stalls, early stopping, a time budget, and the best epoch kept; it is
kept only if it beats the warm-up on validation.

Augmentation draws from the 8 flip/rotation views of each image, a finite set, so the cache can hold
the fixed blocks' outputs for all 8 views (8 times the cache's build time and memory) and each epoch
draws one view per image, as the from-images path does. Both paths train the same layers with the
same losses, weights and augmentation draws.

Validation losses are class-balanced like the training loss: with 1 defect in 8 images an unweighted
loss would pick the epoch that best fits the good images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from mlproject.models.variants import HeadClassifier
from mlproject.models.views import DIHEDRAL_VIEWS, dihedral_view
from mlproject.training.batches import CachedViewBatches, ImageBatches, predict_in_batches

EpochCallback = Callable[[int, dict], None]

#: Images per forward pass when building the cache (its working memory is checked up front).
CACHE_BATCH_SIZE = 32
#: The warm-up's early-stopping patience: its epochs cost milliseconds, so it may wait long.
WARMUP_PATIENCE = 10


@dataclass(frozen=True)
class HeadTrainingConfig:
    warmup_epochs: int = 100
    finetune_epochs: int = 30
    batch_size: int = 16
    lr_head: float = 1e-3
    lr_finetune: float = 5e-5
    warmup_patience: int = WARMUP_PATIENCE
    patience: int = 5
    augment: bool = False
    cache_frozen_outputs: bool = True
    time_budget_s: float | None = None  # training's wall time, cache included; no new epoch past it
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
    def size(tensors):
        return sum(int(np.prod(t.shape[1:])) for t in (tensors if isinstance(tensors, (list, tuple)) else [tensors]))

    largest = max((size(layer.input) + size(layer.output)
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
    """Weights n / (k * n_class) per sample for the k classes present, so each class weighs the same."""
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2).astype(float)
    present = int((counts > 0).sum())
    per_class = np.where(counts > 0, len(labels) / (max(present, 1) * np.maximum(counts, 1)), 0.0)
    return per_class[labels]


class _TimeBudget(keras.callbacks.Callback):
    """Stops before an epoch that would end past ``deadline`` (perf_counter time), judged by the last
    epoch's duration; early stopping's restore then keeps the best epoch seen."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline, self.started, self.stopped = deadline, 0.0, False

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if self.deadline is not None and now + (now - self.started) > self.deadline:
            self.model.stop_training = True
            self.stopped = True


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
        weighted_metrics=["accuracy"],
    )


def _fit(model, train, validation, epochs, *, batch_size, patience, history, offset, on_epoch, extra=(), verbose=2):
    """``train`` is a batch sequence, or (x, y, sample weights) arrays shuffled by Keras."""
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        _EpochRelay(history, offset, on_epoch),
        *extra,
    ]
    if isinstance(train, tuple):
        x, y, w = train
        model.fit(x, y, sample_weight=w, validation_data=validation, epochs=epochs, batch_size=batch_size,
                  shuffle=True, callbacks=callbacks, verbose=verbose)
    else:
        try:
            model.fit(train, validation_data=validation, epochs=epochs, callbacks=callbacks, verbose=verbose)
        finally:
            train.release()  # each phase makes its own; Keras would keep its data alive
    return len(history.get("loss", [])) - offset


def _train_data(views: list, y, weights, config: HeadTrainingConfig):
    """One view's arrays for Keras to shuffle, or batches drawing one of all 8 views per image."""
    if len(views) == DIHEDRAL_VIEWS:
        return CachedViewBatches(views, y, batch_size=config.batch_size, sample_weights=weights, seed=config.seed)
    return views[0], y, weights


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


@dataclass
class TrainingInputs:
    """What training reads besides the images, computed once: the fixed blocks' outputs (per training
    view, and for validation; None when training from images) and the head's feature vectors (the
    warm-up's training views, and validation). The head search trains its candidates on the vectors
    too. :meth:`release` drops them (at 512 px with 8 views they take gigabytes)."""

    fixed_train: list | None
    fixed_val: list | None
    vectors_train: list
    vectors_val: np.ndarray | None

    def release(self) -> None:
        self.fixed_train = self.fixed_val = self.vectors_val = None
        self.vectors_train = []


def prepare_training_inputs(classifier: HeadClassifier, x_train: np.ndarray, x_val: np.ndarray,
                            config: HeadTrainingConfig) -> TrainingInputs:
    """The fixed blocks' outputs (cached, if ``config`` says so) and the head's feature vectors."""
    has_tail = classifier.tail is not None and config.finetune_epochs > 0
    n_views = DIHEDRAL_VIEWS if config.augment else 1

    def features_of(fixed_outputs):
        return np.asarray(classifier.features_part.predict(fixed_outputs, batch_size=config.batch_size, verbose=0))

    if not config.cache_frozen_outputs:
        # Training from images (augmentation without a cache): the warm-up still runs on the
        # vectors of the images as they are, one forward pass, then fine-tuning sees augmented images.
        return TrainingInputs(None, None, [predict_in_batches(classifier.features, x_train, desc="features (train)")],
                              predict_in_batches(classifier.features, x_val, desc="features (val)"))
    per_image_bytes = 4 * sum(int(np.prod(o.shape[1:])) for o in classifier.fixed.outputs)
    check_cache_fits(len(x_train), len(x_val), n_views, per_image_bytes,
                     forward_batch_bytes(classifier.fixed, CACHE_BATCH_SIZE), available_memory_bytes(),
                     CACHE_BATCH_SIZE)

    def fixed_outputs(images, desc):
        return _as_list(predict_in_batches(classifier.fixed, images, batch_size=CACHE_BATCH_SIZE, desc=desc))

    if config.augment:
        fixed_train = [fixed_outputs(dihedral_view(x_train, v), f"frozen blocks (train, view {v + 1}/{n_views})")
                       for v in range(n_views)]
    else:
        fixed_train = [fixed_outputs(x_train, "frozen blocks (train)")]
    fixed_val = fixed_outputs(x_val, "frozen blocks (val)")
    # During warm-up the tail is frozen too, so the feature vectors can be computed once. Frozen: the
    # head is all that trains, so it sees the augmented views. Before fine-tuning it only needs a
    # converged start, which the images as they are give at 1/8 of the cost.
    vectors_train = [features_of(f) for f in (fixed_train if not has_tail else fixed_train[:1])]
    return TrainingInputs(fixed_train, fixed_val, vectors_train, features_of(fixed_val))


def fit_head(head: keras.Model, vectors_train: list, y_train: np.ndarray, vectors_val: np.ndarray, y_val: np.ndarray,
             config: HeadTrainingConfig, *, history: dict, on_epoch: EpochCallback | None = None,
             verbose: int = 2) -> int:
    """The head on cached vectors (one array per training view; with 8, each epoch draws one view per
    image): its ``Standardise`` fitted on the training vectors, balanced class weights, at most
    ``config.warmup_epochs`` at ``config.lr_head``, early stopping on the class-balanced validation
    loss with the best epoch kept. Returns the epochs run (their logs are in ``history``)."""
    y_train = np.asarray(y_train, dtype=np.float32)
    y_val = np.asarray(y_val, dtype=np.float32)
    head.get_layer("head_standardise").fit(np.concatenate(vectors_train))
    _compile(head, config.lr_head)
    return _fit(head, _train_data(vectors_train, y_train, balanced_sample_weights(y_train), config),
                (vectors_val, y_val, balanced_sample_weights(y_val)), config.warmup_epochs,
                batch_size=config.batch_size, patience=config.warmup_patience, history=history, offset=0,
                on_epoch=on_epoch, verbose=verbose)


def train_head_classifier(
    classifier: HeadClassifier,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: HeadTrainingConfig,
    *,
    on_epoch: EpochCallback | None = None,
    inputs: TrainingInputs | None = None,
    started_at: float | None = None,
) -> dict:
    """Train ``classifier`` in place on uint8 images; return the per-epoch history.

    ``history`` holds ``accuracy``, ``loss``, ``val_accuracy``, ``val_loss`` lists across both phases,
    ``phase_boundary`` = [epochs of the warm-up] when a fine-tuning phase followed, ``kept`` ("warm-up"
    or "fine-tuned"), ``stopped_by_budget``, and ``val_p_defect``: P(defect) of each validation image
    under the weights kept (from the cached outputs where there are some: the operating point is
    picked on these without another pass through the fixed blocks). ``inputs``: those
    :func:`prepare_training_inputs` made for this classifier and config (computed here otherwise),
    released on return; ``started_at``: when training began (``time.perf_counter``), for the time
    budget and ``train_seconds`` (default: now).
    """
    started = time.perf_counter() if started_at is None else started_at
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    inputs = inputs if inputs is not None else prepare_training_inputs(classifier, x_train, x_val, config)
    try:
        history = _train(classifier, x_train, y_train, x_val, y_val, config, inputs, deadline, on_epoch)
    finally:
        inputs.release()
    history["train_seconds"] = time.perf_counter() - started
    return history


def _train(classifier, x_train, y_train, x_val, y_val, config, inputs: TrainingInputs, deadline, on_epoch) -> dict:
    keras.utils.set_random_seed(config.seed)
    y_train = np.asarray(y_train, dtype=np.float32)
    y_val = np.asarray(y_val, dtype=np.float32)
    weights, val_weights = balanced_sample_weights(y_train), balanced_sample_weights(y_val)
    history: dict = {"stopped_by_budget": False}
    has_tail = classifier.tail is not None and config.finetune_epochs > 0
    fixed_train, fixed_val = inputs.fixed_train, inputs.fixed_val
    classifier.set_tail_trainable(False)
    warmup = fit_head(classifier.head, inputs.vectors_train, y_train, inputs.vectors_val, y_val, config,
                      history=history, on_epoch=on_epoch)
    p_val = classifier.head.predict(inputs.vectors_val, batch_size=config.batch_size, verbose=0)
    history["kept"] = "warm-up"
    if has_tail:
        best_warmup = min(history["val_loss"][:warmup])
        before = classifier.trainable_part.get_weights()
        classifier.set_tail_trainable(True)
        budget = _TimeBudget(deadline)
        schedule = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=1e-7)
        if fixed_train is not None:
            model, validation = classifier.trainable_part, (fixed_val, y_val, val_weights)
            train = _train_data(fixed_train, y_train, weights, config)
        else:
            model = classifier.full
            validation = ImageBatches(x_val, y_val, batch_size=config.batch_size, sample_weights=val_weights,
                                      shuffle=False)
            train = ImageBatches(x_train, y_train, batch_size=config.batch_size, sample_weights=weights,
                                 augment=config.augment, seed=config.seed)
        _compile(model, config.lr_finetune)
        _fit(model, train, validation, config.finetune_epochs, batch_size=config.batch_size,
             patience=config.patience, history=history, offset=warmup, on_epoch=on_epoch, extra=(schedule, budget))
        history["phase_boundary"] = [warmup]
        history["stopped_by_budget"] = budget.stopped
        finetuned_best = min(history["val_loss"][warmup:], default=np.inf)
        if finetuned_best < best_warmup:
            history["kept"] = "fine-tuned"
            if fixed_val is not None:
                p_val = classifier.trainable_part.predict(fixed_val, batch_size=config.batch_size, verbose=0)
            else:
                p_val = predict_in_batches(classifier.full, x_val, desc="val (operating point)")
        else:  # fine-tuning never beat the warm-up on validation: keep the warm-up's weights
            classifier.trainable_part.set_weights(before)
    classifier.set_tail_trainable(False)
    history["val_p_defect"] = np.asarray(p_val, dtype=float)[:, 0]
    return history
