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


#: How many bad files an error names one by one; the rest are counted.
NAMED_BAD_FILES = 20


class BadImagesError(BadImageError):
    """Every file of a run that could not be read: names the first 20 with their reasons, and the count.

    A :class:`BadImageError` for the first of them (``source``, ``reason``), so callers that catch
    one bad image keep working; ``bad_files`` holds them all.
    """

    def __init__(self, bad_files: list[BadFile], hint: str = ""):
        if not bad_files:
            raise ValueError("BadImagesError needs at least one bad file")
        self.bad_files = list(bad_files)
        super().__init__(self.bad_files[0].path, self.bad_files[0].reason, hint)

    def __str__(self) -> str:
        if len(self.bad_files) == 1:
            return super().__str__()
        shown = self.bad_files[:NAMED_BAD_FILES]
        lines = [f"{len(self.bad_files)} images cannot be read"
                 + (f" (the first {len(shown)} listed):" if len(shown) < len(self.bad_files) else ":")]
        lines += [f"  {bad.path}: {bad.reason}" for bad in shown]
        if len(shown) < len(self.bad_files):
            lines.append(f"  ... and {len(self.bad_files) - len(shown)} more")
        return "\n".join(lines + ([self.hint] if self.hint else []))

    def __reduce__(self):
        return (type(self), (self.bad_files, self.hint))


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


def load_images(records: list[LabeledImage], size: int, *, skip_bad: bool = False, progress: bool = True,
                fit: str = "squash"):
    """``(images, loaded_records, bad_files)``: N x size x size x 3 uint8 (``fit``: see
    :func:`~mlproject.data.decode.resize`), not yet VGG-preprocessed.

    Preprocessing (float32, 4x the memory) is left to the caller, batch by batch. Bad files raise one
    :class:`BadImagesError` naming them all, after every file was tried, unless ``skip_bad``: then
    they are left out and listed in ``bad_files`` for the caller to log.
    """
    images, loaded, bad = [], [], []
    for record in tqdm(records, desc=f"reading images ({size}px)", unit="img", disable=not progress):
        try:
            image = resize(decode_image(read_bytes(record), source=record.path), size, fit)
        except BadImageError as exc:
            bad.append(BadFile(record.path, exc.reason))
            continue
        if skip_bad or not bad:  # once the call is bound to fail, only look for more bad files
            images.append(image)
            loaded.append(record)
    if bad and not skip_bad:
        raise BadImagesError(bad)
    array = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return array, loaded, bad
