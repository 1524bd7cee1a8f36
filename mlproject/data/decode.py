"""The one image decoder, used at training time and inside the registered model at serving time.

Any common image kind becomes an H x W x 3 uint8 RGB array, is resized, then VGG-preprocessed.
Training and serving both call these functions, so the two can never drift apart.
No TensorFlow import here: the serving model and the data loaders stay light.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

#: ``keras.applications.vgg16.preprocess_input`` ("caffe" mode): ImageNet channel means in BGR order.
VGG_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)

#: Pillow modes holding integer gray values wider than 8 bits.
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: Modes carrying transparency; the alpha channel is dropped (see ``_to_uint8_rgb``).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

#: Images with more pixels are refused before their pixels are decoded (memory while decoding:
#: Pillow's buffer, 1-4 bytes per pixel, plus the 3-byte RGB result).
MAX_PIXELS_VARIABLE = "ALLOOP_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000
#: Images are converted to RGB this many pixels at a time, so no full-size temporary (float64 for
#: 16-bit and float images: 8 bytes per pixel) is ever made.
_BAND_PIXELS = 1 << 20


class BadImageError(ValueError):
    """An image that cannot be decoded; names its source (file path or task) and the reason.

    ``hint`` (what to do next) is left to the caller that knows its context: a training run, the
    CLI and the serving model each offer different remedies.
    """

    def __init__(self, source: str, reason: str, hint: str = ""):
        self.source, self.reason, self.hint = str(source), str(reason), str(hint)
        super().__init__(self.source, self.reason)

    def __str__(self) -> str:
        message = f"cannot decode image {self.source!r}: {self.reason}."
        return f"{message} {self.hint}" if self.hint else message

    def __reduce__(self):
        # Exceptions with a custom __init__ do not unpickle by default; worker processes need it.
        return (type(self), (self.source, self.reason, self.hint))


def max_image_pixels() -> int:
    """The pixel limit: ``ALLOOP_MAX_IMAGE_PIXELS`` if set, else 50 million."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(value))
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={value!r}: expected a positive number of pixels, "
                         f"e.g. {DEFAULT_MAX_PIXELS}; unset it for the default")
    return limit


_settings_lock = threading.Lock()
_active_limits: Counter = Counter()
_saved_settings: dict = {}


@contextmanager
def _pillow_settings(limit: int):
    """Pillow's globals as decoding needs them, restored when the last concurrent decode ends.

    Truncated files must fail, not come back half grey. Pillow's own bomb check (a warning above
    ``MAX_IMAGE_PIXELS``, an error above twice that) follows our limit, so a limit raised above
    Pillow's default is not overruled; our check refuses anything over the limit before decoding.
    Counted, not saved per call: concurrent decodes (threaded servers) would otherwise restore
    each other's values.
    """
    with _settings_lock:
        if not _active_limits:
            _saved_settings.update(truncated=ImageFile.LOAD_TRUNCATED_IMAGES, max_pixels=Image.MAX_IMAGE_PIXELS)
        _active_limits[limit] += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        Image.MAX_IMAGE_PIXELS = max(_active_limits)
    try:
        yield
    finally:
        with _settings_lock:
            _active_limits[limit] -= 1
            if _active_limits[limit] == 0:
                del _active_limits[limit]
            if _active_limits:
                Image.MAX_IMAGE_PIXELS = max(_active_limits)
            else:
                ImageFile.LOAD_TRUNCATED_IMAGES = _saved_settings["truncated"]
                Image.MAX_IMAGE_PIXELS = _saved_settings["max_pixels"]


def _row_bands(image: Image.Image):
    """``(top, bottom)`` row ranges of about ``_BAND_PIXELS`` pixels each, covering the image."""
    width, height = image.size
    rows = max(1, _BAND_PIXELS // max(1, width))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def _convert_in_bands(image: Image.Image, band_to_uint8) -> np.ndarray:
    """H x W x 3 uint8, converting one band of rows at a time: never a full-size temporary copy."""
    width, height = image.size
    out = np.empty((height, width, 3), np.uint8)  # writable, detached from Pillow's buffer
    for top, bottom in _row_bands(image):
        converted = band_to_uint8(image.crop((0, top, width, bottom)))
        out[top:bottom] = converted if converted.ndim == 3 else converted[..., None]  # gray -> 3 channels
    return out


def _float_scale(image: Image.Image) -> float:
    """Float images: [0, 1] is taken as normalised (x 255), anything else as 0..255 values."""
    width = image.size[0]
    band_maxima = [np.asarray(image.crop((0, top, width, bottom))).max(initial=0.0)
                   for top, bottom in _row_bands(image)]
    return 255.0 if np.max(band_maxima, initial=0.0) <= 1.0 else 1.0  # a NaN anywhere: taken as 0..255


def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> H x W x 3 uint8 RGB."""
    mode = image.mode
    if mode in _WIDE_GRAY_MODES:
        # 16-bit gray: a fixed scale (65535 -> 255, i.e. value / 257 rounded) keeps absolute
        # intensities comparable across images; a per-image min/max stretch would not.
        def band_to_uint8(band):
            return np.clip(np.rint(np.asarray(band, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
    elif mode == "F":
        scale = _float_scale(image)

        def band_to_uint8(band):
            return np.clip(np.rint(np.asarray(band, dtype=np.float64) * scale), 0, 255).astype(np.uint8)
    elif mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        # Alpha is dropped, not composited: inspection images carry no meaning in transparency,
        # and keeping the stored colour avoids inventing a background the camera never saw.
        def band_to_uint8(band):
            return np.asarray(band.convert("RGBA").convert("RGB"))
    else:
        def band_to_uint8(band):  # L, 1, P, CMYK, YCbCr, ...: gray is replicated into 3 channels
            return np.asarray(band if band.mode == "RGB" else band.convert("RGB"))
    return _convert_in_bands(image, band_to_uint8)


def _too_many_pixels(source: str, pixels: str, limit: int) -> BadImageError:
    return BadImageError(
        source, f"{pixels} pixels, over the limit of {limit:,} pixels (set {MAX_PIXELS_VARIABLE} to a larger "
                "number if such images are expected; decoding takes up to about 8 bytes of memory per pixel)")


def _check_pixel_count(image: Image.Image, source: str, limit: int) -> None:
    width, height = image.size
    if width * height > limit:
        raise _too_many_pixels(source, f"{width} x {height} = {width * height:,}", limit)


def _pixels_in_bomb_error(exc: Exception) -> str:
    """The pixel count from Pillow's own bomb error (over twice its limit, raised inside ``Image.open``)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,}" if found else "too many"


def decode_image(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """PNG/JPEG/BMP/TIFF/... bytes -> H x W x 3 uint8 RGB; :class:`BadImageError` naming ``source`` otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadImageError(source, f"expected encoded image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise BadImageError(source, "the file is empty")
    limit = max_image_pixels()
    try:
        with _pillow_settings(limit), Image.open(io.BytesIO(bytes(data))) as image:
            _check_pixel_count(image, source, limit)  # from the header, before any pixel is decoded
            image.load()  # decode every pixel now, so a truncated file fails here and not later
            array = _to_uint8_rgb(image)
    except UnidentifiedImageError:
        raise BadImageError(source, "not an image Pillow can read (PNG, JPEG, BMP, TIFF, ...)") from None
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(source, _pixels_in_bomb_error(exc), limit) from None
    except BadImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImageError(source, f"corrupt or truncated image ({exc})") from None
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise BadImageError(source, f"unexpected image shape {array.shape}")
    return array


#: How an image becomes a square model input: "pad" keeps the aspect ratio (the shorter side is
#: padded with the ImageNet mean colour, which VGG preprocessing turns into zeros), "squash" stretches
#: (models registered before "pad" existed). A square image comes out the same either way.
FITS = ("pad", "squash")
TRAINING_FIT = "pad"  # what new models are trained (and so served) with
PAD_RGB = (124, 117, 104)


def resize(image: np.ndarray, size: int, fit: str = "squash") -> np.ndarray:
    """``size`` x ``size`` x 3 uint8, bilinear; ``fit`` (:data:`FITS`) says how a non-square image fits."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    height, width = image.shape[:2]
    if height == size and width == size:
        return image
    source = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if fit == "squash" or height == width:
        return np.array(source.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    scale = size / max(height, width)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.new("RGB", (size, size), PAD_RGB)
    canvas.paste(source.resize(inner, Image.Resampling.BILINEAR), ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return np.array(canvas, dtype=np.uint8)


def vgg_preprocess(batch_uint8: np.ndarray) -> np.ndarray:
    """Same as ``keras.applications.vgg16.preprocess_input``: RGB -> BGR, minus the ImageNet means."""
    batch = np.asarray(batch_uint8, dtype=np.float32)[..., ::-1]
    return batch - VGG_BGR_MEAN


def images_to_model_input(images: Sequence[bytes], size: int, sources: Sequence[str] | None = None, *,
                          fit: str = "squash"):
    """Decode, resize (``fit``, see :func:`resize`) and preprocess a batch; one bad image never stops the others.

    Returns ``(batch, good_indices, errors)``: the float32 N x size x size x 3 batch of the decodable
    images, their positions in ``images``, and one :class:`BadImageError` per image that failed.
    """
    if sources is None:
        sources = [f"image {i}" for i in range(len(images))]
    elif len(sources) != len(images):
        raise ValueError(f"{len(images)} images but {len(sources)} sources")
    decoded, good, errors = [], [], []
    for index, (data, source) in enumerate(zip(images, sources)):
        try:
            decoded.append(resize(decode_image(data, source=source), size, fit))
            good.append(index)
        except BadImageError as exc:
            errors.append(exc)
    batch = vgg_preprocess(np.stack(decoded)) if decoded else np.zeros((0, size, size, 3), np.float32)
    return batch, good, errors
