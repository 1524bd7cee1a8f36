"""One simulation run: what is refused before any feature pass, and how the summary becomes metrics."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlproject.data.loaders import DatasetError
from mlproject.loop import simulation_run
from mlproject.loop.feature_cache import FeatureSet
from mlproject.loop.policy import PolicyConfig
from mlproject.loop.simulate import SimulationConfig
from mlproject.loop.simulation_run import (
    SimulationRun,
    binary_class_names,
    curve_metrics,
    format_summary,
    run_simulation,
    summary_metrics,
)


def summary():
    return pd.DataFrame([
        {"strategy": "random", "auto_labels": False, "labels_to_target": 40.0, "labels_to_target_per_seed": "40 40",
         "seeds_reaching_target": 2, "auto_labels_made": 0, "auto_label_precision": math.nan,
         "ratio_to_random": 1.0, "share_of_pool": 0.25},
        {"strategy": "margin", "auto_labels": True, "labels_to_target": math.nan,
         "labels_to_target_per_seed": "20 never", "seeds_reaching_target": 1, "auto_labels_made": 7,
         "auto_label_precision": 6 / 7, "ratio_to_random": math.nan, "share_of_pool": math.nan},
    ])


def test_summary_metrics_leave_out_what_does_not_exist():
    metrics = summary_metrics(summary())
    assert metrics["labels_to_target.random.without_auto"] == 40.0
    assert metrics["ratio_to_random.random.without_auto"] == 1.0
    assert "auto_label_precision.random.without_auto" not in metrics  # no auto-labels: no precision
    assert "labels_to_target.margin.with_auto" not in metrics  # a seed never reached the target
    assert metrics["auto_label_precision.margin.with_auto"] == pytest.approx(6 / 7)
    assert metrics["seeds_reaching_target.margin.with_auto"] == 1.0
    assert all(not math.isnan(v) for v in metrics.values())


def test_the_summary_table_has_a_row_per_strategy_and_mode():
    lines = format_summary(summary()).splitlines()
    assert lines[0].split()[:2] == ["strategy", "auto-labels"] and set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["random", "without", "40.0", "40", "40", "1.00", "25.0%", "0", "-"]
    assert lines[3].split() == ["margin", "with", "-", "20", "never", "-", "-", "7", "85.71%"]


def test_curve_metrics_are_the_mean_over_seeds_per_number_of_human_labels():
    curves = pd.DataFrame({"strategy": ["margin"] * 4, "auto_labels": [False] * 4, "seed": [0, 1, 0, 1],
                           "n_human": [10, 10, 20, 20], "balanced_accuracy": [0.5, 0.7, 0.8, 1.0]})
    assert curve_metrics(curves) == [("curve.margin.without_auto", pytest.approx(0.6), 10),
                                     ("curve.margin.without_auto", pytest.approx(0.9), 20)]


@pytest.mark.parametrize("changes, field", [
    ({"pooling": "median"}, "pooling"),
    ({"image_size": "huge"}, "image_size"),
    ({"image_size": 8}, "image_size"),
    ({"feature_layers": ()}, "feature_layers"),
    ({"batch_size": 0}, "batch_size"),
])
def test_a_bad_run_is_refused_naming_the_field(changes, field):
    with pytest.raises(ValueError) as raised:
        SimulationRun(**changes)
    assert str(raised.value).startswith(field)


def test_the_data_needs_exactly_two_labels_one_of_them_positive():
    from mlproject.data.records import LabeledImage

    records = [LabeledImage("a.png", "ok"), LabeledImage("b.png", "defect")]
    assert binary_class_names(records, "defect", "data") == ("ok", "defect")
    with pytest.raises(ValueError, match=r"^positive_label 'scratch': data has the labels \['defect', 'ok'\]"):
        binary_class_names(records, "scratch", "data")
    with pytest.raises(ValueError, match="exactly two"):
        binary_class_names([*records, LabeledImage("c.png", "dent")], "defect", "data")


def folders(root: Path, counts: dict) -> Path:
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((32, 32), 10 * i, np.uint8), "L").save(root / label / f"{i}.png")
    return root


def fake_features(records, features):
    return FeatureSet(np.asarray(features, np.float32), list(records), [], Path("cache.npz"), "key", True,
                      {"weights": "none", "image_size": 32, "pooling": "avg", "feature_layers": "block1_pool",
                       "manifest_hash": "m"})


def no_feature_pass(*args, **kwargs):
    raise AssertionError("a feature pass was started")


def test_per_class_settings_for_a_class_the_data_lacks_are_refused_before_the_feature_pass(tmp_path, monkeypatch):
    data = folders(tmp_path / "data", {"ok": 3, "defect": 3})
    monkeypatch.setattr(simulation_run, "backbone_features", no_feature_pass)
    run = SimulationRun(config=SimulationConfig(policy=PolicyConfig(class_tau={"scratch": 0.9})), data=str(data),
                        image_size=32)
    with pytest.raises(ValueError, match="^class_tau takes CLASS=VALUE pairs with CLASS one of ok, defect"):
        run_simulation(run)
    capped = SimulationRun(config=SimulationConfig(policy=PolicyConfig(max_auto_per_class={"dent": 1})),
                           data=str(data), image_size=32)
    with pytest.raises(ValueError, match="^max_auto_per_class takes"):
        run_simulation(capped)
    with pytest.raises(ValueError, match="^positive_label"):
        run_simulation(SimulationRun(data=str(data), positive_label="scratch", image_size=32))


def test_too_few_images_of_a_class_stop_the_run_before_mlflow(tmp_path, monkeypatch):
    data = folders(tmp_path / "data", {"ok": 4, "defect": 3})
    seen = []

    def two_defects_readable(records, **kwargs):
        seen.append(kwargs)
        kept = [r for r in records if r.label == "ok"] + [r for r in records if r.label == "defect"][:2]
        return fake_features(kept, np.zeros((len(kept), 2)))

    monkeypatch.setattr(simulation_run, "backbone_features", two_defects_readable)
    monkeypatch.setattr(simulation_run, "_log_simulation", no_feature_pass)
    messages = []
    with pytest.raises(DatasetError, match="2 'defect' and 4 'ok' images were read"):
        run_simulation(SimulationRun(data=str(data), image_size=32, weights="none"),
                       notify=lambda message, warning: messages.append((message, warning)))
    assert seen[0]["image_size"] == 32 and seen[0]["weights"] == "none"
    assert ("image size 32 px (given)", False) in messages
    assert any(m.startswith("Backbone features: reused") for m, _ in messages)


def test_an_unknown_feature_layer_is_reported_as_feature_layers(tmp_path, monkeypatch):
    data = folders(tmp_path / "data", {"ok": 3, "defect": 3})

    def unknown_layer(records, **kwargs):
        raise ValueError("feature layer 'block9_pool' is not a VGG16 layer; choose from [...]")

    monkeypatch.setattr(simulation_run, "backbone_features", unknown_layer)
    run = SimulationRun(data=str(data), image_size=32, feature_layers=("block9_pool",))
    with pytest.raises(ValueError, match="^feature_layers block9_pool: feature layer 'block9_pool' is not"):
        run_simulation(run)
