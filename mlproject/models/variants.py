"""The three VGG16 variants.

* ``svm``: VGG16 features (pooled from chosen layers) + a scikit-learn SVM; the backbone never trains.
* ``frozen``: VGG16 frozen + a dense head.
* ``finetune``: the same head, then the last N conv blocks unfrozen.

``frozen`` and ``finetune`` share one structure, ``head(tail(fixed(image)))``: ``fixed`` holds the
blocks that never train, ``tail`` the blocks that fine-tuning unfreezes (empty for ``frozen``).
Keeping the parts as separate sub-models lets training run on ``fixed``'s cached outputs while
the saved ``full`` model is still one image -> P(defect) network.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from mlproject.models.backbone import build_vgg16
from mlproject.models.layers import POOLINGS, global_pool

VARIANTS = ("svm", "frozen", "finetune")


@dataclass
class HeadClassifier:
    """``full`` = ``head(tail(fixed(image)))``; ``tail`` may be an identity for the frozen variant."""

    full: keras.Model
    fixed: keras.Model
    tail: keras.Model
    head: keras.Model
    tail_conv_layers: list

    def set_tail_trainable(self, trainable: bool) -> None:
        for layer in self.tail_conv_layers:
            layer.trainable = trainable


def _split_layer_name(trainable_blocks: int) -> str:
    if not 0 <= trainable_blocks <= 5:
        raise ValueError(f"trainable_blocks must be between 0 and 5, got {trainable_blocks}")
    # block5_pool for 0 (nothing unfrozen); block4_pool for 1 (block5 unfrozen), ...
    return "input_layer" if trainable_blocks == 5 else f"block{5 - trainable_blocks}_pool"


def build_head_classifier(
    weights: str,
    image_size: int,
    *,
    trainable_blocks: int = 1,
    pooling: str = "avg",
    dense_units: int = 256,
    dropout: float = 0.5,
) -> HeadClassifier:
    """VGG16 split at the start of its last ``trainable_blocks`` blocks, plus a dense head."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    base = build_vgg16(weights, image_size)
    names = [layer.name for layer in base.layers]
    split = _split_layer_name(trainable_blocks)
    split_index = 0 if trainable_blocks == 5 else names.index(split)

    fixed_output = base.input if trainable_blocks == 5 else base.get_layer(split).output
    fixed = keras.Model(base.input, fixed_output, name="vgg16_fixed")
    for layer in fixed.layers:
        layer.trainable = False

    tail_input = keras.Input(shape=tuple(fixed_output.shape[1:]), name="tail_input")
    x = tail_input
    tail_layers = base.layers[split_index + 1 :]
    for layer in tail_layers:
        x = layer(x)
    tail = keras.Model(tail_input, x, name="vgg16_tail")
    tail_conv_layers = [layer for layer in tail_layers if isinstance(layer, keras.layers.Conv2D)]

    head_input = keras.Input(shape=tuple(x.shape[1:]), name="head_input")
    h = global_pool(head_input, pooling, name="head_pool")
    h = keras.layers.Dropout(dropout, name="head_dropout1")(h)
    h = keras.layers.Dense(dense_units, activation="relu", name="head_dense")(h)
    h = keras.layers.Dropout(dropout, name="head_dropout2")(h)
    h = keras.layers.Dense(1, activation="sigmoid", name="p_defect")(h)
    head = keras.Model(head_input, h, name="head")

    image = keras.Input(shape=(image_size, image_size, 3), name="image")
    full = keras.Model(image, head(tail(fixed(image))), name="vgg16_defect_classifier")
    classifier = HeadClassifier(full, fixed, tail, head, tail_conv_layers)
    classifier.set_tail_trainable(False)
    return classifier


def build_feature_extractor(
    weights: str, image_size: int, *, feature_layers: tuple[str, ...] = ("block5_pool",), pooling: str = "avg"
) -> keras.Model:
    """VGG16 -> one vector per image: each chosen layer pooled, then concatenated."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    base = build_vgg16(weights, image_size)
    known = [layer.name for layer in base.layers]
    pooled = []
    for name in feature_layers:
        if name not in known:
            raise ValueError(f"feature layer {name!r} is not a VGG16 layer; choose from {known[1:]}")
        pooled.append(global_pool(base.get_layer(name).output, pooling, name=f"{name}_features"))
    features = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="features")(pooled)
    extractor = keras.Model(base.input, features, name="vgg16_features")
    extractor.trainable = False
    return extractor
