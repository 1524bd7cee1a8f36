"""Task's annotation views: whose labels are whose, the one place that says it."""

from integrations.labelstudio.tasks import Annotation, Task

BOT = 7


def annotation(id_, by, choices=("defect",), cancelled=False):
    return Annotation(id_, 1, by, tuple(choices), cancelled, None, f"2026-12-01T00:00:0{id_}")


def test_people_and_machine_annotations_are_told_apart_and_cancelled_ones_are_not_labels():
    task = Task(1, {}, [annotation(1, BOT), annotation(2, 3), annotation(3, 3, cancelled=True),
                        annotation(4, BOT, choices=()), annotation(5, None)])
    assert [a.id for a in task.machine_annotations(BOT)] == [1, 4]
    assert [a.id for a in task.machine_annotations(BOT, labelled=True)] == [1]
    assert [a.id for a in task.human_annotations(BOT)] == [2, 5]  # an unknown author is not the bot
    assert [a.id for a in task.human_annotations(BOT, labelled=True)] == [2, 5]


def test_a_person_who_skipped_a_task_still_touched_it():
    skipped = Task(2, {}, [annotation(1, BOT), annotation(2, 3, choices=(), cancelled=True)])
    assert skipped.human_annotations(BOT) == [] and skipped.touched_by_people(BOT)
    machine_only = Task(3, {}, [annotation(1, BOT)])
    assert not machine_only.touched_by_people(BOT)
    assert not Task(4, {}).touched_by_people(BOT)
