"""``image_size=auto``: the model's input size from the images' own size.

Small defects need resolution (DAGM class 1's smoothed patch vanishes at 224 px), while an input
larger than the images only costs time. So the size is the images' native longer side (the median
over a sample, read from the file headers without decoding pixels), capped so that a run stays
affordable on a CPU. Non-square images keep their aspect ratio (see ``decode.resize``'s "pad").
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from PIL import Image, UnidentifiedImageError

from mlproject.data.images import local_path
from mlproject.data.records import LabeledImage

AUTO = "auto"
AUTO_MAX_SIZE = 512  # VGG16 at 512 px: ~1.2 images/s forward on 2 vCPUs; 4x the cost of 256 px
MIN_SIZE = 32  # VGG16 pools five times
SAMPLE = 200


@dataclass(frozen=True)
class SizeChoice:
    size: int
    reason: str  # logged with the run, so a person can see why


def parse_image_size(value) -> int | str:
    """``auto`` or a whole number of pixels (MLflow passes numbers as ``"224.0"``)."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"image_size must be 'auto' or a number of pixels, got {value!r}") from None
    if not number.is_integer() or number < MIN_SIZE:
        raise ValueError(f"image_size must be a whole number of at least {MIN_SIZE} pixels, or 'auto'; got {value!r}")
    return int(number)


def header_sizes(records: list[LabeledImage], sample: int = SAMPLE) -> list[tuple[int, int]]:
    """(width, height) of up to ``sample`` images spread evenly over ``records``, from their headers."""
    if not records:
        return []
    step = max(1, len(records) // sample)
    sizes = []
    for record in records[::step][:sample]:
        try:
            with Image.open(local_path(record.path)) as image:
                sizes.append(image.size)
        except (OSError, UnidentifiedImageError, ValueError):
            continue  # a bad file is reported by the loader, with all the others
    return sizes


def choose_image_size(sizes: list[tuple[int, int]], *, cap: int = AUTO_MAX_SIZE) -> SizeChoice:
    """The median longer side of ``sizes``, at most ``cap`` and at least :data:`MIN_SIZE`."""
    if not sizes:
        return SizeChoice(min(224, cap), "no image header could be read; VGG16's usual 224 px")
    longer = int(median(max(w, h) for w, h in sizes))
    shapes = sorted({f"{w}x{h}" for w, h in sizes})
    seen = ", ".join(shapes[:3]) + (f" and {len(shapes) - 3} more" if len(shapes) > 3 else "")
    size = max(MIN_SIZE, min(longer, cap))
    why = f"median longer side {longer} px over {len(sizes)} images ({seen})"
    if longer > cap:
        why += f", capped at {cap} px"
    return SizeChoice(size, why)


def resolve_image_size(value, records: list[LabeledImage], *, cap: int = AUTO_MAX_SIZE) -> SizeChoice:
    """A fixed size as given, or the ``auto`` choice for ``records``."""
    parsed = parse_image_size(value)
    if parsed != AUTO:
        return SizeChoice(int(parsed), "given")
    return choose_image_size(header_sizes(records), cap=cap)
