"""The one image decoder: every image kind users have, and bad files that name themselves."""

import io

import numpy as np
import pytest
from PIL import Image

from mlproject.data.decode import BadImageError, decode_image, images_to_model_input, resize, vgg_preprocess


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_8bit_grayscale_is_replicated_into_three_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = decode_image(encode(Image.fromarray(gray, mode="L")))
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_16bit_grayscale_is_scaled_by_a_fixed_factor():
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    image = Image.new("I;16", (4, 1))
    image.frombytes(values.astype("<u2").tobytes())
    assert image.mode == "I;16"
    out = decode_image(encode(image))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 255, 128])


def test_rgb_rgba_and_palette():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(rgb, "RGB")))[0, 0], (10, 20, 30))
    rgba = np.dstack([rgb, np.full((2, 2), 7, np.uint8)])
    out = decode_image(encode(Image.fromarray(rgba, "RGBA")))
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], (10, 20, 30))
    palette = Image.fromarray(rgb, "RGB").convert("P")
    assert decode_image(encode(palette)).shape == (2, 2, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF"])
def test_other_formats(fmt):
    image = Image.fromarray(np.full((8, 8), 100, np.uint8), "L")
    out = decode_image(encode(image, fmt))
    assert out.shape == (8, 8, 3)
    assert abs(int(out.mean()) - 100) <= 2


def test_bad_bytes_name_their_source():
    with pytest.raises(BadImageError, match="'a/empty.png'.*empty"):
        decode_image(b"", source="a/empty.png")
    with pytest.raises(BadImageError, match="notes.png.*not an image"):
        decode_image(b"just some text", source="notes.png")
    truncated = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), "L"))
    with pytest.raises(BadImageError, match="cut.png.*corrupt or truncated"):
        decode_image(truncated[: len(truncated) // 2], source="cut.png")
    try:
        decode_image(b"", source="x.png")
    except BadImageError as exc:
        assert exc.source == "x.png" and "--skip-bad-images" in str(exc)


def test_vgg_preprocess_matches_keras():
    from keras.applications.vgg16 import preprocess_input

    batch = np.random.default_rng(0).integers(0, 256, size=(2, 5, 5, 3)).astype(np.uint8)
    np.testing.assert_allclose(vgg_preprocess(batch), preprocess_input(batch.astype(np.float32)), rtol=1e-6)


def test_resize_and_batch_keep_going_past_a_bad_image():
    good = encode(Image.fromarray(np.full((10, 20), 50, np.uint8), "L"))
    assert resize(decode_image(good), 16).shape == (16, 16, 3)
    batch, indices, errors = images_to_model_input([good, b"broken", good], 16, sources=["a", "b", "c"])
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.float32
    assert indices == [0, 2]
    assert len(errors) == 1 and errors[0].source == "b"
