"""Head training: the cached-frozen-outputs path trains the same model as the from-images path."""

import keras
import numpy as np
import pytest

from mlproject.data.decode import vgg_preprocess
from mlproject.models.variants import build_head_classifier
from mlproject.models.views import DIHEDRAL_VIEWS, dihedral_view, mean_over_views
from mlproject.training.batches import (
    CachedViewBatches,
    ImageBatches,
    augment_label_preserving,
    predict_in_batches,
)
from mlproject.training.head_training import (
    HeadTrainingConfig,
    balanced_sample_weights,
    check_cache_fits,
    forward_batch_bytes,
    train_head_classifier,
)


def tiny_data(n=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    y = np.array([0, 1] * (n // 2))
    x[y == 1, 8:20, 8:20] = 255  # a bright patch marks the positives
    return x, y


def trained_weights(cache: bool, augment: bool = False):
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0)
    x, y = tiny_data()
    # One batch per epoch and no dropout: the update order is fixed, so both paths must agree.
    config = HeadTrainingConfig(warmup_epochs=2, finetune_epochs=2, batch_size=64, patience=10,
                                lr_head=1e-3, lr_finetune=1e-5, cache_frozen_outputs=cache, augment=augment)
    history = train_head_classifier(classifier, x, y, x[:6], y[:6], config)
    return classifier, history


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_cached_and_uncached_paths_train_the_same_model(augment):
    cached, cached_history = trained_weights(cache=True, augment=augment)
    direct, direct_history = trained_weights(cache=False, augment=augment)
    assert cached_history["phase_boundary"] == direct_history["phase_boundary"] == [2]
    assert len(cached_history["loss"]) == len(direct_history["loss"]) == 4
    np.testing.assert_allclose(cached_history["loss"], direct_history["loss"], rtol=1e-3)
    for a, b in zip(cached.full.get_weights(), direct.full.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert cached_history["kept"] == direct_history["kept"]
    if augment:  # on these 12 random images the augmented fine-tuning does not beat the warm-up
        return
    # fine-tuning really changed block5 (it was unfrozen) and was kept
    keras.utils.set_random_seed(0)
    untrained = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0)
    assert cached_history["kept"] == "fine-tuned"
    assert not np.allclose(untrained.tail.get_layer("block5_conv3").get_weights()[0],
                           cached.tail.get_layer("block5_conv3").get_weights()[0])


@pytest.mark.parametrize("cache,augment", [(True, False), (True, True), (False, False)],
                         ids=["cached", "cached-augmented", "from-images"])
def test_validation_scores_are_those_of_the_kept_model(cache, augment):
    # the operating point is picked on these: cached outputs must give what the whole model gives
    classifier, history = trained_weights(cache=cache, augment=augment)
    x, _ = tiny_data()
    expected = predict_in_batches(classifier.full, x[:6], progress=False)[:, 0]
    # The tiny random-weights backbone gives (nearly) one score for all images, but each epoch's
    # update moves it by ~1e-4, so scores from any other weights (an earlier epoch, the warm-up
    # head) would differ by far more than this tolerance.
    np.testing.assert_allclose(history["val_p_defect"], expected, rtol=0, atol=1e-6)


def test_frozen_variant_trains_only_the_head():
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=0, dense_units=4)
    before = classifier.fixed.get_layer("block5_conv3").get_weights()[0].copy()
    x, y = tiny_data()
    history = train_head_classifier(classifier, x, y, x[:6], y[:6], HeadTrainingConfig(warmup_epochs=2, finetune_epochs=5))
    assert "phase_boundary" not in history and len(history["val_loss"]) == 2
    np.testing.assert_array_equal(before, classifier.fixed.get_layer("block5_conv3").get_weights()[0])


def test_augmentation_changes_what_is_learned():
    """The augmented twin above must really see other views, else its agreement proves nothing."""
    plain, _ = trained_weights(cache=True, augment=False)
    augmented, _ = trained_weights(cache=True, augment=True)
    assert not np.allclose(plain.head.get_weights()[-2], augmented.head.get_weights()[-2])


def test_cached_views_follow_the_from_images_draws():
    x, y = tiny_data(n=10)
    views = [dihedral_view(x, v) for v in range(DIHEDRAL_VIEWS)]  # here the "cached outputs" are the views
    cached = CachedViewBatches(views, y, batch_size=4, seed=3)
    from_images = ImageBatches(x, y, batch_size=4, augment=True, seed=3)
    seen = set()
    for _epoch in range(2):
        for index in range(len(cached)):
            (inputs, labels), (preprocessed, expected_labels) = cached[index], from_images[index]
            np.testing.assert_allclose(vgg_preprocess(inputs), preprocessed)
            np.testing.assert_array_equal(labels, expected_labels)
            seen.update(image.tobytes() for image in inputs)
        cached.on_epoch_end()
        from_images.on_epoch_end()
    assert len(seen) > len(x)  # images came in more than one view


def test_cached_view_batches_need_all_views():
    x, y = tiny_data(n=4)
    with pytest.raises(ValueError, match="all 8 views"):
        CachedViewBatches([x, x], y, batch_size=2)


def test_a_cache_too_big_for_memory_is_refused_with_what_to_do():
    two_mib, eight_gib = 2 * 2**20, 8 * 2**30
    check_cache_fits(400, 64, 8, two_mib, eight_gib, available=24 * 2**30)  # 6.4 + 8 GiB of 24 fit
    with pytest.raises(MemoryError, match=r"needs 14\.4 GiB: 6\.4 GiB of outputs \(400 training images x 8 view\(s\) "
                                          r"\+ 64 validation images, 2\.0 MiB each\) and 8\.0 GiB to compute them "
                                          r"16 images at a time.*cache_frozen_outputs=false"):
        check_cache_fits(400, 64, 8, two_mib, eight_gib, available=16 * 2**30, batch_size=16)  # outputs alone fit
    check_cache_fits(400, 64, 8, two_mib, eight_gib, available=None)  # unknown: no guess


def test_forward_batch_memory_is_set_by_the_largest_layer():
    image = keras.Input(shape=(16, 16, 3))
    wide = keras.layers.Conv2D(8, 3, padding="same")(image)  # 16x16x3 in + 16x16x8 out: the largest
    pooled = keras.layers.MaxPooling2D()(wide)
    model = keras.Model(image, keras.layers.Conv2D(4, 3, padding="same")(pooled))
    assert forward_batch_bytes(model, batch_size=5) == 2.5 * 5 * (16 * 16 * 3 + 16 * 16 * 8) * 4


def test_forward_batch_memory_of_vgg16_blocks_1_to_4_at_512_px_matches_what_was_measured():
    classifier = build_head_classifier("none", 512, trainable_blocks=1)
    # block1_conv2: 512x512x64 in and out, 32 images, 2.5 times over: 10 GiB (RSS swung 9-10 GB here)
    assert forward_batch_bytes(classifier.fixed, 32) == 10 * 2**30


def test_dihedral_views_are_the_eight_symmetries():
    image = np.arange(3 * 3).reshape(1, 3, 3, 1)  # no symmetry: all 8 views differ
    views = [dihedral_view(image, v) for v in range(DIHEDRAL_VIEWS)]
    assert len({v.tobytes() for v in views}) == 8
    np.testing.assert_array_equal(views[0], image)
    with pytest.raises(ValueError, match="view"):
        dihedral_view(image, 8)


def test_the_mean_over_all_views_scores_every_flip_and_turn_of_an_image_alike():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 6, 6, 3)).astype(np.float32)
    weights = rng.normal(size=6 * 6 * 3)

    def predict(batch):  # a score that depends on where things are: not symmetric by itself
        return 1 / (1 + np.exp(-(batch.reshape(len(batch), -1) @ weights) / 100))

    for view in range(1, DIHEDRAL_VIEWS):
        turned = dihedral_view(images, view)
        assert np.abs(mean_over_views(predict, turned, 1) - mean_over_views(predict, images, 1)).max() > 1e-3
        np.testing.assert_allclose(mean_over_views(predict, turned, 8), mean_over_views(predict, images, 8), atol=1e-12)
    np.testing.assert_allclose(mean_over_views(predict, images, 8),
                               np.mean([predict(dihedral_view(images, v)) for v in range(8)], axis=0))
    with pytest.raises(ValueError, match="test_time_views"):
        mean_over_views(predict, images, 4)


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


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_the_cache_is_freed_when_training_returns(monkeypatch, augment):
    # At 512 px with 8 views the cache is ~8 GiB: it must not outlive training (test scoring and
    # model logging follow in the same process).
    import gc
    import weakref

    import mlproject.training.head_training as head_training

    cached = []

    def recording_predict(*args, **kwargs):
        outputs = predict_in_batches(*args, **kwargs)
        cached.extend(weakref.ref(o) for o in (outputs if isinstance(outputs, list) else [outputs]))
        return outputs

    monkeypatch.setattr(head_training, "predict_in_batches", recording_predict)
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0)
    x, y = tiny_data()
    config = HeadTrainingConfig(warmup_epochs=1, finetune_epochs=1, batch_size=4, augment=augment)
    train_head_classifier(classifier, x, y, x[:6], y[:6], config)
    gc.collect()
    # block4's map and block3's pooled features, per training view and for validation
    assert len(cached) == 2 * ((DIHEDRAL_VIEWS if augment else 1) + 1)
    assert [ref() is None for ref in cached] == [True] * len(cached)


def test_fine_tuning_that_does_not_beat_the_warm_up_is_undone():
    # lr 1e-4 on a random backbone blows the features up: validation loss gets worse than the warm-up's
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0)
    x, y = tiny_data()
    config = HeadTrainingConfig(warmup_epochs=2, finetune_epochs=2, batch_size=64, lr_finetune=1e-4)
    block5 = classifier.tail.get_layer("block5_conv3").get_weights()[0].copy()
    history = train_head_classifier(classifier, x, y, x[:6], y[:6], config)
    assert min(history["val_loss"][2:]) > min(history["val_loss"][:2])
    assert history["kept"] == "warm-up"
    np.testing.assert_array_equal(block5, classifier.tail.get_layer("block5_conv3").get_weights()[0])
    expected = predict_in_batches(classifier.full, x[:6], progress=False)[:, 0]
    np.testing.assert_allclose(history["val_p_defect"], expected, rtol=0, atol=1e-6)


def test_the_time_budget_stops_fine_tuning_before_an_epoch_that_would_overrun_it():
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0)
    x, y = tiny_data()
    unbounded = HeadTrainingConfig(warmup_epochs=1, finetune_epochs=3, batch_size=64, lr_finetune=1e-6)
    assert len(train_head_classifier(classifier, x, y, x[:6], y[:6], unbounded)["loss"]) == 4
    keras.utils.set_random_seed(0)
    classifier = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0)
    spent = HeadTrainingConfig(warmup_epochs=1, finetune_epochs=3, batch_size=64, lr_finetune=1e-6, time_budget_s=0)
    history = train_head_classifier(classifier, x, y, x[:6], y[:6], spent)
    assert history["stopped_by_budget"] and len(history["loss"]) == 2  # the warm-up, then one fine-tuning epoch


def test_the_head_sees_standardised_features_with_a_floor_on_near_constant_ones():
    from mlproject.models.layers import Standardise

    rng = np.random.default_rng(0)
    features = np.column_stack([rng.normal(5, 2, 200), rng.normal(-3, 0.5, 200), np.full(200, 0.0)])
    features[0, 2] = 1e-4  # a near-constant statistic (e.g. the minimum of a ReLU map)
    layer = Standardise()
    layer.fit(features)
    out = np.asarray(layer(features.astype("float32")))
    np.testing.assert_allclose(out[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out[:, :2].std(axis=0), 1, atol=1e-4)
    floor = Standardise.FLOOR * features.std(axis=0).mean()
    shifted = np.asarray(layer(np.array([[5, -3, 0.01]], dtype="float32")))[0, 2]
    assert abs(shifted) <= 0.01 / floor + 1e-3  # a shift of 0.01 stays small, not 0.01 / 1e-5


def test_a_classifier_trained_in_bfloat16_hands_its_weights_to_a_float32_twin():
    keras.utils.set_random_seed(0)
    trained = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0, precision="bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored after building
    assert trained.tail.get_layer("block5_conv1").compute_dtype == "bfloat16"
    assert trained.head.get_layer("p_defect").compute_dtype == "float32"
    x, y = tiny_data()
    config = HeadTrainingConfig(warmup_epochs=2, finetune_epochs=1, batch_size=64, lr_finetune=1e-6)
    history = train_head_classifier(trained, x, y, x[:6], y[:6], config)
    twin = build_head_classifier("none", 32, trainable_blocks=1, dense_units=4, dropout=0.0, precision="float32")
    twin.full.set_weights(trained.full.get_weights())
    assert all(w.dtype == np.float32 for w in twin.full.get_weights())
    assert twin.tail.get_layer("block5_conv1").compute_dtype == "float32"
    p_twin = predict_in_batches(twin.full, x[:6], progress=False)[:, 0]
    untrained = predict_in_batches(build_head_classifier("none", 32, trainable_blocks=1, dense_units=4).full, x[:6],
                                   progress=False)[:, 0]
    # bfloat16 keeps 8 mantissa bits: the twin's scores are close to training's, not equal
    np.testing.assert_allclose(p_twin, history["val_p_defect"], atol=0.05)
    assert np.abs(p_twin - untrained).max() > 0.05  # and they are the trained model's, not any model's
