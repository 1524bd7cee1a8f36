"""When a challenger replaces the champion. Pure policy: scores in, decision out, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    challenger_score: float
    champion_score: float | None
    challenger_defect_recall: float
    champion_defect_recall: float | None
    min_improvement: float

    def to_dict(self) -> dict:
        return asdict(self)


def decide_promotion(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    *,
    metric: str = "balanced_accuracy",
    min_improvement: float = 0.0,
    recall_tolerance: float = 0.0,
) -> PromotionDecision:
    """Promote when ``metric`` improves by at least ``min_improvement`` and defect recall does not drop.

    ``challenger``/``champion`` map metric names (without a prefix) to scores on the same fixed,
    human-labelled evaluation set. With no champion the challenger is promoted: a first model is
    better than none. ``recall_tolerance`` allows for a drop of that size (0 = no drop at all).
    """
    for name in (metric, "defect_recall"):
        if name not in challenger:
            raise KeyError(f"challenger scores lack {name!r}; have {sorted(challenger)}")
    new_score, new_recall = float(challenger[metric]), float(challenger["defect_recall"])
    if champion is None:
        return PromotionDecision(True, "no champion yet: the first model becomes champion", metric,
                                 new_score, None, new_recall, None, min_improvement)
    old_score, old_recall = float(champion[metric]), float(champion["defect_recall"])
    improvement = new_score - old_score
    if new_recall < old_recall - recall_tolerance:
        reason = f"defect recall dropped from {old_recall:.4f} to {new_recall:.4f}"
        promote = False
    elif improvement < min_improvement or (min_improvement == 0 and improvement <= 0):
        reason = (f"{metric} {new_score:.4f} vs champion {old_score:.4f}: improvement {improvement:+.4f} "
                  f"is below the required margin {min_improvement:.4f}" if min_improvement > 0 else
                  f"{metric} {new_score:.4f} does not beat the champion's {old_score:.4f}")
        promote = False
    else:
        reason = f"{metric} {old_score:.4f} -> {new_score:.4f} ({improvement:+.4f}); defect recall {old_recall:.4f} -> {new_recall:.4f}"
        promote = True
    return PromotionDecision(promote, reason, metric, new_score, old_score, new_recall, old_recall, min_improvement)
