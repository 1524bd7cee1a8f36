"""The backbone feature cache: what its key depends on, and which cache files it trusts."""

import os

import numpy as np
import pytest

from mlproject.data.records import LabeledImage
from mlproject.loop import feature_cache
from mlproject.loop.feature_cache import (
    FEATURE_CACHE_VERSION,
    _read_cache,
    backbone_features,
    default_cache_dir,
    feature_cache_key,
    weights_identity,
)

KEY_ARGS = dict(manifest_hash="abc", weights="imagenet", image_size=64, pooling="avg",
                feature_layers=("block5_pool",), skip_bad_images=False)


def key(**changes):
    args = {**KEY_ARGS, **changes}
    return feature_cache_key(args["manifest_hash"], args["weights"], args["image_size"], args["pooling"],
                             args["feature_layers"], args["skip_bad_images"])


def write_cache(path, key_value, paths, features, bad=()):
    np.savez(path, key=np.array(key_value), features=np.asarray(features, np.float32),
             paths=np.array(paths, dtype=str), bad_paths=np.array([b for b, _ in bad], dtype=str),
             bad_reasons=np.array([r for _, r in bad], dtype=str), info=np.array("{}"))


def test_the_key_is_stable_and_changes_with_everything_the_features_depend_on():
    assert key() == key() and len(key()) == 24
    changed = [key(manifest_hash="other"), key(weights="none"), key(image_size=96), key(pooling="max"),
               key(feature_layers=("block4_pool",)), key(feature_layers=("block4_pool", "block5_pool")),
               key(skip_bad_images=True)]
    assert len({key(), *changed}) == len(changed) + 1


def test_a_new_cache_version_invalidates_old_keys(monkeypatch):
    before = key()
    monkeypatch.setattr(feature_cache, "FEATURE_CACHE_VERSION", FEATURE_CACHE_VERSION + 1)
    assert key() != before


def test_a_weights_file_is_identified_by_its_content_stamp(tmp_path):
    assert weights_identity("imagenet") == "imagenet" and weights_identity("none") == "none"
    assert weights_identity(str(tmp_path / "missing.h5")) == f"file:{tmp_path / 'missing.h5'}"
    weights = tmp_path / "vgg.h5"
    weights.write_bytes(b"1234")
    first = weights_identity(str(weights))
    assert first.startswith(f"file:{weights.resolve()}:4:")
    weights.write_bytes(b"123456")  # replaced: other size (and time)
    os.utime(weights, ns=(1, 1))
    assert weights_identity(str(weights)) != first


def test_the_default_folder_follows_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOOP_STATE_DIR", str(tmp_path / "state"))
    assert default_cache_dir() == (tmp_path / "state" / "features").resolve()


def test_a_matching_cache_file_is_read_back_in_its_row_order(tmp_path):
    records = [LabeledImage(str(tmp_path / f"{n}.png"), "ok") for n in range(3)]
    path = tmp_path / "features.npz"
    write_cache(path, "k", [records[2].path, records[0].path], [[1, 2], [3, 4]], bad=[(records[1].path, "broken")])
    features, kept, bad = _read_cache(path, records, "k")
    assert features.dtype == np.float32 and features.tolist() == [[1, 2], [3, 4]]
    assert kept == [records[2], records[0]]
    assert [(b.path, b.reason) for b in bad] == [(records[1].path, "broken")]


def test_an_unusable_cache_file_is_ignored_so_the_features_are_recomputed(tmp_path):
    records = [LabeledImage(str(tmp_path / f"{n}.png"), "ok") for n in range(2)]
    assert _read_cache(tmp_path / "absent.npz", records, "k") is None
    other_key = tmp_path / "other.npz"
    write_cache(other_key, "other", [r.path for r in records], [[1], [2]])
    assert _read_cache(other_key, records, "k") is None
    foreign = tmp_path / "foreign.npz"
    write_cache(foreign, "k", [records[0].path, str(tmp_path / "not-in-the-dataset.png")], [[1], [2]])
    assert _read_cache(foreign, records, "k") is None
    short = tmp_path / "short.npz"
    write_cache(short, "k", [r.path for r in records], [[1]])
    assert _read_cache(short, records, "k") is None
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    assert _read_cache(truncated, records, "k") is None


def test_a_cache_hit_returns_the_stored_features_without_a_backbone(tmp_path, monkeypatch):
    records = [LabeledImage(str(tmp_path / f"{n}.png"), "ok") for n in range(2)]
    args = dict(weights="none", image_size=32, pooling="avg", feature_layers=("block1_pool",), manifest_hash="m",
                cache_dir=tmp_path, progress=False)
    cache_key = feature_cache_key("m", "none", 32, "avg", ("block1_pool",), False)
    write_cache(tmp_path / f"features-{cache_key}.npz", cache_key, [r.path for r in records], [[1.0], [2.0]])
    hit = backbone_features(records, **args)
    assert hit.from_cache and hit.key == cache_key and hit.features.tolist() == [[1.0], [2.0]]
    assert hit.records == records and hit.info["feature_layers"] == "block1_pool"

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was built")

    monkeypatch.setattr("mlproject.models.variants.build_feature_extractor", no_backbone)
    backbone_features(records, **args)  # a hit again: no backbone
    with pytest.raises(AssertionError, match="backbone was built"):
        backbone_features(records, rebuild=True, **args)
