"""A deterministic, stratified train/val/test split from a seed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sklearn.model_selection import train_test_split

from mlproject.data.records import LabeledImage

MIN_PER_CLASS = 3  # one image of each class for each of train, val and test


@dataclass(frozen=True)
class Split:
    train: list[LabeledImage]
    val: list[LabeledImage]
    test: list[LabeledImage]

    def to_rows(self) -> list[dict]:
        return [
            {"image": r.path, "label": r.label, "source": r.source, "round": r.round, "split": name}
            for name in ("train", "val", "test")
            for r in getattr(self, name)
        ]


def stratified_split(records: list[LabeledImage], *, seed: int, val_fraction: float = 0.15,
                     test_fraction: float = 0.2) -> Split:
    """Same seed and same records (in any order) -> the same split; every class in every part."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in (0, 1) "
                         "and sum to less than 1")
    ordered = sorted(records, key=lambda r: r.path)  # input order must not change the split
    duplicates = [p for p, n in Counter(r.path for r in ordered).items() if n > 1]
    if duplicates:
        raise ValueError(f"{len(duplicates)} images are listed twice, e.g. {duplicates[0]}")
    counts = Counter(r.label for r in ordered)
    small = {label: n for label, n in counts.items() if n < MIN_PER_CLASS}
    if small:
        raise ValueError(f"too few images to split: {small}; each label needs at least {MIN_PER_CLASS}")
    labels = [r.label for r in ordered]
    n_classes = len(counts)
    # At least one image per class in each held-out part, whatever the fractions.
    n_test = max(round(test_fraction * len(ordered)), n_classes)
    rest, test = train_test_split(ordered, test_size=n_test, stratify=labels, random_state=seed)
    n_val = max(round(val_fraction * len(ordered)), n_classes)
    train, val = train_test_split(rest, test_size=n_val, stratify=[r.label for r in rest], random_state=seed)
    by_path = lambda r: r.path  # noqa: E731
    return Split(sorted(train, key=by_path), sorted(val, key=by_path), sorted(test, key=by_path))
