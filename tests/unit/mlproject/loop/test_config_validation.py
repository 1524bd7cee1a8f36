"""PolicyConfig and SimulationConfig are the only validators of their values: each error starts with
the field's name, which the commands swap for the option that set it."""

from dataclasses import fields

import pytest

from mlproject.loop.policy import PolicyConfig
from mlproject.loop.simulate import SimulationConfig


@pytest.mark.parametrize("cls, changes, field, words", [
    (PolicyConfig, {"tau": 1.5}, "tau", "must be between 0 and 1, got 1.5"),
    (PolicyConfig, {"cluster_confidence": -0.1}, "cluster_confidence", "must be between 0 and 1"),
    (PolicyConfig, {"cluster_agreement": 2}, "cluster_agreement", "must be between 0 and 1"),
    (PolicyConfig, {"class_tau": {"defect": 1.2}}, "class_tau", "defect must be between 0 and 1, got 1.2"),
    (PolicyConfig, {"n_clusters": -1}, "n_clusters", "must be >= 0 (0: automatic), got -1"),
    (PolicyConfig, {"max_auto_per_class": -1}, "max_auto_per_class", "must be >= 0, got -1"),
    (PolicyConfig, {"max_auto_per_class": {"ok": 3, "defect": -2}}, "max_auto_per_class", "defect must be >= 0"),
    (PolicyConfig, {"strategy": "smart"}, "strategy", "must be one of"),
    (PolicyConfig, {"human_budget": -1}, "human_budget", "must be >= 0"),
    (PolicyConfig, {"diversity_pool": 0}, "diversity_pool", "must be >= 1"),
    (SimulationConfig, {"strategies": ("random", "smart")}, "strategies", ": unknown smart; choose from"),
    (SimulationConfig, {"strategies": ()}, "strategies", ": none given"),
    (SimulationConfig, {"auto_label_modes": ()}, "auto_label_modes", "must hold"),
    (SimulationConfig, {"seeds": ()}, "seeds", "at least one seed"),
    (SimulationConfig, {"budget": 0}, "budget", "must be >= 1"),
    (SimulationConfig, {"initial_labels": 1}, "initial_labels", "must be >= 2"),
    (SimulationConfig, {"max_human": -5}, "max_human", "must be >= 0"),
    (SimulationConfig, {"test_fraction": 1.0}, "test_fraction", "between 0 and 1 (exclusive)"),
    (SimulationConfig, {"test_fraction": 0.0}, "test_fraction", "between 0 and 1 (exclusive)"),
    (SimulationConfig, {"pca_dims": -1}, "pca_dims", "must be >= 0"),
])
def test_each_bad_value_is_refused_naming_its_field_first(cls, changes, field, words):
    assert field in {f.name for f in fields(cls)}
    with pytest.raises(ValueError) as raised:
        cls(**changes)
    message = str(raised.value)
    assert message.startswith(field) and words in message


def test_the_boundaries_are_allowed():
    PolicyConfig(tau=0.0, cluster_confidence=1.0, cluster_agreement=0.0, class_tau={"ok": 1.0}, n_clusters=0,
                 max_auto_per_class={"ok": 0}, human_budget=0, diversity_pool=1)
    SimulationConfig(budget=1, initial_labels=2, max_human=0, test_fraction=0.01, pca_dims=0)


def test_per_class_settings_may_only_name_the_data_classes():
    PolicyConfig(class_tau={"defect": 0.99}, max_auto_per_class={"ok": 5}).check_class_names(("ok", "defect"))
    PolicyConfig(max_auto_per_class=5).check_class_names(("ok", "defect"))  # one cap for all: no names
    with pytest.raises(ValueError, match=r"^class_tau takes CLASS=VALUE pairs with CLASS one of ok, defect; "
                                         r"got 'scratch=0.9'"):
        PolicyConfig(class_tau={"scratch": 0.9}).check_class_names(("ok", "defect"))
    with pytest.raises(ValueError, match=r"^max_auto_per_class takes .* got 'dent=3'"):
        PolicyConfig(max_auto_per_class={"ok": 1, "dent": 3}).check_class_names(("ok", "defect"))
