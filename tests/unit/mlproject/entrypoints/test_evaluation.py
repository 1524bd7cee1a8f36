"""What the evaluate and promote entry points score: the data options, the split, and no machine labels."""

import argparse

import pytest

from mlproject.data.loaders import write_manifest
from mlproject.data.records import LabeledImage
from mlproject.data.split import stratified_split
from mlproject.entrypoints._evaluation import _without_path, add_eval_data_arguments, select_records


def parser(default_split="test"):
    parser = argparse.ArgumentParser()
    add_eval_data_arguments(parser, default_split=default_split)
    return parser


def manifest(tmp_path):
    records = [LabeledImage(str(tmp_path / f"ok{i}.png"), "ok") for i in range(10)]
    records += [LabeledImage(str(tmp_path / f"defect{i}.png"), "defect") for i in range(10)]
    records += [LabeledImage(str(tmp_path / f"auto{i}.png"), "ok" if i % 2 else "defect", "auto", 1)
                for i in range(6)]
    return write_manifest(tmp_path / "labels.csv", records), records


def test_the_split_option_defaults_per_entry_point_and_takes_only_known_splits():
    assert parser().parse_args([]).split == "test"
    assert parser("all").parse_args([]).split == "all"
    with pytest.raises(SystemExit):
        parser().parse_args(["--split", "holdout"])


def test_machine_labels_are_never_ground_truth(tmp_path):
    path, records = manifest(tmp_path)
    data, chosen = select_records(parser().parse_args(["--data", str(path), "--split", "all"]))
    assert data == str(path)
    assert len(chosen) == 20 and all(r.source != "auto" for r in chosen)


def test_a_split_is_the_one_training_made_with_the_same_seed(tmp_path):
    path, records = manifest(tmp_path)
    args = parser().parse_args(["--data", str(path), "--split-seed", "3"])
    _, chosen = select_records(args)
    human = [r for r in records if r.source != "auto"]
    expected = stratified_split(human, seed=3, val_fraction=0.15, test_fraction=0.2).test
    assert [r.path for r in chosen] == [r.path for r in expected] and len(chosen) == 4


def test_a_scoring_error_loses_its_leading_path_only():
    assert _without_path("/d/a.png: cannot decode", "/d/a.png") == "cannot decode"
    assert _without_path("cannot read /d/a.png: gone", "/d/a.png") == "cannot read /d/a.png: gone"
