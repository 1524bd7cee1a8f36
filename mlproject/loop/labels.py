"""What a round knows about labels, as pure functions of the tasks (no I/O).

Which label each task has and who gave it, which human labels are held out to judge promotion,
which round a label belongs to, and what a round's decisions depend on. Also the task-data keys
the loop writes, which Label Studio's views filter on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Sequence

from integrations.labelstudio.tasks import Task

RANK_KEY = "alloop_review_rank"  # position in the "Needs review" queue (1 = first)
REVOKED_KEY = "alloop_revoked"  # why a machine label was taken back: the task must be seen by a person
AUDIT_KEY = "alloop_audit"  # "yes": in the "Audit" view

ClassOf = Callable[[Sequence[str]], "str | None"]  # a stored annotation's choices -> the model's class


@dataclass(frozen=True)
class TaskLabel:
    task_id: int
    label: str
    source: str  # human | auto
    annotation_id: int
    created_at: str


def task_labels(tasks: list[Task], class_of: ClassOf, bot_id: int) -> tuple[dict[int, TaskLabel], int]:
    """The label of every labelled task: a person's (newest, not skipped) wins over the bot's.

    Returns (labels, count of human annotations whose choice the model's classes do not cover).
    """
    labels, unmapped = {}, 0
    for task in tasks:
        human = task.human_annotations(bot_id, labelled=True)
        machine = task.machine_annotations(bot_id, labelled=True)
        for source, candidates in (("human", human), ("auto", machine)):
            if not candidates:
                continue
            newest = max(candidates, key=lambda a: (a.created_at, a.id))
            label = class_of(newest.choices)
            if label is None:
                unmapped += source == "human"
                continue
            labels[task.id] = TaskLabel(task.id, label, source, newest.id, newest.created_at)
            break
    return labels, unmapped


def in_holdout(key: str, task_id: int, share: float) -> bool:
    """A fixed share of tasks, chosen by a hash of the task: a task never moves between the two sets."""
    digest = hashlib.sha256(f"{key}:{task_id}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < share


@dataclass(frozen=True)
class LabelSplit:
    """The labels a retrain sees (``train``: human and auto) and the human ones it never sees (``holdout``)."""

    train: dict[int, TaskLabel]
    holdout: dict[int, TaskLabel]

    @property
    def human(self) -> int:
        return sum(lab.source == "human" for lab in (*self.train.values(), *self.holdout.values()))

    def train_human(self) -> int:
        return sum(lab.source == "human" for lab in self.train.values())

    def train_auto(self) -> int:
        return sum(lab.source == "auto" for lab in self.train.values())


def split_labels(labels: dict[int, TaskLabel], key: str, holdout_share: float) -> LabelSplit:
    holdout = {t: lab for t, lab in labels.items() if lab.source == "human" and in_holdout(key, t, holdout_share)}
    return LabelSplit({t: lab for t, lab in labels.items() if t not in holdout}, holdout)


def count_by_class(labels, class_names: Sequence[str]) -> dict[str, int]:
    """How many of ``labels`` (anything with a ``label``) are of each class, every class named."""
    return {name: sum(item.label == name for item in labels) for name in class_names}


def round_of(created_at: str, round_starts: list[tuple[int, str]]) -> int:
    """The round a label belongs to: the last round started before it was made (the round whose
    queue a person answered, or the round that wrote a machine label)."""
    number = 0
    for round_number, started in round_starts:
        if started <= created_at:
            number = round_number
    return number


def fingerprint(champion: str, tasks: list[Task], bot_id: int, policy) -> str:
    """What a round's decisions depend on: the champion, the tasks, the human annotations, the policy."""
    human = sorted(a.id for t in tasks for a in t.annotations if a.completed_by != bot_id)
    payload = json.dumps([champion, [t.id for t in tasks], human, repr(policy)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
