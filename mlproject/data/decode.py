"""The one image decoder, used at training time and inside the registered model at serving time.

Any common image kind becomes a 3-channel uint8 array, resized, then VGG-preprocessed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

#: ``keras.applications.vgg16.preprocess_input`` ("caffe" mode): BGR channel means.
VGG_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


class BadImageError(ValueError):
    """An image that cannot be decoded; names its source (file path or task) and the reason."""

    def __init__(self, source: str, reason: str):
        self.source, self.reason = str(source), reason
        super().__init__(
            f"cannot decode image {self.source!r}: {reason}. "
            "Fix or remove the file, or pass --skip-bad-images true to skip it."
        )


def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) grayscale: a fixed scale (65535 -> 255) keeps absolute intensities
        # comparable across images, which a per-image min/max stretch would not.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Drop transparency: inspection images carry no meaning in alpha.
        image = image.convert("RGBA").convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...
    return np.asarray(image, dtype=np.uint8)


def decode_image(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> H x W x 3 uint8 RGB; :class:`BadImageError` naming ``source`` otherwise."""
    if not data:
        raise BadImageError(source, "the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode fully now, so a truncated file fails here and not later
            array = _to_uint8_rgb(image)
    except UnidentifiedImageError:
        raise BadImageError(source, "not an image Pillow can read (PNG, JPEG, BMP, TIFF, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(source, f"corrupt or truncated image ({exc})") from None
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise BadImageError(source, f"unexpected image shape {array.shape}")
    return array


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` x 3 uint8, bilinear (the aspect ratio is not kept: inputs are square tiles)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def vgg_preprocess(batch_uint8: np.ndarray) -> np.ndarray:
    """Same as ``keras.applications.vgg16.preprocess_input``: RGB -> BGR, minus the ImageNet means."""
    batch = np.asarray(batch_uint8, dtype=np.float32)[..., ::-1]
    return batch - VGG_BGR_MEAN


def images_to_model_input(images: Sequence[bytes], size: int, sources: Sequence[str] | None = None):
    """Decode, resize and preprocess a batch; one bad image never stops the others.

    Returns ``(batch, good_indices, errors)``: the float32 batch of the decodable images, their
    positions in ``images``, and one :class:`BadImageError` per image that could not be decoded.
    """
    sources = sources if sources is not None else [f"image {i}" for i in range(len(images))]
    decoded, good, errors = [], [], []
    for index, (data, source) in enumerate(zip(images, sources)):
        try:
            decoded.append(resize(decode_image(data, source=source), size))
            good.append(index)
        except BadImageError as exc:
            errors.append(exc)
    batch = vgg_preprocess(np.stack(decoded)) if decoded else np.zeros((0, size, size, 3), np.float32)
    return batch, good, errors
