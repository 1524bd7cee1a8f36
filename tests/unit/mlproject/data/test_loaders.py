"""Dataset layouts, the labels manifest and load_images, on tiny fixtures made in tmp_path."""

import argparse
import json
import logging
import os
import pickle
import random

import numpy as np
import pytest
from PIL import Image

from mlproject.data.decode import BadImageError
from mlproject.data.images import BadFile, BadImagesError, load_images
from mlproject.data.loaders import (
    DatasetError,
    detect_layout,
    label_counts,
    load_dagm,
    load_dagm_dev,
    load_dataset,
    load_folders,
    manifest_hash,
    read_manifest,
    source_counts,
    write_manifest,
)
from mlproject.data.records import DEFECT, OK, LabeledImage


def png(path, value=100, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8), "L").save(path)
    return path


def dagm_split(split_dir, rows):
    """rows: (image name, defective); writes images, masks and Labels.txt as the real DAGM files are."""
    (split_dir / "Label").mkdir(parents=True, exist_ok=True)
    lines = ["1"]
    for number, (name, defective) in enumerate(rows, start=1):
        png(split_dir / name)
        if defective:
            mask = name.replace(".PNG", "_label.PNG")
            png(split_dir / "Label" / mask, 255)
            lines.append(f"{number:04d}\t1\t{name}\t0\t{mask}")
        else:
            lines.append(f"{number:04d}\t0\t{name}\t0\t0\t")  # the real file has a trailing tab here
    (split_dir / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return split_dir / "Label" / "Labels.txt"


# --- DAGM 2007 -------------------------------------------------------------------------------------

def test_dagm_reads_both_splits_with_labels_masks_and_absolute_paths(tmp_path):
    dagm_split(tmp_path / "Class1" / "Train", [("0001.PNG", False), ("0002.PNG", True)])
    dagm_split(tmp_path / "Class1" / "Test", [("0001.PNG", True)])
    records = load_dagm(tmp_path, "Class1")
    assert [(os.path.basename(os.path.dirname(r.path)), r.label) for r in records] == [
        ("Train", OK), ("Train", DEFECT), ("Test", DEFECT)]
    assert records[0].mask_path is None
    assert records[1].mask_path == str((tmp_path / "Class1/Train/Label/0002_label.PNG").resolve())
    assert all(os.path.isabs(r.path) and r.source == "import" and r.round == 0 for r in records)


def test_dagm_root_may_be_the_class_or_a_split_folder_and_splits_can_be_chosen(tmp_path):
    dagm_split(tmp_path / "Class2" / "Train", [("0001.PNG", False)])
    dagm_split(tmp_path / "Class2" / "Test", [("0001.PNG", True), ("0002.PNG", False)])
    whole = load_dagm(tmp_path, pattern="Class2")
    assert len(whole) == 3
    assert load_dagm(tmp_path / "Class2") == whole
    assert load_dagm(tmp_path / "Class2" / "Test") == whole[1:]
    assert load_dagm(tmp_path, pattern="Class2", splits=("Test",)) == whole[1:]
    assert detect_layout(tmp_path, pattern="Class2") == "dagm"
    assert detect_layout(tmp_path / "Class2" / "Test") == "dagm"
    assert load_dataset(tmp_path, pattern="Class2") == whole


def test_dagm_only_existing_splits_are_read_and_none_is_an_error(tmp_path):
    dagm_split(tmp_path / "Class1" / "Test", [("0001.PNG", False)])
    assert len(load_dagm(tmp_path)) == 1  # no Train folder: fine
    with pytest.raises(DatasetError, match="no DAGM 2007 split folder"):
        load_dagm(tmp_path, pattern="Class1", splits=("Train",))
    (tmp_path / "Class1" / "Train").mkdir()
    with pytest.raises(DatasetError, match=r"Train: no Label/Labels.txt"):
        load_dagm(tmp_path)  # a split folder without labels is not skipped silently


@pytest.mark.parametrize("row", [
    "0001\tx\t0001.PNG\t0\t0",   # flag is not 0/1
    "0001\t0",                   # too few fields
    "one\t0\t0001.PNG\t0\t0",    # id is not a number
    "0001 0 0001.PNG 0 0",       # spaces, not tabs
])
def test_dagm_malformed_row_names_file_and_line(tmp_path, row):
    labels = dagm_split(tmp_path / "Class1" / "Train", [("0001.PNG", False)])
    labels.write_text(f"1\n\n{row}\n")
    with pytest.raises(DatasetError, match=r"Labels.txt, line 3: expected"):
        load_dagm(tmp_path)


def test_dagm_missing_image_mask_duplicate_and_unlisted_images_are_errors(tmp_path):
    labels = dagm_split(tmp_path / "Class1" / "Train", [("0001.PNG", False)])
    labels.write_text("1\n0001\t0\t0001.PNG\t0\t0\n0002\t0\t0002.PNG\t0\t0\n")
    with pytest.raises(DatasetError, match=r"Labels.txt, line 3: image 0002.PNG does not exist"):
        load_dagm(tmp_path)
    labels.write_text("1\n0001\t1\t0001.PNG\t0\t0001_label.PNG\n")
    with pytest.raises(DatasetError, match=r"Labels.txt, line 2: mask 0001_label.PNG does not exist"):
        load_dagm(tmp_path)
    labels.write_text("1\n0001\t0\t0001.PNG\t0\t0\n0002\t0\t0001.PNG\t0\t0\n")
    with pytest.raises(DatasetError, match=r"line 3: 0001.PNG is already listed on line 2"):
        load_dagm(tmp_path)
    labels.write_text("1\n")
    png(tmp_path / "Class1" / "Train" / "0099.png")
    with pytest.raises(DatasetError, match=r"2 image\(s\) are not in .*Labels.txt: 0001.PNG, 0099.png"):
        load_dagm(tmp_path)  # images on disk no label mentions are never dropped silently


def test_dagm_defect_without_mask_is_allowed(tmp_path):
    labels = dagm_split(tmp_path / "Class1" / "Test", [("0001.PNG", False)])
    labels.write_text("1\r\n0001\t1\t0001.PNG\t0\t0\r\n")  # Windows line endings too
    [record] = load_dagm(tmp_path)
    assert record.label == DEFECT and record.mask_path is None


# --- development layout and folders ----------------------------------------------------------------

def test_development_layout_with_mixed_case_extensions_and_optional_masks(tmp_path):
    png(tmp_path / "Class1" / "a.png")
    png(tmp_path / "Class1" / "b.PNG")
    png(tmp_path / "Class1" / "c.JpEg")
    png(tmp_path / "Class1_def" / "d.bmp")
    png(tmp_path / "Class1_def" / "e.TIFF")
    png(tmp_path / "Class1_def" / "e_label.png", 255)  # a mask, not a sixth image
    (tmp_path / "Class1_def" / "labels.txt").write_text("ellipse parameters")
    assert detect_layout(tmp_path) == "dagm-dev"
    records = load_dataset(tmp_path, pattern="Class1")
    assert label_counts(records) == {DEFECT: 2, OK: 3}
    masks = {os.path.basename(r.path): r.mask_path for r in records if r.label == DEFECT}
    assert masks["d.bmp"] is None
    assert masks["e.TIFF"] == str((tmp_path / "Class1_def" / "e_label.png").resolve())
    assert records == load_dagm_dev(tmp_path)


def test_development_layout_needs_both_folders(tmp_path):
    png(tmp_path / "Class3" / "a.png")
    with pytest.raises(DatasetError, match="needs both Class3/ and Class3_def/"):
        load_dagm_dev(tmp_path, pattern="Class3")


def test_folder_per_label_warns_about_non_images(tmp_path, caplog):
    png(tmp_path / "good" / "1.png")
    png(tmp_path / "good" / "2.TIF")
    png(tmp_path / "scratch" / "3.jpg")
    (tmp_path / "scratch" / "notes.txt").write_text("not an image")
    (tmp_path / "loose.png").write_bytes(b"")  # files next to the label folders are not labelled
    assert detect_layout(tmp_path) == "folders"
    with caplog.at_level(logging.WARNING, logger="mlproject.data.loaders"):
        records = load_folders(tmp_path)
    assert label_counts(records) == {"good": 2, "scratch": 1}
    assert "notes.txt" in caplog.text and "scratch" in caplog.text
    assert all(os.path.isabs(r.path) for r in records)


def test_folders_without_images_is_an_error(tmp_path):
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="no <label>/ folders with images"):
        load_folders(tmp_path)


def test_unknown_layout_says_which_layouts_are_supported(tmp_path):
    (tmp_path / "empty").mkdir()
    for call in (lambda: detect_layout(tmp_path), lambda: load_dataset(tmp_path),
                 lambda: load_dataset(tmp_path / "missing")):
        with pytest.raises(DatasetError, match="Supported: dagm .*dagm-dev .*folders .*manifest"):
            call()
    with pytest.raises(DatasetError, match="layout must be auto or one of"):
        load_dataset(tmp_path, layout="coco")


# --- the manifest ----------------------------------------------------------------------------------

def sample_records(tmp_path):
    return [LabeledImage(str(tmp_path / "img" / "a.png"), DEFECT, "human", 2),
            LabeledImage("/data/upload/1/b.png", OK, "auto", 3),
            LabeledImage("http://host/c,with comma.png", OK, "import", 0)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_round_trip(tmp_path, suffix):
    records = sample_records(tmp_path)
    path = write_manifest(tmp_path / "out" / f"labels{suffix}", records)
    assert read_manifest(path) == records
    assert detect_layout(path) == "manifest"
    assert load_dataset(path) == records
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_manifest_files_have_the_documented_columns(tmp_path):
    records = sample_records(tmp_path)[:1]
    csv_path = write_manifest(tmp_path / "m.csv", records)
    assert csv_path.read_text().splitlines() == ["image,label,source,round", f"{records[0].path},defect,human,2"]
    jsonl_path = write_manifest(tmp_path / "m.jsonl", records)
    assert json.loads(jsonl_path.read_text()) == {"image": records[0].path, "label": "defect",
                                                  "source": "human", "round": 2}


def test_manifest_writes_paths_as_given_and_resolves_relative_ones_on_read(tmp_path):
    png(tmp_path / "img" / "a.png")
    path = write_manifest(tmp_path / "m.jsonl", [LabeledImage("img/a.png", OK)])
    assert json.loads(path.read_text())["image"] == "img/a.png"
    assert read_manifest(path)[0].path == str((tmp_path / "img" / "a.png").resolve())
    (tmp_path / "defaults.csv").write_text("image,label\nimg/a.png,ok\n")
    assert read_manifest(tmp_path / "defaults.csv") == [
        LabeledImage(str((tmp_path / "img" / "a.png").resolve()), OK, "import", 0)]


@pytest.mark.parametrize("content,message", [
    ("image,label,source,round\na.png,,human,0\n", r"m.csv, line 2: field 'label' is empty"),
    ("image,label,source,round\n,ok,human,0\n", r"m.csv, line 2: field 'image' is empty"),
    ("image,label,source,round\na.png,ok,robot,0\n", r"m.csv, line 2: field 'source' must be one of"),
    ("image,label,source,round\na.png,ok,human,0\nb.png,ok,human,x\n", r"m.csv, line 3: field 'round' must be an integer"),
    ("image,label,source,round\na.png,ok,human,0\na.png,defect,human,0\n",
     r"m.csv, line 3: .*a.png is listed again with label 'defect' \(line 2 says 'ok'\)"),
    ("image,label,source,round\na.png,ok,human,0\na.png,ok,human,0\n", r"line 3: .*listed twice"),
    ("image,source\na.png,human\n", r"m.csv: missing column\(s\) label"),
    ("image,label,source,round\n", "no rows"),
])
def test_manifest_csv_errors_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_manifest(path)


@pytest.mark.parametrize("line,message", [
    ("{oops", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"image": "/b.png", "label": "ok", "round": 1.5}), "field 'round' must be an integer"),
    (json.dumps({"image": "/b.png", "label": "ok", "source": "robot"}), "field 'source'"),
])
def test_manifest_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"image": "/a.png", "label": "ok"}) + "\n" + line + "\n")
    with pytest.raises(DatasetError, match=f"m.jsonl, line 2: {message}"):
        read_manifest(path)


def test_manifest_needs_a_known_extension_and_an_existing_file(tmp_path):
    with pytest.raises(DatasetError, match="must end in .csv or .jsonl"):
        write_manifest(tmp_path / "m.txt", [])
    with pytest.raises(DatasetError, match="manifest file does not exist"):
        read_manifest(tmp_path / "missing.csv")


def test_manifest_hash_is_order_independent_and_content_sensitive(tmp_path):
    records = sample_records(tmp_path)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    digest = manifest_hash(records)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert manifest_hash(shuffled) == manifest_hash(records[::-1]) == digest
    changed = [LabeledImage(r.path, r.label, r.source, r.round + 1) for r in records]
    assert manifest_hash(changed) != digest
    relabelled = [LabeledImage(r.path, OK, r.source, r.round) for r in records]
    assert manifest_hash(relabelled) != digest
    assert manifest_hash(records[:2]) != digest


def test_counts():
    records = [LabeledImage("/a", OK), LabeledImage("/b", DEFECT, "human"), LabeledImage("/c", OK, "auto", 1)]
    assert label_counts(records) == {DEFECT: 1, OK: 2}
    assert source_counts(records) == {"auto": 1, "human": 1, "import": 1}
    assert label_counts([]) == {}


# --- load_images ------------------------------------------------------------------------------------

def test_load_images_returns_uint8_not_preprocessed_and_reads_file_uris(tmp_path):
    a = png(tmp_path / "a b.png", value=40, size=12)
    records = [LabeledImage(str(a), OK), LabeledImage(a.as_uri(), DEFECT)]  # file:///.../a%20b.png
    images, loaded, bad = load_images(records, 16, progress=False)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    assert (images == 40).all()
    assert loaded == records and bad == []


def test_load_images_fails_on_a_bad_file_or_skips_counts_and_lists_it(tmp_path):
    good = png(tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:30])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is a text file named .png")
    missing = tmp_path / "missing.png"
    records = [LabeledImage(str(p), OK) for p in (good, truncated, empty, text, missing)]
    for bad_record in records[1:]:
        with pytest.raises(BadImageError, match=os.path.basename(bad_record.path)) as raised:
            load_images([records[0], bad_record], 16, progress=False)
        assert raised.value.source == bad_record.path
    images, loaded, bad = load_images(records, 16, skip_bad=True, progress=False)
    assert images.shape == (1, 16, 16, 3) and loaded == records[:1]
    assert len(bad) == 4 and all(isinstance(b, BadFile) and b.reason for b in bad)
    assert [b.path for b in bad] == [str(p) for p in (truncated, empty, text, missing)]
    assert "empty" in bad[1].reason and "cannot read" in bad[3].reason


def test_load_images_of_only_bad_files_is_empty(tmp_path):
    records = [LabeledImage("http://example.invalid/x.png", OK)]
    images, loaded, bad = load_images(records, 8, skip_bad=True, progress=False)
    assert images.shape == (0, 8, 8, 3) and images.dtype == np.uint8 and loaded == []
    assert "not a local file" in bad[0].reason


def test_load_images_without_skipping_names_every_bad_file_and_the_count(tmp_path):
    good = png(tmp_path / "good.png")
    bad_paths = []
    for number in range(25):
        bad = tmp_path / f"broken{number:02d}.png"
        bad.write_bytes(good.read_bytes()[: 20 + number])  # truncated at different points
        bad_paths.append(str(bad))
    records = [LabeledImage(str(good), OK)] + [LabeledImage(p, DEFECT) for p in bad_paths]
    with pytest.raises(BadImageError) as raised:  # still a BadImageError: existing callers catch it
        load_images(records, 8, progress=False)
    error = raised.value
    assert isinstance(error, BadImagesError)
    assert [b.path for b in error.bad_files] == bad_paths and all(b.reason for b in error.bad_files)
    assert error.source == bad_paths[0]
    message = str(error)
    assert message.startswith("25 images cannot be read (the first 20 listed):")
    assert all(f"{p}: " in message for p in bad_paths[:20])
    assert not any(p in message for p in bad_paths[20:]) and "... and 5 more" in message
    assert "skip-bad-images" not in message and "skip_bad_images" not in message  # the caller adds a remedy
    copy = pickle.loads(pickle.dumps(BadImagesError(error.bad_files, hint="Fix them.")))
    assert copy.bad_files == error.bad_files and str(copy).endswith("\nFix them.")


def test_a_training_run_names_the_bad_files_of_every_split_and_says_how_to_skip_them(tmp_path):
    from mlproject.training import common

    for label in (OK, DEFECT):
        for number in range(10):
            png(tmp_path / label / f"{label}{number}.png", value=10 * number)
    broken = sorted(tmp_path.glob("*/*3.png")) + sorted(tmp_path.glob("*/*7.png"))  # 4 files, in several splits
    for path in broken:
        path.write_bytes(b"not a png")
    parser = argparse.ArgumentParser()
    common.add_training_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path), "--weights", "none", "--image-size", "32"])
    with pytest.raises(BadImagesError) as raised:
        common.prepare_data(common.DataSettings.from_args(args))
    split = common.stratified_split(common.load_dataset(str(tmp_path)), seed=0, val_fraction=0.15, test_fraction=0.2)
    broken_splits = {name for name in ("train", "val", "test")
                     for r in getattr(split, name) if r.path in {str(p.resolve()) for p in broken}}
    assert len(broken_splits) >= 2  # the fixture really spreads them over splits
    assert sorted(b.path for b in raised.value.bad_files) == sorted(str(p.resolve()) for p in broken)
    message = str(raised.value)
    assert message.startswith("4 images cannot be read:")
    # The way entry points are run first (mlflow run -P), the module's own flag second.
    assert "-P skip_bad_images=true" in message and "--skip-bad-images true" in message
    assert message.index("-P skip_bad_images=true") < message.index("--skip-bad-images true")

    args.skip_bad_images = True
    prepared = common.prepare_data(common.DataSettings.from_args(args))
    assert sorted(b.path for b in prepared.bad_files) == sorted(str(p.resolve()) for p in broken)
    assert sum(len(prepared.kept[name]) for name in ("train", "val", "test")) == 16


def test_the_simulation_feature_pass_names_the_bad_files_of_every_chunk(tmp_path):
    from mlproject.loop.feature_cache import backbone_features

    records = []
    for number in range(6):
        path = png(tmp_path / f"img{number}.png", value=20 * number, size=32)
        if number in (1, 4):  # in the first and the last chunk of two
            path.write_bytes(b"not a png")
        records.append(LabeledImage(str(path), OK if number % 2 else DEFECT))
    options = dict(weights="none", image_size=32, pooling="avg", feature_layers=("block1_pool",),
                   manifest_hash="test", cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    with pytest.raises(BadImagesError) as raised:
        backbone_features(records, **options)
    assert [b.path for b in raised.value.bad_files] == [records[1].path, records[4].path]
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing cached from a failed pass
    skipped = backbone_features(records, skip_bad_images=True, **options)
    assert [b.path for b in skipped.bad_files] == [records[1].path, records[4].path]
    assert skipped.features.shape[0] == 4
