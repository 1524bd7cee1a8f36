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


def test_a_retrain_takes_only_the_imported_records_the_champion_was_trained_on():
    from mlproject.loop.retrain import champion_records

    rows = [{"image": "/d/a.png", "label": "ok", "source": "import", "round": "0", "split": "train"},
            {"image": "/d/b.png", "label": "defect", "source": "", "round": "", "split": "test"},
            {"image": "/p/c.png", "label": "defect", "source": "human", "round": "2", "split": "train"},
            {"image": "/p/d.png", "label": "ok", "source": "auto", "round": "2", "split": "val"},
            {"image": "/d/e.png", "label": "scratch", "source": "import", "round": "0", "split": "train"}]
    records = champion_records(rows, ("ok", "defect"))
    assert [(r.path, r.label, r.source) for r in records] == [("/d/a.png", "ok", "import"),
                                                              ("/d/b.png", "defect", "import")]


def test_the_champions_data_loses_every_image_the_project_labelled_under_any_name(tmp_path):
    from mlproject.data.records import LabeledImage
    from mlproject.loop.retrain import without_project_images

    def image(name: str, content: bytes):
        path = tmp_path / name
        path.write_bytes(content)
        return str(path)

    held_out = image("task-7.png", b"the same pixels")  # downloaded from Label Studio under a task name
    labelled = image("task-8.png", b"other pixels")
    base = [LabeledImage(image("base-1.png", b"the same pixels"), "ok"),  # same bytes, another name
            LabeledImage(labelled, "ok"),  # the very file the project labelled
            LabeledImage(image("base-3.png", b"same size other"), "ok"),  # a size collision, not a duplicate
            LabeledImage(image("base-4.png", b"unique"), "defect"),
            LabeledImage(str(tmp_path / "gone.png"), "ok")]
    data = without_project_images(base, [held_out, labelled])
    assert [r.path for r in data.records] == [base[2].path, base[3].path]
    assert (data.replaced, data.missing) == (2, 1)
