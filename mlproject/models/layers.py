"""Custom Keras layers. Registered so saved models load again (the pyfunc ships this package)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

#: How a feature map becomes a vector: global average, global max, both, or per-channel
#: statistics (mean, standard deviation, max, min), which keep a trace of small local defects that a
#: global average washes out (a smoothed patch in a noisy texture lowers the local minimum).
POOLINGS = ("avg", "max", "avgmax", "stats")


@keras.saving.register_keras_serializable(package="alloop")
class GlobalChannelStats(keras.layers.Layer):
    """Per-channel mean, standard deviation, maximum and minimum over the spatial axes, concatenated."""

    def call(self, inputs):
        mean = ops.mean(inputs, axis=(1, 2))
        std = ops.sqrt(ops.maximum(ops.var(inputs, axis=(1, 2)), 1e-12))
        peak = ops.max(inputs, axis=(1, 2))
        trough = ops.min(inputs, axis=(1, 2))
        return ops.concatenate([mean, std, peak, trough], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4 * input_shape[-1])


@keras.saving.register_keras_serializable(package="alloop")
class SignedLog1p(keras.layers.Layer):
    """``sign(x) * log(1 + |x|)``, the network twin of ``feature_transforms.signed_log1p``: pooled
    ReLU statistics are heavily right-skewed, which swamps a standardised classifier."""

    def call(self, inputs):
        return ops.sign(inputs) * ops.log1p(ops.abs(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="alloop")
class Standardise(keras.layers.Layer):
    """``(x - mean) / scale`` per feature, with ``mean`` and ``scale`` set from the training features
    by :meth:`fit` (saved with the model, never trained).

    ``scale`` has a floor of a tenth of the typical feature's standard deviation: statistics such as
    the minimum of a ReLU map are nearly constant over a dataset, and dividing by their tiny spread
    would turn the small shifts fine-tuning causes into huge inputs to the head (measured: the loss
    jumped from 0.4 to thousands in one step)."""

    #: The floor, as a fraction of the mean standard deviation over all features.
    FLOOR = 0.1

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="mean")
        self.scale = self.add_weight(shape=(dim,), initializer="ones", trainable=False, name="scale")

    def fit(self, features) -> None:
        features = np.asarray(features, dtype=np.float64)
        if not self.built:
            self.build(features.shape)
        std = features.std(axis=0)
        floor = self.FLOOR * float(std.mean()) + 1e-6
        self.mean.assign(features.mean(axis=0).astype(np.float32))
        self.scale.assign(np.maximum(std, floor).astype(np.float32))

    def call(self, inputs):
        return (inputs - self.mean) / self.scale

    def compute_output_shape(self, input_shape):
        return input_shape


def global_pool(x, pooling: str, name: str, dtype=None):
    """Apply one of :data:`POOLINGS` to a feature map ``x`` (N, H, W, C) -> (N, F). ``dtype``
    "float32" pools a bfloat16 map in float32 (sums over many positions need the mantissa)."""
    kw = {"dtype": dtype} if dtype else {}
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=f"{name}_avg", **kw)(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=f"{name}_max", **kw)(x)
    if pooling == "avgmax":
        return keras.layers.Concatenate(name=f"{name}_avgmax", **kw)(
            [
                keras.layers.GlobalAveragePooling2D(name=f"{name}_avg", **kw)(x),
                keras.layers.GlobalMaxPooling2D(name=f"{name}_max", **kw)(x),
            ]
        )
    if pooling == "stats":
        return GlobalChannelStats(name=f"{name}_stats", **kw)(x)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
