"""The Spark-free parts of ``score``: which paths an input names, the model version it pins, how the
work is split, the executors' file reader and the summary (no Spark session here)."""

import io
import json

import pandas as pd
import pytest

from mlproject.serving.spark_inputs import (
    READ_ERROR,
    Listing,
    ScoreSummary,
    ScoringInputError,
    folder_images,
    input_kind,
    manifest_images,
    parquet_path_column,
    partition_count,
    read_error,
    read_image_bytes,
    registry_reference,
    write_path_list,
)
from mlproject.serving.spark_scoring import ScoreSettings


def touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_folder_is_listed_recursively_by_image_extension_and_the_rest_is_counted(tmp_path):
    for name in ("b.png", "a.PNG", "sub/c.jpg", "sub/deeper/d.TIFF", "notes.txt", ".hidden.png", ".cache/e.png"):
        touch(tmp_path / name)
    listing = Listing()
    found = list(folder_images(tmp_path, listing))
    assert found == [str(tmp_path / n) for n in ("a.PNG", "b.png", "sub/c.jpg", "sub/deeper/d.TIFF")]
    assert listing.skipped == 1 and listing.skipped_examples == [str(tmp_path / "notes.txt")]


def test_a_manifest_gives_its_image_column_resolved_like_read_manifest(tmp_path):
    manifest = tmp_path / "m" / "list.csv"
    manifest.parent.mkdir()
    manifest.write_text("image,label\nimgs/a.png,ok\n/abs/b.png,\nhttp://host/c.png,defect\n")
    assert list(manifest_images(manifest)) == [str(tmp_path / "m" / "imgs" / "a.png"), "/abs/b.png",
                                               "http://host/c.png"]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"image": "x.png"}) + "\n\n" + json.dumps({"image": "/y.png", "label": "ok"}) + "\n")
    assert list(manifest_images(jsonl)) == [str(tmp_path / "x.png"), "/y.png"]


@pytest.mark.parametrize("name,text,message", [
    ("no-column.csv", "path,label\na.png,ok\n", "no 'image' column"),
    ("empty.csv", "image,label\na.png,ok\n,ok\n", "line 3: field 'image' is empty"),
    ("bad.jsonl", '{"image": "a.png"}\nnot json\n', "line 2: not valid JSON"),
    ("list.jsonl", '["a.png"]\n', "line 1: expected a JSON object"),
])
def test_a_bad_manifest_names_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ScoringInputError, match=message) as raised:
        list(manifest_images(path))
    assert str(path) in str(raised.value)


def test_the_input_kind_follows_the_path_and_says_what_is_accepted_otherwise(tmp_path):
    touch(tmp_path / "images" / "a.png")
    touch(tmp_path / "table" / "part-0.parquet")
    touch(tmp_path / "table" / "_SUCCESS")
    assert input_kind(tmp_path / "images") == "folder"
    assert input_kind(tmp_path / "table") == "parquet"
    assert input_kind(touch(tmp_path / "one.parquet")) == "parquet"
    assert input_kind(touch(tmp_path / "m.JSONL")) == "manifest"
    with pytest.raises(ScoringInputError, match="cannot score this file; give a folder of images"):
        input_kind(touch(tmp_path / "archive.zip"))
    with pytest.raises(ScoringInputError, match="no such file or folder"):
        input_kind(tmp_path / "missing")


def test_the_path_list_streams_one_path_a_line_and_refuses_line_breaks(tmp_path):
    touch(tmp_path / "a.png")
    touch(tmp_path / "b.bmp")
    out = io.StringIO()
    assert write_path_list(tmp_path, "folder", out).n_paths == 2
    assert out.getvalue() == f"{tmp_path / 'a.png'}\n{tmp_path / 'b.bmp'}\n"
    touch(tmp_path / "odd\nname.png")
    with pytest.raises(ScoringInputError, match="line break; rename the file"):
        write_path_list(tmp_path, "folder", io.StringIO())


def test_a_parquet_input_takes_path_then_image():
    assert parquet_path_column(["id", "image", "path"]) == "path"
    assert parquet_path_column(["image"]) == "image"
    with pytest.raises(ScoringInputError, match="no column 'path' or 'image' \\(columns: id, file\\)"):
        parquet_path_column(["id", "file"])


@pytest.mark.parametrize("uri,expected", [
    ("models:/alloop-defect-classifier@champion", ("alloop-defect-classifier", "champion")),
    ("models:/m/12", ("m", "12")),
    ("models:/m/latest", None),
    ("runs:/abc/model", None),
    ("/tmp/model", None),
])
def test_registry_references_are_recognised(uri, expected):
    assert registry_reference(uri) == expected


@pytest.mark.parametrize("n,parallelism,batch,expected", [
    (0, 2, 64, 1),        # nothing to split
    (10, 4, 64, 4),       # every core gets a task, even with less than a batch each
    (3, 4, 64, 3),        # but never an empty one
    (640, 2, 64, 8),      # up to four waves per core
    (200, 2, 64, 4),      # two batches a core: two waves
    (400, 2, 64, 8),      # whole waves: 7 tasks would leave a core idle in the last one
    (10_000, 16, 64, 64),
])
def test_partition_count(n, parallelism, batch, expected):
    assert partition_count(n, parallelism, batch) == expected


def test_the_reader_gives_bytes_or_null_and_an_error_naming_the_file(tmp_path):
    good = touch(tmp_path / "a b.png", b"\x89PNG")
    paths = pd.Series([str(good), f"file://{tmp_path}/a%20b.png", f"file:{good}", str(tmp_path / "gone.png"),
                       str(tmp_path), "s3://bucket/x.png", "file://elsewhere/x.png"])
    frame = read_image_bytes(paths)
    assert list(frame.columns) == ["image", "source", "read_error"]
    assert frame["source"].tolist() == paths.tolist()
    assert frame["image"].tolist()[:3] == [b"\x89PNG"] * 3
    assert frame["read_error"].isna().tolist() == [True] * 3 + [False] * 4
    assert frame["image"].tolist()[3:] == [None] * 4
    errors = frame["read_error"].tolist()[3:]
    assert errors[0] == read_error(str(tmp_path / "gone.png"), "No such file or directory")
    assert errors[1] == read_error(str(tmp_path), "Is a directory")
    assert "not a local file" in errors[2] and "another host (elsewhere)" in errors[3]
    assert all(e.startswith(f"{READ_ERROR} '") for e in errors)


def summary(**overrides):
    values = dict(n_images=10, label_counts={"ok": 6, "defect": 1}, unreadable=1, undecodable=2, wall_seconds=20.0,
                  scoring_seconds=5.0, model_uri="models:/m@champion", model_version="m/3", master="local[2]",
                  batch_size=64, partitions=2, parquet="/o/scores.parquet", csv="/o/scores.csv")
    return ScoreSummary(**{**values, **overrides})


def test_the_summary_counts_and_rates():
    done = summary()
    assert done.scored == 7 and done.images_per_s == 2.0
    assert done.metrics() == {"n_images": 10.0, "scored_images": 7.0, "unreadable_files": 1.0,
                              "undecodable_images": 2.0, "skipped_files": 0.0, "images_per_s": 2.0,
                              "wall_seconds": 20.0, "scoring_seconds": 5.0, "label_ok": 6.0, "label_defect": 1.0}
    assert done.params() == {"spark_master": "local[2]", "scored_model_version": "m/3", "partitions": "2"}
    text = "\n".join(done.lines())
    assert "scored 10 images with m/3 on local[2]: defect 1, ok 6" in text
    assert "unreadable files 1, undecodable images 2" in text and "CSV: /o/scores.csv" in text
    assert summary(scoring_seconds=0.0).images_per_s == 0.0
    assert summary(label_counts={"bad label!": 1}).metrics()["label_bad label_"] == 1.0
    assert "not images by extension" in "\n".join(summary(skipped_files=3).lines())


def test_the_batch_size_must_be_positive(tmp_path):
    with pytest.raises(ScoringInputError, match="batch_size must be at least 1"):
        ScoreSettings(images=tmp_path, output=tmp_path, batch_size=0)
