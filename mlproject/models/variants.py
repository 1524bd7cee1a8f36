"""The three VGG16 variants.

* ``svm``: VGG16 features (pooled from chosen layers) + a scikit-learn SVM; the backbone never trains.
* ``frozen``: VGG16 frozen + a dense head on pooled multi-block features.
* ``finetune``: the same head, then the last N conv blocks unfrozen.

``frozen`` and ``finetune`` share one structure: ``fixed`` holds the blocks that never train and
outputs the map where the trainable ``tail`` starts plus the pooled features of the fixed blocks;
``tail`` pools the features of the blocks fine-tuning unfreezes; ``head`` standardises the feature
vector and classifies it. Keeping the parts as separate sub-models lets training run on ``fixed``'s
cached outputs while the saved ``full`` model is still one image -> P(defect) network.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import keras
import numpy as np

from mlproject.models.backbone import build_vgg16
from mlproject.models.feature_transforms import DEFAULT_FEATURES
from mlproject.models.layers import POOLINGS, SignedLog1p, Standardise, global_pool

VARIANTS = ("svm", "frozen", "finetune")

#: Compute precisions of the conv blocks. bfloat16 halves training and forward time on CPUs with
#: AVX512_BF16/AMX (weights stay float32); the head and the pooled statistics always run in float32.
PRECISIONS = ("float32", "bfloat16")


@dataclass
class HeadClassifier:
    """``full(image) = head(features(image))``, ``features = features_part(fixed(image))``.

    ``fixed`` returns a list: the map the tail starts from (absent for ``frozen``) and the pooled
    features of the fixed blocks (absent when every feature layer is in the tail). ``tail`` is None
    for ``frozen``. ``trainable_part`` maps ``fixed``'s outputs to P(defect): what fine-tuning fits
    on cached outputs."""

    full: keras.Model
    fixed: keras.Model
    tail: keras.Model | None
    features_part: keras.Model
    trainable_part: keras.Model
    features: keras.Model
    head: keras.Model
    tail_conv_layers: list

    def set_tail_trainable(self, trainable: bool) -> None:
        for layer in self.tail_conv_layers:
            layer.trainable = trainable

    @property
    def standardise(self) -> Standardise:
        return self.head.get_layer("head_standardise")


def _split_layer_name(trainable_blocks: int) -> str:
    if not 0 <= trainable_blocks <= 5:
        raise ValueError(f"trainable_blocks must be between 0 and 5, got {trainable_blocks}")
    # block5_pool for 0 (nothing unfrozen); block4_pool for 1 (block5 unfrozen), ...
    return "input_layer" if trainable_blocks == 5 else f"block{5 - trainable_blocks}_pool"


@contextlib.contextmanager
def _dtype_policy(precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _pooled(tensors: dict, names: list[str], pooling: str, name: str):
    """Each named map pooled (in float32), concatenated in depth order."""
    pooled = [global_pool(tensors[n], pooling, name=f"{n}_features", dtype="float32") for n in names]
    return pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name=name, dtype="float32")(pooled)


def _ordered_feature_layers(feature_layers, known: list[str]) -> list[str]:
    for name in feature_layers:
        if name not in known:
            raise ValueError(f"feature layer {name!r} is not a VGG16 layer; choose from {known[1:]}")
    if not feature_layers:
        raise ValueError("feature_layers must name at least one VGG16 layer")
    return sorted(dict.fromkeys(feature_layers), key=known.index)


def build_head(features: int, *, dense_units: int = 256, dropout: float = 0.5) -> keras.Model:
    """The head: standardise the ``features``-long vector, then a ReLU layer of ``dense_units`` (0: none,
    a linear classifier, the logistic-regression baseline's shape) with dropout before each dense
    layer, then P(defect)."""
    if dense_units < 0 or not 0 <= dropout < 1:
        raise ValueError(f"dense_units must be >= 0 and dropout in [0, 1), got {dense_units} and {dropout}")
    head_input = keras.Input(shape=(features,), name="head_input")
    h = Standardise(name="head_standardise", dtype="float32")(head_input)
    h = keras.layers.Dropout(dropout, name="head_dropout1", dtype="float32")(h)
    if dense_units:
        h = keras.layers.Dense(dense_units, activation="relu", name="head_dense", dtype="float32")(h)
        h = keras.layers.Dropout(dropout, name="head_dropout2", dtype="float32")(h)
    h = keras.layers.Dense(1, activation="sigmoid", name="p_defect", dtype="float32")(h)
    return keras.Model(head_input, h, name="head")


def build_head_classifier(
    weights: str,
    image_size: int,
    *,
    trainable_blocks: int = 1,
    feature_layers: tuple[str, ...] = DEFAULT_FEATURES.layers,
    pooling: str = DEFAULT_FEATURES.pooling,
    log_features: bool = DEFAULT_FEATURES.log_features,
    dense_units: int = 256,
    dropout: float = 0.5,
    precision: str = "float32",
) -> HeadClassifier:
    """VGG16 split at the start of its last ``trainable_blocks`` blocks; the head reads
    ``feature_layers`` pooled by ``pooling``, optionally sign-log compressed, then standardised
    (the head's :class:`Standardise` layer, fitted on the training features before training)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    with _dtype_policy(precision):
        base = build_vgg16(weights, image_size)
    names = [layer.name for layer in base.layers]
    layers = _ordered_feature_layers(feature_layers, names)
    split = _split_layer_name(trainable_blocks)
    split_index = 0 if trainable_blocks == 5 else names.index(split)
    fixed_features = [n for n in layers if names.index(n) <= split_index]
    tail_features = [n for n in layers if names.index(n) > split_index]
    if trainable_blocks > 0 and not tail_features:
        raise ValueError(f"trainable_blocks={trainable_blocks} unfreezes layers after {split}, but no feature layer "
                         f"({', '.join(layers)}) comes after it: fine-tuning could not change the features. "
                         "Add a later layer (e.g. block5_pool) or unfreeze fewer blocks.")

    base_tensors = {layer.name: layer.output for layer in base.layers}
    fixed_outputs = []
    if trainable_blocks > 0:
        fixed_outputs.append(base.input if trainable_blocks == 5 else base_tensors[split])
    if fixed_features:
        fixed_outputs.append(_pooled(base_tensors, fixed_features, pooling, "fixed_features"))
    fixed = keras.Model(base.input, fixed_outputs, name="vgg16_fixed")
    for layer in fixed.layers:
        layer.trainable = False

    fixed_inputs = [keras.Input(shape=tuple(t.shape[1:]), name=f"fixed_output_{i}") for i, t in enumerate(fixed_outputs)]
    tail, tail_conv_layers, parts = None, [], []
    if fixed_features:
        parts.append(fixed_inputs[-1])
    if trainable_blocks > 0:
        tail_input = keras.Input(shape=tuple(fixed_outputs[0].shape[1:]), name="tail_input")
        x, tail_tensors = tail_input, {}
        tail_layers = base.layers[split_index + 1 :]
        for layer in tail_layers:
            x = layer(x)
            tail_tensors[layer.name] = x
        tail = keras.Model(tail_input, _pooled(tail_tensors, tail_features, pooling, "tail_features"), name="vgg16_tail")
        tail_conv_layers = [layer for layer in tail_layers if isinstance(layer, keras.layers.Conv2D)]
        parts.append(tail(fixed_inputs[0]))
    vector = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features", dtype="float32")(parts)
    if log_features:
        vector = SignedLog1p(name="signed_log1p", dtype="float32")(vector)
    features_part = keras.Model(fixed_inputs, vector, name="features_from_fixed")

    head = build_head(int(vector.shape[-1]), dense_units=dense_units, dropout=dropout)

    trainable_part = keras.Model(fixed_inputs, head(features_part(fixed_inputs)), name="trainable_part")
    image = keras.Input(shape=(image_size, image_size, 3), name="image")
    features = keras.Model(image, features_part(fixed(image)), name="vgg16_features")
    full = keras.Model(image, head(features(image)), name="vgg16_defect_classifier")
    classifier = HeadClassifier(full, fixed, tail, features_part, trainable_part, features, head, tail_conv_layers)
    classifier.set_tail_trainable(False)
    return classifier


def head_scores_and_embeddings(keras_model: keras.Model, batch) -> tuple[np.ndarray, np.ndarray]:
    """P(defect) and an embedding per image of a saved ``frozen``/``finetune`` model, one forward pass.

    The embedding is what the head reads: the pooled features before its standardisation. Models
    saved before the multi-block head read block5's map; for them it is that map's global average."""
    names = {layer.name for layer in keras_model.layers}
    if "vgg16_features" in names:
        features = keras_model.get_layer("vgg16_features")(batch, training=False)
        p_defect = keras_model.get_layer("head")(features, training=False)
        return np.asarray(p_defect)[:, 0], np.asarray(features)
    block5 = keras_model.get_layer("vgg16_tail")(keras_model.get_layer("vgg16_fixed")(batch, training=False),
                                                 training=False)
    p_defect = keras_model.get_layer("head")(block5, training=False)
    return np.asarray(p_defect)[:, 0], np.asarray(block5).mean(axis=(1, 2))


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
