"""Dataset layouts and the labels manifest, on tiny fixtures."""

import json

import numpy as np
import pytest
from PIL import Image

from mlproject.data.images import load_images
from mlproject.data.loaders import (
    DatasetError,
    detect_layout,
    label_counts,
    load_dagm,
    load_dataset,
    load_folders,
    manifest_hash,
    read_manifest,
    source_counts,
    write_manifest,
)
from mlproject.data.records import LabeledImage


def png(path, value=100, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8), "L").save(path)
    return path


def dagm_split(root, rows):
    """rows: (name, defective) pairs; writes images, masks and Labels.txt in DAGM's format."""
    (root / "Label").mkdir(parents=True, exist_ok=True)
    lines = ["1"]
    for number, (name, defective) in enumerate(rows, start=1):
        png(root / name)
        mask = "0"
        if defective:
            mask = name.replace(".PNG", "_label.PNG")
            png(root / "Label" / mask, 255)
        lines.append(f"{number:04d}\t{int(defective)}\t{name}\t0\t{mask}")
    (root / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")


def test_dagm_layout_both_splits_with_masks(tmp_path):
    dagm_split(tmp_path / "Class1" / "Train", [("0001.PNG", False), ("0002.PNG", True)])
    dagm_split(tmp_path / "Class1" / "Test", [("0001.PNG", True)])
    records = load_dagm(tmp_path, "Class1")
    assert [(r.label, r.mask_path is not None) for r in records] == [("ok", False), ("defect", True), ("defect", True)]
    assert all(r.source == "import" and r.path.startswith("/") for r in records)
    assert detect_layout(tmp_path) == "dagm"
    assert load_dataset(tmp_path / "Class1" / "Test") == records[2:]


def test_dagm_errors_name_file_and_line(tmp_path):
    split = tmp_path / "Class1" / "Train"
    dagm_split(split, [("0001.PNG", False)])
    labels = split / "Label" / "Labels.txt"
    labels.write_text("1\n0001\tx\t0001.PNG\t0\t0\n")
    with pytest.raises(DatasetError, match=r"Labels.txt, line 2"):
        load_dagm(tmp_path)
    labels.write_text("1\n0001\t0\t0001.PNG\t0\t0\n0002\t0\t0002.PNG\t0\t0\n")
    with pytest.raises(DatasetError, match=r"line 3: image 0002.PNG does not exist"):
        load_dagm(tmp_path)
    labels.write_text("1\n")
    with pytest.raises(DatasetError, match="not in .*Labels.txt.*0001.PNG"):
        load_dagm(tmp_path)  # an image on disk that no label mentions is never dropped silently


def test_development_layout(tmp_path):
    png(tmp_path / "Class1" / "a.png")
    png(tmp_path / "Class1" / "b.PNG")
    png(tmp_path / "Class1_def" / "c.bmp")
    assert detect_layout(tmp_path) == "dagm-dev"
    records = load_dataset(tmp_path, pattern="Class1")
    assert label_counts(records) == {"defect": 1, "ok": 2}


def test_folder_per_label_layout(tmp_path, caplog):
    png(tmp_path / "good" / "1.png")
    png(tmp_path / "scratch" / "2.jpg")
    (tmp_path / "scratch" / "notes.txt").write_text("not an image")
    assert detect_layout(tmp_path) == "folders"
    records = load_folders(tmp_path)
    assert label_counts(records) == {"good": 1, "scratch": 1}
    assert "notes.txt" in caplog.text  # skipped, but said so


def test_unknown_layout_says_what_is_supported(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="DAGM 2007.*manifest"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_round_trip_and_relative_paths(tmp_path, suffix):
    png(tmp_path / "img" / "a.png")
    records = [LabeledImage(str(tmp_path / "img" / "a.png"), "defect", "human", 2),
               LabeledImage("/data/upload/1/b.png", "ok", "auto", 3)]
    path = write_manifest(tmp_path / f"labels{suffix}", records)
    assert read_manifest(path) == records
    assert detect_layout(path) == "manifest"
    assert source_counts(records) == {"auto": 1, "human": 1}
    if suffix == ".csv":
        (tmp_path / "rel.csv").write_text("image,label,source,round\nimg/a.png,ok,import,0\n")
        assert read_manifest(tmp_path / "rel.csv")[0].path == str((tmp_path / "img" / "a.png").resolve())


@pytest.mark.parametrize("content,message", [
    ("image,label,source,round\na.png,,human,0\n", "line 2: field 'label' is empty"),
    ("image,label,source,round\na.png,ok,robot,0\n", "line 2: field 'source' must be one of"),
    ("image,label,source,round\na.png,ok,human,x\n", "line 2: field 'round' must be an integer"),
    ("image,label,source,round\na.png,ok,human,0\na.png,defect,human,0\n", "line 3: .* listed again with label"),
    ("image,source\na.png,human\n", "missing column"),
])
def test_manifest_errors_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_manifest(path)


def test_jsonl_manifest_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"image": "/a.png", "label": "ok"}) + "\n{oops\n")
    with pytest.raises(DatasetError, match="m.jsonl, line 2: not valid JSON"):
        read_manifest(path)


def test_manifest_hash_ignores_order_but_not_content():
    a = LabeledImage("/x/1.png", "ok")
    b = LabeledImage("/x/2.png", "defect", "human", 1)
    assert manifest_hash([a, b]) == manifest_hash([b, a])
    assert manifest_hash([a, b]) != manifest_hash([a, LabeledImage("/x/2.png", "ok", "human", 1)])


def test_load_images_fails_on_a_bad_file_or_skips_and_lists_it(tmp_path):
    from mlproject.data.decode import BadImageError

    good = png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    missing = tmp_path / "missing.png"
    records = [LabeledImage(str(good), "ok"), LabeledImage(str(bad), "defect"), LabeledImage(str(missing), "ok")]
    with pytest.raises(BadImageError, match="bad.png"):
        load_images(records, 16, progress=False)
    images, loaded, skipped = load_images(records, 16, skip_bad=True, progress=False)
    assert images.shape == (1, 16, 16, 3) and loaded == records[:1]
    assert [s.path for s in skipped] == [str(bad), str(missing)]
    assert all(s.reason for s in skipped)
