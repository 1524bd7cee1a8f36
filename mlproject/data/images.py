"""Reading labelled images from disk into uint8 arrays, counting (never hiding) the bad ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from tqdm.auto import tqdm

from mlproject.data.decode import BadImageError, decode_image, resize
from mlproject.data.records import LabeledImage


@dataclass(frozen=True)
class BadFile:
    """A file left out because it could not be read or decoded (logged by the caller)."""

    path: str
    reason: str


def local_path(uri: str) -> Path:
    """A local path or ``file://`` URI -> Path; other URIs cannot be read from disk."""
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise BadImageError(uri, f"file URI on another host ({parsed.netloc}) cannot be read locally")
        return Path(unquote(parsed.path))  # file:///a%20b.png -> /a b.png
    if "://" in uri:
        raise BadImageError(uri, "not a local file; download it first or list a local path in the manifest")
    return Path(uri)


def read_bytes(record: LabeledImage) -> bytes:
    """The raw bytes of a record's file; :class:`BadImageError` naming it if it cannot be read."""
    path = local_path(record.path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadImageError(record.path, f"cannot read the file ({exc.strerror or exc})") from None


def load_images(records: list[LabeledImage], size: int, *, skip_bad: bool = False, progress: bool = True):
    """``(images, loaded_records, bad_files)``: N x size x size x 3 uint8, not yet VGG-preprocessed.

    Preprocessing (float32, 4x the memory) is left to the caller, batch by batch. A bad file raises
    :class:`BadImageError` naming it, unless ``skip_bad``: then it is left out and listed in
    ``bad_files`` for the caller to log.
    """
    images, loaded, bad = [], [], []
    for record in tqdm(records, desc=f"reading images ({size}px)", unit="img", disable=not progress):
        try:
            images.append(resize(decode_image(read_bytes(record), source=record.path), size))
            loaded.append(record)
        except BadImageError as exc:
            if not skip_bad:
                raise
            bad.append(BadFile(record.path, exc.reason))
    array = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return array, loaded, bad
