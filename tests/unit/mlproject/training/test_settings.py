"""Typed settings of the training entry points: what the parsers accept maps onto them, field by field."""

import argparse

import pytest

from mlproject.entrypoints import finetune, frozen, svm
from mlproject.training import common
from mlproject.training.keras_run import resolve_precision


@pytest.mark.parametrize("module", [svm, frozen, finetune], ids=["svm", "frozen", "finetune"])
def test_every_data_and_registration_field_is_an_option_of_each_entry_point(module):
    args = module.build_parser().parse_args(["--data", "/some/folder", "--val-fraction", "0.25", "--round", "3",
                                             "--registered-model-name", "m", "--image-size", "96"])
    data = common.DataSettings.from_args(args)
    registration = common.RegistrationSettings.from_args(args)
    assert (data.data, data.val_fraction, data.image_size) == ("/some/folder", 0.25, 96)
    assert (registration.round, registration.registered_model_name) == (3, "m")
    # the data group of the parser and the dataclass name the same things
    parser = argparse.ArgumentParser()
    common.add_data_arguments(parser)
    data_options = {a.dest for a in parser._actions if a.dest != "help"}
    assert data_options | {"image_size"} == {f for f in common.DataSettings.__dataclass_fields__}


def test_settings_defaults_are_the_parsers_defaults():
    args = finetune.build_parser().parse_args([])
    assert common.DataSettings.from_args(args) == common.DataSettings()
    assert common.RegistrationSettings.from_args(args) == common.RegistrationSettings()


def test_precision_auto_follows_the_cpu_and_a_given_one_is_kept(tmp_path):
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("flags\t\t: fpu sse avx2\n")
    assert resolve_precision("auto", with_bf16) == ("bfloat16", "auto: the CPU has avx512_bf16")
    assert resolve_precision("auto", without)[0] == "float32"
    assert resolve_precision("auto", tmp_path / "missing")[0] == "float32"
    assert resolve_precision("float32", with_bf16) == ("float32", "given")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", with_bf16)


@pytest.mark.parametrize("module", [svm, frozen, finetune], ids=["svm", "frozen", "finetune"])
def test_the_logged_feature_layers_parse_back_as_retraining_passes_them(module):
    # MLflow logs str(value); alloop sync's retraining passes that text back as -P feature_layers=...
    logged = str(module.build_parser().parse_args([]).feature_layers)
    again = module.build_parser().parse_args(["--feature-layers", logged])
    assert common.feature_layers(again.feature_layers) == ("block3_pool", "block4_pool", "block5_pool")


@pytest.mark.parametrize("module", [frozen, finetune], ids=["frozen", "finetune"])
def test_the_head_is_searched_by_default_cross_validated(module):
    from mlproject.training.head_search import AUTO
    from mlproject.training.keras_run import head_search_settings

    searched = head_search_settings(module.build_parser().parse_args([]))
    assert (searched.lr_head, searched.dropout, searched.dense_units) == (AUTO, AUTO, AUTO)
    assert searched.needs_search and searched.search_data == "train+val_cv"
    given = head_search_settings(module.build_parser().parse_args(
        ["--lr-head", "0.001", "--dropout", "0.5", "--dense-units", "256"]))
    assert not given.needs_search and given.dense_units == 256
