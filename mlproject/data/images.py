"""Reading labelled images from disk into uint8 arrays, counting (never hiding) the bad ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mlproject.data.decode import BadImageError, decode_image, resize
from mlproject.data.records import LabeledImage


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str


def local_path(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def read_bytes(record: LabeledImage) -> bytes:
    try:
        return local_path(record.path).read_bytes()
    except OSError as exc:
        raise BadImageError(record.path, f"cannot read the file ({exc.strerror or exc})") from None


def load_images(records: list[LabeledImage], size: int, *, skip_bad: bool = False, progress: bool = True):
    """``(images, loaded_records, bad_files)``: N x size x size x 3 uint8 (not yet VGG-preprocessed).

    A bad file raises :class:`BadImageError` naming it, unless ``skip_bad``: then it is left out,
    and listed in ``bad_files`` for the caller to log.
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
