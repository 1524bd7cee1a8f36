"""The one image decoder: every image kind users have, the VGG preprocessing, and bad bytes."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image, ImageFile

from mlproject.data.decode import (
    VGG_BGR_MEAN,
    BadImageError,
    decode_image,
    images_to_model_input,
    resize,
    vgg_preprocess,
)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sixteen_bit(values: np.ndarray, mode: str) -> Image.Image:
    """A 16-bit grayscale Pillow image from uint16 values, in the given raw byte order."""
    image = Image.new(mode, (values.shape[1], values.shape[0]))
    image.frombytes(values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    return image


GRAY = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)


def assert_gray_replicated(out: np.ndarray, gray: np.ndarray) -> None:
    assert out.shape == gray.shape + (3,) and out.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_8bit_grayscale_is_replicated_into_three_channels():
    assert_gray_replicated(decode_image(encode(Image.fromarray(GRAY, mode="L"))), GRAY)


def test_16bit_png_is_scaled_by_the_fixed_factor_257():
    values = np.array([[0, 257, 65535, 32896, 128, 129]], dtype=np.uint16)
    image = sixteen_bit(values, "I;16")
    data = encode(image)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really stored as 16 bit
    out = decode_image(data)
    # value / 257 rounded: 65535 -> 255, 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1
    assert_gray_replicated(out, np.array([[0, 1, 255, 128, 0, 1]], np.uint8))


def test_16bit_big_endian_and_32bit_int_tiff_use_the_same_scale():
    values = np.array([[0, 65535], [514, 1000]], dtype=np.uint16)
    expected = np.rint(values / 257).astype(np.uint8)
    assert_gray_replicated(decode_image(encode(sixteen_bit(values, "I;16B"), "TIFF")), expected)
    int32 = Image.fromarray(values.astype(np.int32), mode="I")
    assert_gray_replicated(decode_image(encode(int32, "TIFF")), expected)


def test_scale_is_fixed_not_stretched_per_image():
    dim = np.full((2, 2), 2570, np.uint16)  # a uniformly dark 16-bit image stays dark
    assert_gray_replicated(decode_image(encode(sixteen_bit(dim, "I;16"))), np.full((2, 2), 10, np.uint8))


def test_rgb_keeps_its_channels_in_order():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0], rgb[1, 2] = (10, 20, 30), (200, 100, 0)
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(rgb, "RGB"))), rgb)


def test_rgba_drops_alpha_without_compositing():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    alpha = np.array([[0, 255], [7, 128]], np.uint8)  # even fully transparent pixels keep their colour
    out = decode_image(encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA")))
    np.testing.assert_array_equal(out, rgb)


def test_la_palette_one_bit_and_cmyk():
    la = Image.fromarray(np.dstack([GRAY, np.full_like(GRAY, 9)]), "LA")
    assert_gray_replicated(decode_image(encode(la)), GRAY)

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    np.testing.assert_array_equal(decode_image(encode(palette))[0], [(255, 0, 0), (0, 0, 255)])

    transparent = palette.copy()
    transparent.info["transparency"] = 0
    np.testing.assert_array_equal(decode_image(encode(transparent))[0], [(255, 0, 0), (0, 0, 255)])

    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((0, 0), 1)
    assert_gray_replicated(decode_image(encode(bits)), np.array([[255, 0]], np.uint8))

    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))  # no ink: white
    out = decode_image(encode(cmyk, "JPEG", quality=100))
    assert out.shape == (2, 2, 3) and out.min() >= 250


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF"])
def test_jpeg_bmp_tiff_grayscale_and_colour(fmt):
    out = decode_image(encode(Image.fromarray(np.full((8, 8), 100, np.uint8), "L"), fmt))
    assert out.shape == (8, 8, 3)
    assert np.abs(out.astype(int) - 100).max() <= 2  # JPEG may be off by a little
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 200
    out = decode_image(encode(Image.fromarray(colour, "RGB"), fmt))
    assert np.abs(out.astype(int) - colour).max() <= 3


def test_decoded_array_is_a_writable_copy():
    out = decode_image(encode(Image.fromarray(np.zeros((2, 2, 3), np.uint8), "RGB")))
    out[0, 0, 0] = 1  # callers may modify it in place
    assert out[0, 0, 0] == 1


def test_empty_text_and_truncated_bytes_name_their_source():
    with pytest.raises(BadImageError, match=r"'a/empty.png'.*empty") as empty:
        decode_image(b"", source="a/empty.png")
    assert empty.value.source == "a/empty.png" and "empty" in empty.value.reason
    # The decoder runs in training and in serving alike: the remedy is for its caller to add.
    assert str(empty.value) == "cannot decode image 'a/empty.png': the file is empty."
    assert "skip" not in str(empty.value).lower()

    with pytest.raises(BadImageError, match=r"notes.png.*not an image"):
        decode_image(b"just some text, saved as notes.png", source="notes.png")

    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    whole = encode(Image.fromarray(noise, "L"))
    with pytest.raises(BadImageError, match=r"cut.png.*corrupt or truncated"):
        decode_image(whole[: len(whole) // 2], source="cut.png")
    jpeg = encode(Image.fromarray(noise, "L"), "JPEG")
    with pytest.raises(BadImageError, match="cut.jpg"):
        decode_image(jpeg[: len(jpeg) // 2], source="cut.jpg")


def test_truncated_file_fails_even_if_someone_enabled_truncated_loading(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    noise = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    whole = encode(Image.fromarray(noise, "L"))
    with pytest.raises(BadImageError, match="cut.png"):
        decode_image(whole[: len(whole) // 2], source="cut.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_non_bytes_input_is_a_bad_image_and_errors_pickle():
    with pytest.raises(BadImageError, match="row 3.*expected encoded image bytes, got str"):
        decode_image("not bytes", source="row 3")  # type: ignore[arg-type]
    error = BadImageError("x.png", "the file is empty")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.source, copy.reason, str(copy)) == ("x.png", "the file is empty", str(error))
    assert isinstance(copy, ValueError)
    hinted = pickle.loads(pickle.dumps(BadImageError("x.png", "the file is empty", hint="Replace it.")))
    assert str(hinted) == "cannot decode image 'x.png': the file is empty. Replace it."


def test_resize_is_square_uint8_and_bilinear():
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, 10:] = 200
    out = resize(image, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 200
    assert 0 < out[0, 8, 0] < 200 or 0 < out[0, 7, 0] < 200  # interpolated at the edge, not nearest
    same = np.full((16, 16, 3), 5, np.uint8)
    np.testing.assert_array_equal(resize(same, 16), same)


def test_vgg_preprocess_matches_keras_preprocess_input():
    from keras.applications.vgg16 import preprocess_input

    batch = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7, 3)).astype(np.uint8)
    ours = vgg_preprocess(batch)
    assert ours.dtype == np.float32 and ours.shape == batch.shape
    np.testing.assert_allclose(ours, preprocess_input(batch.astype(np.float32)), rtol=1e-6, atol=1e-4)
    # BGR order: the first output channel is blue minus its mean
    np.testing.assert_allclose(ours[..., 0], batch[..., 2] - VGG_BGR_MEAN[0], rtol=1e-6)


def test_batch_keeps_going_past_bad_images():
    good = encode(Image.fromarray(np.full((10, 20), 50, np.uint8), "L"))
    batch, indices, errors = images_to_model_input([good, b"broken", good, b""], 16, sources=["a", "b", "c", "d"])
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.float32
    assert indices == [0, 2]
    assert [e.source for e in errors] == ["b", "d"]
    np.testing.assert_allclose(batch[0, 0, 0], 50 - VGG_BGR_MEAN, rtol=1e-6)


def test_batch_of_only_bad_images_is_empty_not_an_exception():
    batch, indices, errors = images_to_model_input([b"x"], 8)
    assert batch.shape == (0, 8, 8, 3) and batch.dtype == np.float32
    assert indices == [] and errors[0].source == "image 0"
    with pytest.raises(ValueError, match="2 images but 1 sources"):
        images_to_model_input([b"x", b"y"], 8, sources=["only one"])
