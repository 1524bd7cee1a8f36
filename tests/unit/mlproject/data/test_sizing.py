"""image_size=auto and aspect-preserving fits, on small synthetic images."""

import numpy as np
import pytest
from PIL import Image

from mlproject.data.decode import PAD_RGB, images_to_model_input, resize
from mlproject.data.records import LabeledImage
from mlproject.data.sizing import AUTO, choose_image_size, header_sizes, parse_image_size, resolve_image_size


def _write(path, size, value=200):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return LabeledImage(str(path), "ok")


@pytest.mark.parametrize("sizes, expected, capped", [
    ([(300, 300)] * 5, 300, False),
    ([(512, 512)] * 3, 512, False),
    ([(200, 200), (300, 300), (1000, 1000)], 300, False),  # the median, not the largest
    ([(1247, 500)] * 4, 512, True),
    ([(20, 10)] * 2, 32, False),  # at least what VGG16's five poolings need
])
def test_auto_size_is_the_median_longer_side_capped(sizes, expected, capped):
    choice = choose_image_size(sizes)
    assert choice.size == expected
    assert "median longer side" in choice.reason and ("capped" in choice.reason) == capped


def test_auto_size_reads_only_headers_and_ignores_unreadable_files(tmp_path):
    records = [_write(tmp_path / f"{i}.png", (120, 80)) for i in range(7)]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    records.append(LabeledImage(str(tmp_path / "bad.png"), "ok"))
    assert header_sizes(records) == [(120, 80)] * 7
    choice = resolve_image_size("auto", records)
    assert choice.size == 120 and "120x80" in choice.reason
    assert resolve_image_size("64", records).size == 64
    assert resolve_image_size(96, records).reason == "given"


@pytest.mark.parametrize("text, value", [("auto", AUTO), ("AUTO", AUTO), ("224", 224), ("224.0", 224), (512, 512)])
def test_parse_image_size(text, value):
    assert parse_image_size(text) == value


@pytest.mark.parametrize("bad", ["big", "22.5", "16", "-1"])
def test_bad_image_sizes_are_refused_with_what_is_accepted(bad):
    with pytest.raises(ValueError, match="auto"):
        parse_image_size(bad)


def test_pad_keeps_the_aspect_ratio_and_fills_with_the_mean_colour():
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, :, 0] = 255
    out = resize(wide, 20, "pad")
    assert out.shape == (20, 20, 3)
    # a 40x10 image at 20 px wide is 5 px high: rows 7..11 hold it, the rest is padding
    assert (out[:7] == PAD_RGB).all() and (out[13:] == PAD_RGB).all()
    assert (out[8:12, :, 0] == 255).all() and (out[8:12, :, 1] == 0).all()
    squashed = resize(wide, 20, "squash")
    assert (squashed[:, :, 0] == 255).all()  # stretched over the whole square


def test_square_images_are_the_same_whatever_the_fit():
    image = np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize(image, 16, "pad"), resize(image, 16, "squash"))


def test_padding_becomes_zero_after_vgg_preprocessing(tmp_path):
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (64, 16), (0, 0, 0)).save(buffer, format="PNG")
    batch, good, errors = images_to_model_input([buffer.getvalue()], 32, fit="pad")
    assert good == [0] and not errors
    assert np.abs(batch[0, 0]).max() < 0.7  # the padded top row: the ImageNet means, subtracted
    assert np.abs(batch[0, 16]).min() > 100  # the black image itself


def test_unknown_fit_is_refused():
    with pytest.raises(ValueError, match="fit must be one of"):
        resize(np.zeros((4, 8, 3), np.uint8), 4, "crop")
