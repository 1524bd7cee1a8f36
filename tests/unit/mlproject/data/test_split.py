"""The seeded, stratified train/val/test split."""

import random
from collections import Counter

import pytest

from mlproject.data.records import DEFECT, OK, LabeledImage
from mlproject.data.split import Split, stratified_split


def records(n_ok=40, n_defect=10):
    return ([LabeledImage(f"/d/ok{i:03d}.png", OK) for i in range(n_ok)]
            + [LabeledImage(f"/d/def{i:03d}.png", DEFECT) for i in range(n_defect)])


def paths(split: Split):
    return [[r.path for r in part] for part in (split.train, split.val, split.test)]


def test_same_seed_same_split_whatever_the_input_order():
    data = records()
    shuffled = data[:]
    random.Random(3).shuffle(shuffled)
    assert paths(stratified_split(data, seed=7)) == paths(stratified_split(shuffled, seed=7))
    assert paths(stratified_split(data, seed=7)) == paths(stratified_split(data[::-1], seed=7))


def test_different_seed_different_split():
    data = records()
    assert paths(stratified_split(data, seed=7)) != paths(stratified_split(data, seed=8))


def test_split_is_disjoint_complete_and_stratified():
    data = records(n_ok=80, n_defect=20)
    split = stratified_split(data, seed=0, val_fraction=0.15, test_fraction=0.2)
    all_paths = [p for part in paths(split) for p in part]
    assert len(all_paths) == len(set(all_paths)) == len(data)
    assert Counter(r.label for r in split.test) == {OK: 16, DEFECT: 4}
    assert Counter(r.label for r in split.val) == {OK: 12, DEFECT: 3}
    assert Counter(r.label for r in split.train) == {OK: 52, DEFECT: 13}


def test_every_class_in_every_part_even_when_rare():
    split = stratified_split(records(n_ok=200, n_defect=3), seed=1)
    for part in (split.train, split.val, split.test):
        assert Counter(r.label for r in part)[DEFECT] == 1
    tiny = stratified_split(records(n_ok=3, n_defect=3), seed=1, val_fraction=0.45, test_fraction=0.5)
    for part in (tiny.train, tiny.val, tiny.test):
        assert Counter(r.label for r in part) == {OK: 1, DEFECT: 1}


def test_to_rows_lists_every_image_once_with_its_split():
    split = stratified_split(records(), seed=0)
    rows = split.to_rows()
    assert len(rows) == 50 and set(rows[0]) == {"image", "label", "source", "round", "split"}
    assert Counter(row["split"] for row in rows) == {"train": len(split.train), "val": len(split.val),
                                                     "test": len(split.test)}
    test_row = next(row for row in rows if row["split"] == "test")
    assert test_row["image"] in {r.path for r in split.test}


def test_too_small_classes_duplicates_and_bad_fractions_are_errors():
    with pytest.raises(ValueError, match=r"too few images to split: \{'defect': 2\}.*at least 3"):
        stratified_split(records(n_defect=2), seed=0)
    with pytest.raises(ValueError, match="listed twice, e.g. /d/ok000.png"):
        stratified_split(records() + [LabeledImage("/d/ok000.png", DEFECT)], seed=0)
    with pytest.raises(ValueError, match="sum to less than 1"):
        stratified_split(records(), seed=0, val_fraction=0.5, test_fraction=0.5)
