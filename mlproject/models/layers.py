"""Custom Keras layers. Registered so saved models load again (the pyfunc ships this package)."""

from __future__ import annotations

import keras
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


def global_pool(x, pooling: str, name: str):
    """Apply one of :data:`POOLINGS` to a feature map ``x`` (N, H, W, C) -> (N, F)."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=f"{name}_avg")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=f"{name}_max")(x)
    if pooling == "avgmax":
        return keras.layers.Concatenate(name=f"{name}_avgmax")(
            [
                keras.layers.GlobalAveragePooling2D(name=f"{name}_avg")(x),
                keras.layers.GlobalMaxPooling2D(name=f"{name}_max")(x),
            ]
        )
    if pooling == "stats":
        return GlobalChannelStats(name=f"{name}_stats")(x)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
