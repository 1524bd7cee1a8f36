"""Seeded stratified split; the synthetic default data set."""

import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mlproject.data.loaders import label_counts, load_dataset
from mlproject.data.records import LabeledImage
from mlproject.data.split import stratified_split
from mlproject.data.synthetic import generate_synthetic_dagm


def records(n_ok=40, n_defect=10):
    return ([LabeledImage(f"/d/ok{i:03d}.png", "ok") for i in range(n_ok)]
            + [LabeledImage(f"/d/def{i:03d}.png", "defect") for i in range(n_defect)])


def test_same_seed_same_split_whatever_the_input_order():
    data = records()
    shuffled = data[:]
    random.Random(3).shuffle(shuffled)
    assert stratified_split(data, seed=7) == stratified_split(shuffled, seed=7)
    assert stratified_split(data, seed=7) != stratified_split(data, seed=8)


def test_split_is_stratified_disjoint_and_complete():
    split = stratified_split(records(), seed=0, val_fraction=0.2, test_fraction=0.2)
    parts = [split.train, split.val, split.test]
    paths = [r.path for part in parts for r in part]
    assert len(paths) == len(set(paths)) == 50
    for part in parts:
        counts = Counter(r.label for r in part)
        assert counts["defect"] >= 1 and counts["ok"] >= 1
    assert Counter(r.label for r in split.test) == {"ok": 8, "defect": 2}
    rows = split.to_rows()
    assert {row["split"] for row in rows} == {"train", "val", "test"} and len(rows) == 50


def test_split_refuses_too_small_classes_and_duplicates():
    with pytest.raises(ValueError, match="at least 3"):
        stratified_split(records(n_defect=2), seed=0)
    with pytest.raises(ValueError, match="listed twice"):
        stratified_split(records() + [LabeledImage("/d/ok000.png", "ok")], seed=0)


def test_synthetic_data_is_deterministic_readable_and_labelled_synthetic(tmp_path):
    a = generate_synthetic_dagm(tmp_path / "a", n_images=20, size=32, seed=5)
    b = generate_synthetic_dagm(tmp_path / "b", n_images=20, size=32, seed=5)
    c = generate_synthetic_dagm(tmp_path / "c", n_images=20, size=32, seed=6)
    first = sorted(p.read_bytes() for p in a.rglob("*.PNG"))
    assert first == sorted(p.read_bytes() for p in b.rglob("*.PNG"))
    assert first != sorted(p.read_bytes() for p in c.rglob("*.PNG"))
    assert "SYNTHETIC" in (tmp_path / "a" / "README.txt").read_text()
    data = load_dataset(a)
    assert len(data) == 20 and label_counts(data) == {"defect": 4, "ok": 16}
    for record in data:
        if record.label == "defect":  # the mask marks an elliptical region
            mask = np.asarray(Image.open(record.mask_path))
            assert 0 < (mask == 255).mean() < 0.5


def test_synthetic_defects_change_the_texture_locally(tmp_path):
    root = generate_synthetic_dagm(tmp_path, n_images=20, size=64, seed=1)
    for record in load_dataset(root):
        if record.label != "defect":
            continue
        image = np.asarray(Image.open(record.path), dtype=float)
        mask = np.asarray(Image.open(record.mask_path)) == 255
        inside, outside = image[mask], image[~mask]
        # smoothed and shifted: a different mean or a lower spread than the background
        assert abs(inside.mean() - outside.mean()) > 10 or inside.std() < 0.8 * outside.std()
