"""The round policy's options: the same flags, defaults and checks in `alloop sync` and `alloop simulate`."""

from __future__ import annotations

from typing import Sequence

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


def per_class(value: str, what: str, cast, class_names: Sequence[str] | None = None) -> dict:
    """``"defect=0.99,ok=0.95"`` -> {class: value}; with ``class_names``, only those classes."""
    result = {}
    for item in (part.strip() for part in value.split(",") if part.strip()):
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep or not name or (class_names is not None and name not in class_names):
            allowed = f" with CLASS one of {', '.join(class_names)}" if class_names is not None else ""
            fail(f"--{what} takes CLASS=VALUE pairs{allowed}; got {item!r}")
        if name in result:
            fail(f"--{what} names class {name!r} twice")
        try:
            result[name] = cast(number)
        except ValueError:
            fail(f"--{what}: {number!r} for class {name!r} is not a {cast.__name__}")
    return result


def caps(value: str, class_names: Sequence[str] | None = None):
    """``--max-auto-per-class 100`` (every class) or ``ok=100,defect=10``."""
    try:
        cap = int(value)
    except ValueError:
        return per_class(value, "max-auto-per-class", int, class_names)
    if cap < 0:
        fail(f"--max-auto-per-class must be >= 0, got {cap}")
    return cap


def policy_config(*, tau: float, class_tau: str, cluster_confidence: float, cluster_agreement: float,
                  clusters: int, max_auto_per_class: str, diversity: bool, diversity_pool: int,
                  class_names: Sequence[str] | None = None, **rest):
    """A :class:`PolicyConfig` from the shared flags (``rest``: strategy, budget, auto_label, ...)."""
    from mlproject.loop.policy import PolicyConfig

    thresholds = per_class(class_tau, "class-tau", float, class_names)
    for name, number in (("tau", tau), ("cluster-confidence", cluster_confidence),
                         ("cluster-agreement", cluster_agreement), *((f"class-tau {k}", v) for k, v in thresholds.items())):
        if not 0.0 <= number <= 1.0:
            fail(f"--{name} must be between 0 and 1, got {number}")
    if clusters < 0 or diversity_pool < 1:
        fail(f"--clusters must be >= 0 (0 = automatic) and --diversity-pool >= 1; got {clusters}, {diversity_pool}")
    try:
        return PolicyConfig(tau=tau, class_tau=thresholds, cluster_confidence=cluster_confidence,
                            cluster_agreement=cluster_agreement, n_clusters=clusters or None,
                            max_auto_per_class=caps(max_auto_per_class, class_names), diversity=diversity,
                            diversity_pool=diversity_pool, **rest)
    except ValueError as exc:
        fail(str(exc))
