"""The pure label bookkeeping of a round: whose label counts, what is held out, what a round depends on."""

from integrations.labelstudio.tasks import Annotation, Task
from mlproject.loop.labels import (
    count_by_class,
    fingerprint,
    in_holdout,
    round_of,
    split_labels,
    task_labels,
)
from mlproject.loop.policy import PolicyConfig

BOT = 99
CLASS_OF = {"Good": "ok", "Bad": "defect"}.get


def annotation(id_, task, by, choice, at, cancelled=False):
    return Annotation(id_, task, by, (choice,) if choice else (), cancelled, None, at)


def class_of(choices):
    return CLASS_OF(choices[0]) if choices else None


def test_a_persons_newest_label_wins_over_the_bots_and_skips_do_not_count():
    tasks = [
        Task(1, {}, [annotation(1, 1, BOT, "Bad", "2026-01-01"), annotation(2, 1, 5, "Good", "2026-01-02")]),
        Task(2, {}, [annotation(3, 2, 5, "Good", "2026-01-01"), annotation(4, 2, 6, "Bad", "2026-01-03")]),
        Task(3, {}, [annotation(5, 3, BOT, "Good", "2026-01-01"), annotation(6, 3, 5, "Bad", "2026-01-05", True)]),
        Task(4, {}, [annotation(7, 4, 5, "Maybe", "2026-01-01")]),
        Task(5, {}),
    ]
    labels, unmapped = task_labels(tasks, class_of, BOT)
    assert {t: (lab.label, lab.source) for t, lab in labels.items()} == {
        1: ("ok", "human"), 2: ("defect", "human"), 3: ("ok", "auto")}
    assert labels[2].annotation_id == 4
    assert unmapped == 1  # task 4's "Maybe" is no class of the model


def test_the_holdout_is_a_stable_share_of_human_labels_only():
    tasks = [Task(i, {}, [annotation(i, i, 5 if i % 2 else BOT, "Good", "2026-01-01")]) for i in range(1, 2001)]
    labels, _ = task_labels(tasks, class_of, BOT)
    split = split_labels(labels, "project-a", 0.25)
    assert all(lab.source == "human" for lab in split.holdout.values())
    assert set(split.holdout) | set(split.train) == set(labels) and not set(split.holdout) & set(split.train)
    assert 0.2 < len(split.holdout) / 1000 < 0.3
    assert split.human == 1000 and split.train_human() == 1000 - len(split.holdout) and split.train_auto() == 1000
    # a task never moves between the sets, and another project draws another sample
    assert split_labels(labels, "project-a", 0.25).holdout.keys() == split.holdout.keys()
    assert {t for t in range(1, 2001, 2) if in_holdout("project-b", t, 0.25)} != set(split.holdout)
    assert not split_labels(labels, "project-a", 0.0).holdout


def test_count_by_class_names_every_class():
    labels, _ = task_labels([Task(1, {}, [annotation(1, 1, 5, "Bad", "x")])], class_of, BOT)
    assert count_by_class(labels.values(), ("ok", "defect")) == {"ok": 0, "defect": 1}


def test_a_label_belongs_to_the_last_round_started_before_it():
    starts = [(1, "2026-01-01T00:00:00Z"), (2, "2026-01-05T00:00:00Z")]
    assert round_of("2025-12-31T00:00:00Z", starts) == 0
    assert round_of("2026-01-03T00:00:00Z", starts) == 1
    assert round_of("2026-01-05T00:00:00Z", starts) == 2


def test_the_fingerprint_follows_human_labels_the_champion_and_the_policy_not_the_bots_labels():
    tasks = [Task(1, {}), Task(2, {})]
    base = fingerprint("m/1", tasks, BOT, PolicyConfig())
    tasks[0].annotations.append(annotation(1, 1, BOT, "Good", "x"))
    assert fingerprint("m/1", tasks, BOT, PolicyConfig()) == base
    tasks[1].annotations.append(annotation(2, 2, 5, "Bad", "x"))
    with_human = fingerprint("m/1", tasks, BOT, PolicyConfig())
    assert with_human != base
    assert fingerprint("m/2", tasks, BOT, PolicyConfig()) != with_human
    assert fingerprint("m/1", tasks, BOT, PolicyConfig(tau=0.99)) != with_human
