"""The round policy's options: the same flags and defaults in `alloop sync` and `alloop simulate`.

The flags are parsed here; their values are checked by :class:`~mlproject.loop.policy.PolicyConfig`
alone, whose errors :func:`option_error` words as the option that set the field.
"""

from __future__ import annotations

import re
from typing import Mapping

import typer

from mlproject.cli._app import fail

TAU = typer.Option(0.95, "--tau", help="a task's own confidence needed for an auto-label")
CLASS_TAU = typer.Option("", "--class-tau", help="per-class tau, e.g. defect=0.99,ok=0.95")
CLUSTER_CONFIDENCE = typer.Option(0.9, "--cluster-confidence", help="mean confidence a cluster needs for auto-labels")
CLUSTER_AGREEMENT = typer.Option(0.9, "--cluster-agreement", help="share of a cluster predicted as its majority class")
CLUSTERS = typer.Option(0, "--clusters", help="k-means clusters per round (0: about sqrt(open tasks / 2))")
MAX_AUTO = typer.Option("100", "--max-auto-per-class", help="auto-labels per class and round: N, or ok=N,defect=M")
DIVERSITY = typer.Option(True, "--diversity/--no-diversity", help="spread each round's review queue across clusters")
DIVERSITY_POOL = typer.Option(3, "--diversity-pool", help="diversity picks among budget x this most useful tasks")

#: The option that sets each PolicyConfig field (sync's --strategy and --budget included).
POLICY_OPTIONS = {"tau": "--tau", "class_tau": "--class-tau", "cluster_confidence": "--cluster-confidence",
                  "cluster_agreement": "--cluster-agreement", "n_clusters": "--clusters",
                  "max_auto_per_class": "--max-auto-per-class", "diversity_pool": "--diversity-pool",
                  "strategy": "--strategy", "human_budget": "--budget"}

_LEADING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def option_error(exc: Exception, options: Mapping[str, str]) -> str:
    """A dataclass's ValueError, which starts with the field's name, with that name replaced by the
    option that set it (``tau must be ...`` -> ``--tau must be ...``); other messages as they are."""
    message = str(exc)
    name = _LEADING_NAME.match(message)
    if name and name.group() in options:
        return options[name.group()] + message[name.end():]
    return message


def per_class(value: str, what: str, cast) -> dict:
    """``"defect=0.99,ok=0.95"`` -> {class: value}."""
    result = {}
    for item in (part.strip() for part in value.split(",") if part.strip()):
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep or not name:
            fail(f"--{what} takes CLASS=VALUE pairs; got {item!r}")
        if name in result:
            fail(f"--{what} names class {name!r} twice")
        try:
            result[name] = cast(number)
        except ValueError:
            fail(f"--{what}: {number!r} for class {name!r} is not a {cast.__name__}")
    return result


def caps(value: str):
    """``--max-auto-per-class 100`` (every class) or ``ok=100,defect=10``."""
    try:
        return int(value)
    except ValueError:
        return per_class(value, "max-auto-per-class", int)


def policy_config(*, tau: float, class_tau: str, cluster_confidence: float, cluster_agreement: float,
                  clusters: int, max_auto_per_class: str, diversity: bool, diversity_pool: int, **rest):
    """A :class:`PolicyConfig` from the shared flags (``rest``: strategy, budget, auto_label, ...)."""
    from mlproject.loop.policy import PolicyConfig

    try:
        return PolicyConfig(tau=tau, class_tau=per_class(class_tau, "class-tau", float),
                            cluster_confidence=cluster_confidence, cluster_agreement=cluster_agreement,
                            n_clusters=clusters or None, max_auto_per_class=caps(max_auto_per_class),
                            diversity=diversity, diversity_pool=diversity_pool, **rest)
    except ValueError as exc:
        fail(option_error(exc, POLICY_OPTIONS))
