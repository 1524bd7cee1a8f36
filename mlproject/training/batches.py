"""Running Keras models over uint8 image arrays in batches, with progress and augmentation."""

from __future__ import annotations

import math

import keras
import numpy as np
from tqdm.auto import tqdm

from mlproject.data.decode import vgg_preprocess


def predict_in_batches(model, images_uint8: np.ndarray, *, batch_size: int = 32, desc: str = "predict",
                       progress: bool = True) -> np.ndarray:
    """``model`` on VGG-preprocessed ``images_uint8``; preprocessing per batch keeps memory flat."""
    outputs = []
    for start in tqdm(range(0, len(images_uint8), batch_size), desc=desc, unit="batch", disable=not progress,
                      total=math.ceil(len(images_uint8) / batch_size)):
        batch = vgg_preprocess(images_uint8[start : start + batch_size])
        outputs.append(np.asarray(model(batch, training=False)))
    if not outputs:
        return np.zeros((0, *model.output.shape[1:]), dtype=np.float32)
    return np.concatenate(outputs)


def augment_label_preserving(batch_uint8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips and 90-degree rotations: a texture's defect label does not change under them."""
    out = np.empty_like(batch_uint8)
    for i, image in enumerate(batch_uint8):
        image = np.rot90(image, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            image = image[:, ::-1]
        out[i] = image
    return out


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
        batch = self.images[idx]
        if self.augment:
            batch = augment_label_preserving(batch, self.rng)
        x = vgg_preprocess(batch)
        if self.weights is None:
            return x, self.labels[idx]
        return x, self.labels[idx], self.weights[idx]

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)
