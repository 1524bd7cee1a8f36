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
    # Room for at least one image per class in each part, whatever the fractions.
    n_test = min(max(round(test_fraction * len(ordered)), n_classes), len(ordered) - 2 * n_classes)
    rest, test = train_test_split(ordered, test_size=n_test, stratify=labels, random_state=seed)
    n_val = min(max(round(val_fraction * len(ordered)), n_classes), len(rest) - n_classes)
    train, val = train_test_split(rest, test_size=n_val, stratify=[r.label for r in rest], random_state=seed)
    parts = _every_label_in_every_part({"train": train, "val": val, "test": test}, sorted(counts))
    by_path = lambda r: r.path  # noqa: E731
    return Split(*(sorted(parts[name], key=by_path) for name in ("train", "val", "test")))


def _every_label_in_every_part(parts: dict[str, list[LabeledImage]], labels: list[str]) -> dict:
    """Stratified sampling can leave a rare label out of a small part; move one image in from the
    part holding most of that label (the first by path, so it stays deterministic). A split where
    every label is already everywhere is returned unchanged."""
    for label in labels:
        for name in ("test", "val", "train"):
            if any(r.label == label for r in parts[name]):
                continue
            donor = max(parts, key=lambda n: sum(r.label == label for r in parts[n]))
            moved = min((r for r in parts[donor] if r.label == label), key=lambda r: r.path)
            parts[donor] = [r for r in parts[donor] if r is not moved]
            parts[name] = parts[name] + [moved]
    return parts
