"""Head training: the cached-frozen-outputs path trains the same model as the from-images path."""

import keras
import numpy as np
import pytest

from mlproject.models.variants import build_head_classifier
from mlproject.training.batches import augment_label_preserving
from mlproject.training.head_training import HeadTrainingConfig, balanced_sample_weights, train_head_classifier


def tiny_data(n=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    y = np.array([0, 1] * (n // 2))
    x[y == 1, 8:20, 8:20] = 255  # a bright patch marks the positives
    return x, y


def trained_weights(cache: bool):
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0)
    x, y = tiny_data()
    # One batch per epoch and no dropout: the update order is fixed, so both paths must agree.
    config = HeadTrainingConfig(warmup_epochs=2, finetune_epochs=2, batch_size=64, patience=10,
                                lr_head=1e-3, lr_finetune=1e-4, cache_frozen_outputs=cache)
    history = train_head_classifier(classifier, x, y, x[:6], y[:6], config)
    return classifier, history


def test_cached_and_uncached_paths_train_the_same_model():
    cached, cached_history = trained_weights(cache=True)
    direct, direct_history = trained_weights(cache=False)
    assert cached_history["phase_boundary"] == direct_history["phase_boundary"] == [2]
    assert len(cached_history["loss"]) == len(direct_history["loss"]) == 4
    np.testing.assert_allclose(cached_history["loss"], direct_history["loss"], rtol=1e-3)
    for a, b in zip(cached.full.get_weights(), direct.full.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    # fine-tuning really changed block5 (it was unfrozen)
    keras.utils.set_random_seed(0)
    untrained = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0)
    assert not np.allclose(untrained.full.get_layer("vgg16_tail").get_layer("block5_conv3").get_weights()[0],
                           cached.full.get_layer("vgg16_tail").get_layer("block5_conv3").get_weights()[0])


def test_frozen_variant_trains_only_the_head():
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=0, dense_units=4)
    before = classifier.fixed.get_layer("block5_conv3").get_weights()[0].copy()
    x, y = tiny_data()
    history = train_head_classifier(classifier, x, y, x[:6], y[:6], HeadTrainingConfig(warmup_epochs=2, finetune_epochs=5))
    assert "phase_boundary" not in history and len(history["val_loss"]) == 2
    np.testing.assert_array_equal(before, classifier.fixed.get_layer("block5_conv3").get_weights()[0])


def test_augmentation_cannot_use_cached_outputs():
    with pytest.raises(ValueError, match="augment"):
        HeadTrainingConfig(augment=True, cache_frozen_outputs=True)


def test_augmented_training_runs_through_images():
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4)
    x, y = tiny_data()
    config = HeadTrainingConfig(warmup_epochs=1, finetune_epochs=1, augment=True, cache_frozen_outputs=False)
    history = train_head_classifier(classifier, x, y, x[:6], y[:6], config)
    assert len(history["loss"]) == 2


def test_balanced_sample_weights_equalise_classes():
    weights = balanced_sample_weights(np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(weights, [2 / 3, 2 / 3, 2 / 3, 2.0])
    assert weights[:3].sum() == pytest.approx(weights[3:].sum())


def test_augmentation_only_flips_and_rotates():
    x, _ = tiny_data(n=4)
    out = augment_label_preserving(x, np.random.default_rng(0))
    for original, augmented in zip(x, out):
        variants = [np.rot90(original, k) for k in range(4)]
        variants += [v[:, ::-1] for v in variants]
        assert any(np.array_equal(augmented, v) for v in variants)
