"""The duplicates check: which auto-labels and predictions were written twice, and which copy stays."""

from __future__ import annotations

from integrations.labelstudio.tasks import Annotation, Prediction, Task
from mlproject.loop.duplicates import check_duplicates, find_duplicates

BOT, PERSON = 9, 1
V1, V2 = "clf/1", "clf/2"


def ann(id, task, by, *, cancelled=False, parent=None, at="2025-01-01T00:00:00Z"):
    return Annotation(id, task, by, ("ok",), cancelled, parent, at)


def pred(id, task, version):
    return Prediction(id, task, version, 0.9, ("ok",))


def test_a_clean_project_has_no_duplicates():
    tasks = [Task(1, {}, [ann(10, 1, BOT, parent=100)], [pred(100, 1, V1), pred(101, 1, V2)]),
             Task(2, {}, [ann(11, 2, PERSON), ann(12, 2, PERSON)], [pred(102, 2, V1)])]
    found = find_duplicates(tasks, BOT, "clf/")
    assert not found.found and found.counts() == {"duplicate_auto_label_tasks": 0, "duplicate_auto_labels": 0,
                                                  "duplicate_prediction_tasks": 0, "duplicate_predictions": 0}


def test_the_oldest_bot_annotation_stays_and_people_and_skips_are_never_counted():
    tasks = [Task(1, {}, [ann(12, 1, BOT, at="2025-01-02T00:00:00Z"), ann(11, 1, BOT, at="2025-01-01T00:00:00Z"),
                          ann(13, 1, BOT, at="2025-01-03T00:00:00Z"), ann(14, 1, PERSON), ann(15, 1, PERSON)]),
             Task(2, {}, [ann(20, 2, BOT), ann(21, 2, BOT, cancelled=True)])]  # a cancelled one is no label
    found = find_duplicates(tasks, BOT)
    assert found.auto_label_tasks == (1,) and found.extra_auto_labels == (12, 13)


def test_of_one_versions_predictions_the_linked_one_stays_else_the_oldest():
    tasks = [Task(1, {}, [], [pred(100, 1, V1), pred(101, 1, V1), pred(102, 1, V1)]),  # oldest stays
             Task(2, {}, [ann(20, 2, BOT, parent=201)], [pred(200, 2, V1), pred(201, 2, V1)]),  # linked stays
             Task(3, {}, [ann(30, 3, PERSON, parent=301)], [pred(300, 3, V1), pred(301, 3, V1)]),  # a person's link
             Task(4, {}, [], [pred(400, 4, V1), pred(401, 4, V2)])]  # two versions: no duplicate
    found = find_duplicates(tasks, BOT, "clf/")
    assert found.prediction_tasks == (1, 2, 3) and found.extra_predictions == (101, 102, 200, 300)


def test_a_prediction_linked_only_by_an_extra_bot_annotation_is_not_protected():
    # two bot labels, each linked to its own copy of the prediction: the oldest label and its copy stay
    task = Task(1, {}, [ann(10, 1, BOT, parent=100, at="2025-01-01T00:00:00Z"),
                        ann(11, 1, BOT, parent=101, at="2025-01-02T00:00:00Z")],
                [pred(100, 1, V1), pred(101, 1, V1)])
    found = find_duplicates([task], BOT, "clf/")
    assert found.extra_auto_labels == (11,) and found.extra_predictions == (101,)


def test_only_the_loops_own_model_versions_are_judged():
    task = Task(1, {}, [], [pred(100, 1, "other/1"), pred(101, 1, "other/1"), pred(102, 1, ""), pred(103, 1, "")])
    assert not find_duplicates([task], BOT, "clf/").found


class Recorder:
    def __init__(self):
        self.deleted = []

    def delete_annotation(self, annotation_id):
        self.deleted.append(("annotation", annotation_id))

    def delete_prediction(self, prediction_id):
        self.deleted.append(("prediction", prediction_id))


def test_check_reports_without_the_flag_and_deletes_only_the_extras_with_it():
    def tasks():
        return [Task(1, {}, [ann(10, 1, BOT, parent=100), ann(11, 1, BOT, at="2025-02-01T00:00:00Z"),
                             ann(12, 1, PERSON)], [pred(100, 1, V1), pred(101, 1, V1)])]

    api, seen = Recorder(), tasks()
    found, notes = check_duplicates(api, seen, BOT, model_prefix="clf/")
    assert found.found and api.deleted == [] and len(seen[0].annotations) == 3
    assert len(notes) == 1 and "--repair-duplicates" in notes[0]
    assert "1 task(s) with more than one auto-label (1 extra)" in notes[0]

    api, seen = Recorder(), tasks()
    found, notes = check_duplicates(api, seen, BOT, model_prefix="clf/", repair=True)
    assert api.deleted == [("annotation", 11), ("prediction", 101)]
    assert [a.id for a in seen[0].annotations] == [10, 12] and [p.id for p in seen[0].predictions] == [100]
    assert "deleted 1 auto-label(s) and 1 prediction(s)" in notes[0]

    api = Recorder()
    assert check_duplicates(api, seen, BOT, model_prefix="clf/", repair=True)[1] == [] and api.deleted == []
