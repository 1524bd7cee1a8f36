import pytest

from mlproject.registry.promotion import decide_promotion


def scores(ba, recall):
    return {"balanced_accuracy": ba, "defect_recall": recall}


def test_first_model_becomes_champion():
    decision = decide_promotion(scores(0.6, 0.5), None)
    assert decision.promote and "first model" in decision.reason
    assert decision.champion_score is None


def test_better_model_is_promoted():
    decision = decide_promotion(scores(0.9, 0.9), scores(0.8, 0.9))
    assert decision.promote
    assert decision.challenger_score == 0.9 and decision.champion_score == 0.8


def test_equal_model_is_not_promoted():
    assert not decide_promotion(scores(0.8, 0.9), scores(0.8, 0.9)).promote


def test_margin_must_be_met():
    assert not decide_promotion(scores(0.81, 0.9), scores(0.8, 0.9), min_improvement=0.02).promote
    assert decide_promotion(scores(0.83, 0.9), scores(0.8, 0.9), min_improvement=0.02).promote


def test_recall_drop_blocks_promotion_even_when_metric_improves():
    decision = decide_promotion(scores(0.95, 0.7), scores(0.8, 0.9))
    assert not decision.promote and "recall dropped" in decision.reason
    assert decide_promotion(scores(0.95, 0.85), scores(0.8, 0.9), recall_tolerance=0.1).promote


def test_other_metric_can_gate():
    challenger = {"roc_auc": 0.9, "defect_recall": 0.9, "balanced_accuracy": 0.1}
    champion = {"roc_auc": 0.8, "defect_recall": 0.9, "balanced_accuracy": 0.9}
    assert decide_promotion(challenger, champion, metric="roc_auc").promote


def test_missing_metric_is_a_clear_error():
    with pytest.raises(KeyError, match="roc_auc"):
        decide_promotion(scores(0.9, 0.9), None, metric="roc_auc")
