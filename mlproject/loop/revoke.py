"""Taking machine labels back: the task goes to people. Used by rounds and by audits.

A person's label is never touched: only tasks no person has annotated lose their machine labels.
"""

from __future__ import annotations

from integrations.labelstudio.tasks import Task
from mlproject.loop.labels import REVOKED_KEY
from mlproject.loop.policy import PolicyConfig
from mlproject.loop.project import LoopProject
from mlproject.serving.champion import ChampionChoices


def revoke_machine_labels(project: LoopProject, task: Task, reason: str) -> bool:
    """Take the loop's labels off ``task`` and mark it (``alloop_revoked``: ``reason``) so the next
    rounds route it to people. True when a label was taken back."""
    if task.touched_by_people(project.bot_id):
        return False
    machine = [a for a in task.annotations if a.completed_by == project.bot_id]
    if not machine:
        return False
    for annotation in machine:
        project.tasks.delete_annotation(annotation.id)
    task.annotations = [a for a in task.annotations if a not in machine]
    project.tasks.set_data_fields(task, {REVOKED_KEY: reason})
    return True


def contradicted(task: Task, choices: ChampionChoices, bot_id: int, policy: PolicyConfig) -> str | None:
    """Why ``task``'s machine label should go back to review, or None: the champion's prediction on it
    names another class with at least the confidence the policy asks to auto-label that class."""
    machine = task.machine_annotations(bot_id)
    prediction = task.prediction_of(choices.champion.version)
    if task.touched_by_people(bot_id) or not machine or prediction is None:
        return None  # a person's label stands; nothing to revoke, or nothing to judge it by
    now = choices.class_of_choices(prediction.choices)
    before = choices.class_of_choices(machine[-1].choices)
    confidence = float(prediction.score or 0.0)
    if now is None or now == before or confidence < policy.tau_for(now):
        return None
    return f"auto-label {before!r} contradicted by {choices.champion.version} ({now!r}, {confidence:.3f})"


def revoke_contradicted(project: LoopProject, choices: ChampionChoices, tasks: list[Task], policy: PolicyConfig,
                        round_number: int) -> int:
    """Machine labels from older models that the champion confidently contradicts go back to review;
    returns how many."""
    revoked = 0
    for task in tasks:
        why = contradicted(task, choices, project.bot_id, policy)
        if why is not None:
            revoked += revoke_machine_labels(project, task, f"round {round_number}: {why}")
    return revoked
