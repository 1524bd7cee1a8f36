"""The one image decoder, used at training time and inside the registered model at serving time.

Any common image kind becomes an H x W x 3 uint8 RGB array, is resized, then VGG-preprocessed.
Training and serving both call these functions, so the two can never drift apart.
No TensorFlow import here: the serving model and the data loaders stay light.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

#: ``keras.applications.vgg16.preprocess_input`` ("caffe" mode): ImageNet channel means in BGR order.
VGG_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)

#: Pillow modes holding integer gray values wider than 8 bits.
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: Modes carrying transparency; the alpha channel is dropped (see ``_to_uint8_rgb``).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

SKIP_HINT = "Fix or remove the file, or pass --skip-bad-images true to skip it."


class BadImageError(ValueError):
    """An image that cannot be decoded; names its source (file path or task) and the reason."""

    def __init__(self, source: str, reason: str):
        self.source, self.reason = str(source), str(reason)
        super().__init__(f"cannot decode image {self.source!r}: {self.reason}. {SKIP_HINT}")

    def __reduce__(self):
        # Exceptions with a custom __init__ do not unpickle by default; worker processes need it.
        return (type(self), (self.source, self.reason))


def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> H x W x 3 uint8 RGB."""
    mode = image.mode
    if mode in _WIDE_GRAY_MODES:
        # 16-bit gray: a fixed scale (65535 -> 255, i.e. value / 257 rounded) keeps absolute
        # intensities comparable across images; a per-image min/max stretch would not.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        # Float images: [0, 1] is taken as normalised, anything else as 0..255 values.
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        # Alpha is dropped, not composited: inspection images carry no meaning in transparency,
        # and keeping the stored colour avoids inventing a background the camera never saw.
        image = image.convert("RGBA").convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...: gray is replicated into 3 channels
    return np.array(image, dtype=np.uint8)  # a writable copy, detached from Pillow's buffer


def decode_image(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """PNG/JPEG/BMP/TIFF/... bytes -> H x W x 3 uint8 RGB; :class:`BadImageError` naming ``source`` otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadImageError(source, f"expected encoded image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise BadImageError(source, "the file is empty")
    # A truncated file must fail, not come back half grey: make sure nobody switched this on.
    truncated_setting = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            image.load()  # decode every pixel now, so a truncated file fails here and not later
            array = _to_uint8_rgb(image)
    except UnidentifiedImageError:
        raise BadImageError(source, "not an image Pillow can read (PNG, JPEG, BMP, TIFF, ...)") from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(source, f"image too large ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImageError(source, f"corrupt or truncated image ({exc})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_setting
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise BadImageError(source, f"unexpected image shape {array.shape}")
    return array


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` x 3 uint8, bilinear (aspect ratio not kept: inputs are square-ish tiles)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if image.shape[0] == size and image.shape[1] == size:
        return image
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize(
        (size, size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8)


def vgg_preprocess(batch_uint8: np.ndarray) -> np.ndarray:
    """Same as ``keras.applications.vgg16.preprocess_input``: RGB -> BGR, minus the ImageNet means."""
    batch = np.asarray(batch_uint8, dtype=np.float32)[..., ::-1]
    return batch - VGG_BGR_MEAN


def images_to_model_input(images: Sequence[bytes], size: int, sources: Sequence[str] | None = None):
    """Decode, resize and preprocess a batch; one bad image never stops the others.

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
            decoded.append(resize(decode_image(data, source=source), size))
            good.append(index)
        except BadImageError as exc:
            errors.append(exc)
    batch = vgg_preprocess(np.stack(decoded)) if decoded else np.zeros((0, size, size, 3), np.float32)
    return batch, good, errors
