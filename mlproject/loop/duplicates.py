"""The check at the start of every round: machine labels and predictions written twice.

Two rounds that once ran at the same time (before the round lock) could leave a task with two
auto-labels of the bot user, or two predictions of one model version. Neither changes what the
next round sees as "changed", so nothing would ever repair them; this check reports them every
round and, when asked, deletes the extras: the oldest bot annotation of a task stays, and of a
task's predictions of one version the ones an annotation links to (``parent_prediction``) stay,
else the oldest. Human annotations are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.labelstudio.tasks import Task


@dataclass(frozen=True)
class Duplicates:
    auto_label_tasks: tuple[int, ...] = ()  # tasks with more than one live bot annotation
    extra_auto_labels: tuple[int, ...] = ()  # annotation ids beyond the one kept
    prediction_tasks: tuple[int, ...] = ()  # tasks with more than one prediction of one model version
    extra_predictions: tuple[int, ...] = ()  # prediction ids beyond the ones kept

    @property
    def found(self) -> bool:
        return bool(self.extra_auto_labels or self.extra_predictions)

    def counts(self) -> dict[str, int]:
        return {"duplicate_auto_label_tasks": len(self.auto_label_tasks),
                "duplicate_auto_labels": len(self.extra_auto_labels),
                "duplicate_prediction_tasks": len(self.prediction_tasks),
                "duplicate_predictions": len(self.extra_predictions)}

    def summary(self) -> str:
        return (f"{len(self.auto_label_tasks)} task(s) with more than one auto-label ({len(self.extra_auto_labels)} "
                f"extra), {len(self.prediction_tasks)} task(s) with the same model version's prediction more than "
                f"once ({len(self.extra_predictions)} extra)")


def find_duplicates(tasks: list[Task], bot_id: int, model_prefix: str = "") -> Duplicates:
    """What is written twice, and which copies are extra (pure).

    Only live (not cancelled) annotations of ``bot_id`` count; only predictions whose model version
    starts with ``model_prefix`` (the loop's own model, ``NAME/``) are judged.
    """
    label_tasks, extra_labels, prediction_tasks, extra_predictions = [], [], [], []
    for task in tasks:
        machine = sorted(task.machine_annotations(bot_id),
                         key=lambda a: (a.created_at, a.id))
        extra = {a.id for a in machine[1:]}
        if extra:
            label_tasks.append(task.id)
            extra_labels.extend(sorted(extra))
        linked = {a.parent_prediction for a in task.annotations if a.id not in extra and a.parent_prediction}
        by_version: dict[str, list] = {}
        for prediction in task.predictions:
            if prediction.model_version and prediction.model_version.startswith(model_prefix):
                by_version.setdefault(prediction.model_version, []).append(prediction)
        dropped = []
        for group in by_version.values():
            if len(group) < 2:
                continue
            keep = {p.id for p in group if p.id in linked} or {min(p.id for p in group)}
            dropped.extend(p.id for p in group if p.id not in keep)
        if dropped:
            prediction_tasks.append(task.id)
            extra_predictions.extend(sorted(dropped))
    return Duplicates(tuple(label_tasks), tuple(extra_labels), tuple(prediction_tasks), tuple(extra_predictions))


def check_duplicates(project_tasks, tasks: list[Task], bot_id: int, *, model_prefix: str = "",
                     repair: bool = False) -> tuple[Duplicates, list[str]]:
    """Find duplicates in ``tasks`` (as just read) and, with ``repair``, delete the extras through
    ``project_tasks`` (:class:`~integrations.labelstudio.tasks.ProjectTasks`), updating ``tasks`` in
    place. Returns what was found and the messages for the round's report."""
    found = find_duplicates(tasks, bot_id, model_prefix)
    if not found.found:
        return found, []
    if not repair:
        return found, [f"duplicates: {found.summary()}; run `alloop sync --repair-duplicates` to delete the extras "
                       "(the oldest auto-label and the linked or oldest prediction stay; human labels are never "
                       "touched)"]
    labels, predictions = set(found.extra_auto_labels), set(found.extra_predictions)
    for annotation_id in sorted(labels):
        project_tasks.delete_annotation(annotation_id)
    for prediction_id in sorted(predictions):
        project_tasks.delete_prediction(prediction_id)
    for task in tasks:
        task.annotations = [a for a in task.annotations if a.id not in labels]
        task.predictions = [p for p in task.predictions if p.id not in predictions]
    return found, [f"duplicates repaired: {found.summary()}; deleted {len(labels)} auto-label(s) and "
                   f"{len(predictions)} prediction(s)"]
