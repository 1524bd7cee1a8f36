"""Running Keras models over uint8 image arrays in batches, with progress and augmentation."""

from __future__ import annotations

import math

import keras
import numpy as np
from tqdm.auto import tqdm

from mlproject.data.decode import vgg_preprocess
from mlproject.models.views import DIHEDRAL_VIEWS, dihedral_view


def predict_in_batches(model, images_uint8: np.ndarray, *, batch_size: int = 32, desc: str = "predict",
                       progress: bool = True):
    """``model`` on VGG-preprocessed ``images_uint8``; preprocessing per batch keeps memory flat.
    A model with several outputs gives a list of float32 arrays, one per output."""
    outputs = []
    for start in tqdm(range(0, len(images_uint8), batch_size), desc=desc, unit="batch", disable=not progress,
                      total=math.ceil(len(images_uint8) / batch_size)):
        batch = vgg_preprocess(images_uint8[start : start + batch_size])
        out = model(batch, training=False)
        outputs.append([np.asarray(o, dtype=np.float32) for o in out] if isinstance(out, (list, tuple))
                       else np.asarray(out, dtype=np.float32))
    if len(model.outputs) > 1:
        if not outputs:
            return [np.zeros((0, *o.shape[1:]), dtype=np.float32) for o in model.outputs]
        return [np.concatenate([batch[i] for batch in outputs]) for i in range(len(model.outputs))]
    if not outputs:
        return np.zeros((0, *model.output.shape[1:]), dtype=np.float32)
    return np.concatenate([o[0] if isinstance(o, list) else o for o in outputs])


def draw_views(rng: np.random.Generator, n: int) -> np.ndarray:
    """One random view per image; the cached and from-images paths draw them the same way."""
    return rng.integers(DIHEDRAL_VIEWS, size=n)


def augment_label_preserving(batch_uint8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image in a random one of its 8 flip/rotation views."""
    views = draw_views(rng, len(batch_uint8))
    return np.stack([dihedral_view(image[None], int(v))[0] for image, v in zip(batch_uint8, views)])


class ImageBatches(keras.utils.PyDataset):
    """Preprocessed (optionally augmented) image batches with sample weights, for ``fit``."""

    def __init__(self, images_uint8, labels, *, batch_size: int, sample_weights=None, augment: bool = False,
                 shuffle: bool = True, seed: int = 0):
        super().__init__()
        self.images = images_uint8
        self.labels = np.asarray(labels, dtype=np.float32)
        self.weights = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float32)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(self.images))
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self._inputs(idx)
        if self.weights is None:
            return x, self.labels[idx]
        return x, self.labels[idx], self.weights[idx]

    def _inputs(self, idx):
        batch = self.images[idx]
        if self.augment:
            batch = augment_label_preserving(batch, self.rng)
        return vgg_preprocess(batch)

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)

    def release(self):
        """Drop the references to the data once ``fit`` is done with it: Keras wraps a PyDataset in
        a tf.data generator that stays registered after ``fit`` returns, and with it this object
        (measured: the 8-view cache, ~8 GiB at 512 px, outlived training)."""
        self.images = np.empty((0,) + self.images.shape[1:], self.images.dtype)  # not a slice: that keeps it


class CachedViewBatches(ImageBatches):
    """Augmented batches from cached outputs: ``views[v]`` holds the fixed blocks' outputs for view
    ``v`` of every training image (an array, or a list of arrays for a model with several inputs).
    Order and view draws follow :class:`ImageBatches` with ``augment=True`` and the same seed, so
    both paths see the same augmented inputs."""

    def __init__(self, views, labels, *, batch_size: int, sample_weights=None, seed: int = 0):
        if len(views) != DIHEDRAL_VIEWS:
            raise ValueError(f"expected the outputs of all {DIHEDRAL_VIEWS} views, got {len(views)}")
        self.several = isinstance(views[0], (list, tuple))
        first = views[0][0] if self.several else views[0]
        super().__init__(first, labels, batch_size=batch_size, sample_weights=sample_weights, augment=True,
                         shuffle=True, seed=seed)
        self.views = views

    def release(self):
        super().release()
        self.views = []

    def _inputs(self, idx):
        picked = draw_views(self.rng, len(idx))
        if not self.several:
            return np.stack([self.views[v][i] for v, i in zip(picked, idx)])
        return tuple(np.stack([self.views[v][k][i] for v, i in zip(picked, idx)]) for k in range(len(self.views[0])))
