"""When a round retrains and when its challenger can be judged (pure rules)."""

from mlproject.loop.retrain import MIN_TRAIN_LABELS_PER_CLASS, why_not_judged, why_not_retrain

ENOUGH = {"ok": MIN_TRAIN_LABELS_PER_CLASS, "defect": MIN_TRAIN_LABELS_PER_CLASS}


def test_a_round_retrains_after_enough_new_human_labels_or_when_asked():
    assert why_not_retrain(50, ENOUGH, retrain_after=50, force=False) is None
    assert "49 new human label(s)" in why_not_retrain(49, ENOUGH, retrain_after=50, force=False)
    assert "0 new human label(s)" in why_not_retrain(-3, ENOUGH, retrain_after=50, force=False)
    assert why_not_retrain(0, ENOUGH, retrain_after=50, force=True) is None


def test_a_class_with_too_few_training_labels_stops_even_a_forced_retrain():
    thin = {"ok": 40, "defect": MIN_TRAIN_LABELS_PER_CLASS - 1}
    why = why_not_retrain(100, thin, retrain_after=50, force=True)
    assert why is not None and "at least 5 of each class" in why and "'defect': 4" in why


def test_a_challenger_is_judged_only_on_a_holdout_with_both_classes():
    assert why_not_judged({"ok": 2, "defect": 3}, 2) is None
    why = why_not_judged({"ok": 0, "defect": 12}, 2)
    assert why is not None and "{'ok': 0, 'defect': 12}" in why and "label more" in why


def test_a_retrain_is_the_champions_own_recipe_unless_the_options_name_one():
    from mlproject.loop.options import SyncOptions

    assert SyncOptions(model_name="m").retrain_entry_point("svm") == "svm"
    assert SyncOptions(model_name="m", entry_point="finetune").retrain_entry_point("svm") == "finetune"
    assert SyncOptions(model_name="m").retrain_entry_point(None) == "finetune"  # a model without a variant
