"""The policy flags of `alloop sync` and `alloop simulate`: parsed here, checked by PolicyConfig, its
errors reported as the option that was given."""

import pytest
import typer

from mlproject.cli._policy import POLICY_OPTIONS, caps, option_error, per_class, policy_config

DEFAULTS = dict(tau=0.95, class_tau="", cluster_confidence=0.9, cluster_agreement=0.9, clusters=0,
                max_auto_per_class="100", diversity=True, diversity_pool=3)


def test_option_error_swaps_the_leading_field_for_its_option():
    assert option_error(ValueError("tau must be between 0 and 1"), POLICY_OPTIONS) == "--tau must be between 0 and 1"
    assert option_error(ValueError("n_clusters must be >= 0"), POLICY_OPTIONS) == "--clusters must be >= 0"
    assert option_error(ValueError("strategies: unknown x"), {"strategies": "--strategies"}) == "--strategies: unknown x"
    assert option_error(ValueError("taus are fine"), POLICY_OPTIONS) == "taus are fine"  # a whole word only
    assert option_error(ValueError("no field here"), POLICY_OPTIONS) == "no field here"


def test_the_flags_become_a_policy():
    policy = policy_config(**{**DEFAULTS, "class_tau": "defect=0.99", "clusters": 4,
                              "max_auto_per_class": "ok=10,defect=2"}, strategy="entropy", human_budget=7)
    assert policy.class_tau == {"defect": 0.99} and policy.n_clusters == 4
    assert policy.max_auto_per_class == {"ok": 10, "defect": 2}
    assert policy.strategy == "entropy" and policy.human_budget == 7
    assert policy_config(**DEFAULTS).n_clusters is None  # 0: automatic
    assert caps("25") == 25


@pytest.mark.parametrize("changes, expected", [
    ({"tau": 1.5}, "--tau must be between 0 and 1, got 1.5"),
    ({"cluster_confidence": -1.0}, "--cluster-confidence must be between 0 and 1"),
    ({"cluster_agreement": 1.1}, "--cluster-agreement must be between 0 and 1"),
    ({"class_tau": "defect=1.5"}, "--class-tau defect must be between 0 and 1, got 1.5"),
    ({"clusters": -1}, "--clusters must be >= 0"),
    ({"max_auto_per_class": "-1"}, "--max-auto-per-class must be >= 0, got -1"),
    ({"max_auto_per_class": "ok=3,defect=-2"}, "--max-auto-per-class defect must be >= 0"),
    ({"diversity_pool": 0}, "--diversity-pool must be >= 1"),
    ({"strategy": "smart"}, "--strategy must be one of"),
    ({"human_budget": -1}, "--budget must be >= 0"),
])
def test_a_bad_value_is_reported_as_its_option(changes, expected, capsys):
    with pytest.raises(typer.Exit):
        policy_config(**{**DEFAULTS, **changes})
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [
    ("defect", "--class-tau takes CLASS=VALUE pairs; got 'defect'"),
    ("defect=0.9,defect=0.8", "--class-tau names class 'defect' twice"),
    ("defect=high", "--class-tau: 'high' for class 'defect' is not a float"),
])
def test_per_class_text_that_does_not_parse_is_refused(text, expected, capsys):
    with pytest.raises(typer.Exit):
        per_class(text, "class-tau", float)
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sync", "simulate"])
@pytest.mark.parametrize("args, expected", [
    (["--tau", "1.5"], "--tau must be between 0 and 1, got 1.5"),
    (["--diversity-pool", "0"], "--diversity-pool must be >= 1, got 0"),
])
def test_both_commands_report_a_bad_policy_flag_by_name(command, args, expected, tmp_path):
    from typer.testing import CliRunner

    from mlproject.cli import app

    # Refused before Label Studio, MLflow or the data are looked at.
    result = CliRunner().invoke(app, [command, *args, *(["--data", str(tmp_path / "none")] if command == "simulate"
                                                        else ["--url", "http://127.0.0.1:9"])])
    assert result.exit_code == 1, result.output
    assert expected in result.output
