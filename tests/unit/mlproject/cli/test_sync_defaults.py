"""`alloop sync`'s option defaults are the round's defaults: the CLI (which must start without importing
the loop) repeats them, so this test makes any drift between the two fail."""

import dataclasses

import typer

from mlproject.cli import app
from mlproject.loop.options import SyncOptions
from mlproject.loop.policy import PolicyConfig

# CLI option -> (dataclass, field, how the option's default maps onto the field)
SAME = lambda value: value  # noqa: E731
SYNC_FIELDS = {
    "retrain_after": "retrain_after", "retrain": "force_retrain", "force_round": "force_round",
    "holdout_share": "holdout_share", "entry_point": "entry_point", "champion_data": "champion_data",
    "metric": "metric",
    "min_improvement": "min_improvement", "recall_tolerance": "recall_tolerance", "wait": "wait_s",
    "lease_seconds": "lease_s", "repair_duplicates": "repair_duplicates",
}
POLICY_FIELDS = {
    "tau": ("tau", SAME), "cluster_confidence": ("cluster_confidence", SAME),
    "cluster_agreement": ("cluster_agreement", SAME), "clusters": ("n_clusters", lambda v: v or None),
    "max_auto_per_class": ("max_auto_per_class", int), "diversity": ("diversity", SAME),
    "diversity_pool": ("diversity_pool", SAME), "strategy": ("strategy", SAME), "budget": ("human_budget", SAME),
    "no_auto_labels": ("auto_label", lambda v: not v), "class_tau": ("class_tau", lambda v: {} if not v else v),
}


def sync_defaults() -> dict:
    command = typer.main.get_command(app).commands["sync"]
    return {param.name: param.default for param in command.params}


def field_defaults(cls) -> dict:
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def test_sync_option_defaults_are_the_sync_options_defaults():
    cli, options = sync_defaults(), field_defaults(SyncOptions)
    assert {name: cli[name] for name in SYNC_FIELDS} == {name: options[field] for name, field in SYNC_FIELDS.items()}


def test_sync_policy_option_defaults_are_the_policy_defaults():
    cli, policy = sync_defaults(), field_defaults(PolicyConfig)
    assert {name: convert(cli[name]) for name, (_, convert) in POLICY_FIELDS.items()} == \
        {name: policy[field] for name, (field, _) in POLICY_FIELDS.items()}


def test_every_policy_field_but_the_seed_has_a_sync_option():
    mapped = {field for field, _ in POLICY_FIELDS.values()}
    assert {f.name for f in dataclasses.fields(PolicyConfig)} - mapped == {"seed"}
