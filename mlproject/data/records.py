"""The one record type every loader produces and every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass

#: Label of the positive class. P(defect) is what every model returns.
DEFECT = "defect"
#: Label of the negative class in the DAGM loaders and the synthetic default.
OK = "ok"

#: Where a label came from: a person in Label Studio, the self-training loop, or an imported dataset.
SOURCES = ("human", "auto", "import")


@dataclass(frozen=True)
class LabeledImage:
    """One image and its label.

    ``path`` is a local file path or a URI (``file://``, ``http(s)://``, Label Studio's
    ``/data/...``); loaders write absolute local paths.
    """

    path: str
    label: str
    source: str = "import"
    round: int = 0
    mask_path: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"{self.path}: source must be one of {SOURCES}, got {self.source!r}")
        if not self.label:
            raise ValueError(f"{self.path}: empty label")
