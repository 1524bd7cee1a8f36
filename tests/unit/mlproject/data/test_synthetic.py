"""The embedded synthetic DAGM-like default data set."""


import numpy as np
import pytest
from PIL import Image

from mlproject.data.loaders import detect_layout, label_counts, load_dagm
from mlproject.data.records import DEFECT, OK


def generate(out_dir, **kwargs):
    from mlproject.data.synthetic import generate_synthetic_dagm

    return generate_synthetic_dagm(out_dir, **kwargs)


def all_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = generate(tmp_path / "a", n_images=20, size=32, seed=5)
    b = generate(tmp_path / "b", n_images=20, size=32, seed=5)
    c = generate(tmp_path / "c", n_images=20, size=32, seed=6)
    assert all_bytes(a) == all_bytes(b)
    first, other = all_bytes(a), all_bytes(c)
    assert first["Train/0001.PNG"] != other["Train/0001.PNG"]  # every image differs with the seed
    assert len(first) == len(other)  # same number of images and masks


def test_layout_labels_and_readme(tmp_path):
    root = generate(tmp_path, n_images=20, size=32, seed=5, pattern="Class7")
    assert root == tmp_path / "Class7"
    assert sorted(p.name for p in root.iterdir()) == ["Test", "Train"]
    labels = (root / "Train" / "Label" / "Labels.txt").read_text().splitlines()
    assert labels[0] == "1" and len(labels) == 11
    readme = (tmp_path / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "alloop" in readme and "seed: 5" in readme
    assert detect_layout(tmp_path, pattern="Class7") == "dagm"
    records = load_dagm(tmp_path, pattern="Class7")
    assert len(records) == 20 and label_counts(records) == {DEFECT: 4, OK: 16}
    for split in ("Train", "Test"):  # both halves have defects and normal images
        assert label_counts([r for r in records if f"/{split}/" in r.path]) == {DEFECT: 2, OK: 8}
    image = Image.open(records[0].path)
    assert image.mode == "L" and image.size == (32, 32)


def test_defects_have_elliptical_masks_and_change_the_texture_locally(tmp_path):
    root = generate(tmp_path, n_images=30, size=64, seed=1)
    defects = [r for r in load_dagm(root) if r.label == DEFECT]
    assert len(defects) == 6 and all(r.mask_path for r in defects)
    for record in defects:
        mask = np.asarray(Image.open(record.mask_path))
        assert set(np.unique(mask)) == {0, 255} and 0.02 < (mask == 255).mean() < 0.5
        image = np.asarray(Image.open(record.path), dtype=float)
        inside, outside = image[mask == 255], image[mask == 0]
        # smoothed and shifted: a clearly different mean or a lower spread than the background
        assert abs(inside.mean() - outside.mean()) > 10 or inside.std() < 0.8 * outside.std()


def test_idempotent_reuse_and_regeneration_with_new_parameters(tmp_path):
    root = generate(tmp_path, n_images=12, size=32, seed=0)
    stamp = (root / "Train" / "0001.PNG").stat().st_mtime_ns
    assert generate(tmp_path, n_images=12, size=32, seed=0) == root
    assert (root / "Train" / "0001.PNG").stat().st_mtime_ns == stamp  # reused, not rewritten
    generate(tmp_path, n_images=8, size=32, seed=0)
    assert len(load_dagm(root)) == 8  # replaced entirely: no leftover images from the first run
    assert "n_images\": 8" in (tmp_path / "README.txt").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_never_overwrites_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "Class1").mkdir()
    (tmp_path / "Class1" / "precious.png").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="not synthetic data"):
        generate(tmp_path, n_images=8, size=32)
    assert (tmp_path / "Class1" / "precious.png").read_bytes() == b"user data"


def test_default_size_has_the_documented_counts(tmp_path):
    # (no timing assert here: speed is measured in benchmarks/, never asserted in unit tests)
    records = load_dagm(generate(tmp_path))
    assert len(records) == 120 and label_counts(records)[DEFECT] == 24
