"""A Keras network compiled by OpenVINO gives that network's outputs (float32: to rounding; bfloat16:
close), for head networks also the pooled features, from one pass."""

import numpy as np
import pytest

from mlproject.data.decode import vgg_preprocess
from mlproject.models.openvino_network import INFER_CHUNK, compile_network
from mlproject.models.variants import build_feature_extractor, build_head_classifier, head_scores_and_embeddings
from mlproject.training.batches import predict_in_batches

SIZE = 32


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def head_network():
    import keras

    keras.utils.set_random_seed(0)
    return build_head_classifier("none", SIZE, trainable_blocks=1, dense_units=8).full


def test_a_head_network_compiled_in_float32_gives_its_scores_and_embeddings(head_network):
    network = compile_network(head_network, "float32")
    x = images(INFER_CHUNK * 2 + 3)  # more than one inference chunk, the last one short
    batch = vgg_preprocess(x)
    p_keras, e_keras = head_scores_and_embeddings(head_network, batch)
    p_ov, e_ov = network.scores_and_embeddings(batch)
    assert network.with_embeddings and e_ov.shape == e_keras.shape
    np.testing.assert_allclose(p_ov, p_keras, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(e_ov, e_keras, rtol=1e-3, atol=1e-3 * np.abs(e_keras).max())
    # called as the Keras model is: its one output, also through the batch helper the entry points use
    np.testing.assert_allclose(predict_in_batches(network, x, progress=False)[:, 0],
                               predict_in_batches(head_network, x, progress=False)[:, 0], rtol=1e-4, atol=1e-5)
    assert network.output.shape == (None, 1)
    assert network(batch[:0]).shape == (0, 1)


def test_bfloat16_compilation_stays_close_to_float32(head_network):
    x = vgg_preprocess(images(8, seed=1))
    p32 = np.asarray(head_network(x, training=False))[:, 0]
    p16 = compile_network(head_network, "bfloat16")(x)[:, 0]
    assert np.abs(p16 - p32).max() < 0.05


def test_a_feature_extractor_compiles_without_an_embeddings_output():
    extractor = build_feature_extractor("none", SIZE, feature_layers=("block3_pool", "block5_pool"), pooling="stats")
    network = compile_network(extractor, "float32")
    x = vgg_preprocess(images(5, seed=2))
    expected = np.asarray(extractor(x, training=False))
    np.testing.assert_allclose(network(x), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    assert not network.with_embeddings
    with pytest.raises(ValueError, match="features output"):
        network.scores_and_embeddings(x)
    with pytest.raises(ValueError, match="precision"):
        compile_network(extractor, "float16")


def test_callers_in_several_threads_each_get_their_own_batch_scored(head_network):
    # The ML backend predicts from a thread pool; the compiled network serves one caller at a time.
    from concurrent.futures import ThreadPoolExecutor

    network = compile_network(head_network, "float32")
    batches = [vgg_preprocess(images(3, seed=s)) for s in range(8)]
    expected = [np.asarray(head_network(b, training=False)) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(network, batches))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
