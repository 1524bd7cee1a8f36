"""Steps 3 and 4 of a round: the plan made from the champion's predictions, and writing it.

Machine labels are written by the bot user, linked to the prediction they copy, never on a task
anyone annotated (checked against Label Studio right before each chunk), never twice. The review
queue is task data (``alloop_review_rank``) that the "Needs review" view sorts by.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from integrations.labelstudio.tasks import Annotation, Task
from mlproject.loop.embeddings import EmbeddingCache
from mlproject.loop.labels import RANK_KEY, REVOKED_KEY
from mlproject.loop.policy import AutoLabel, PolicyConfig, ReviewItem, RoundPlan, plan_round, probabilities_from_p_defect
from mlproject.loop.project import LoopProject
from mlproject.serving.champion import ChampionChoices

log = logging.getLogger("alloop.loop")

WRITE_THREADS = 4
AUTO_LABEL_CHUNK = 50

Hook = Callable[[str, dict], None]


def make_plan(project: LoopProject, choices: ChampionChoices, open_tasks: list[Task], cache: EmbeddingCache,
              errors: dict, policy: PolicyConfig) -> tuple[RoundPlan, np.ndarray]:
    """The round's plan from the champion's stored predictions and cached embeddings of the open tasks;
    also the embeddings in task-id order (for the cluster plot)."""
    champion = choices.champion
    ids, p_defect, vectors, forced = [], [], [], []
    for task in open_tasks:
        prediction = task.prediction_of(champion.version)
        vector = cache.get(task.id, project.image_url(task) or "")
        p = choices.p_defect_of(prediction) if prediction else None
        if task.id in errors or p is None or vector is None:
            continue
        ids.append(task.id)
        p_defect.append(p)
        vectors.append(vector)
        forced.append(bool(task.data.get(REVOKED_KEY)))
    embeddings = np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)
    probabilities = probabilities_from_p_defect(p_defect, champion.class_names)
    plan = plan_round(ids, probabilities, embeddings, champion.class_names, policy, needs_review=forced)
    # The machine label must be the label the champion's prediction shows (its threshold may not be 0.5).
    by_id = dict(zip(ids, p_defect))
    agreeing = [a for a in plan.auto_labels if champion.label_of(by_id[a.task_id]) == a.label]
    if len(agreeing) != len(plan.auto_labels):
        log.info("%d auto-label(s) dropped: the champion's threshold labels them otherwise",
                 len(plan.auto_labels) - len(agreeing))
        plan = RoundPlan(agreeing, plan.review, plan.cluster_of, plan.clusters, plan.skipped_by_cap)
    order = np.argsort(ids)
    return plan, embeddings[order] if len(ids) else embeddings


def in_parallel(function, items: list, threads: int = WRITE_THREADS):
    """``function`` over ``items`` on a few threads, results in order: Label Studio answers each write
    in 100-200 ms, most of it waiting, so a handful in flight keeps the round short."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(function, items))


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def apply_auto_labels(project: LoopProject, tasks: list[Task], auto_labels: list[AutoLabel], version: str,
                      choices: ChampionChoices, hook: Hook) -> tuple[int, int]:
    """Write the plan's machine labels; a task annotated by anyone meanwhile is left alone.
    Returns (written, skipped)."""
    by_id = {t.id: t for t in tasks}
    made = skipped = 0
    for start in range(0, len(auto_labels), AUTO_LABEL_CHUNK):
        chunk = auto_labels[start : start + AUTO_LABEL_CHUNK]
        counts_now = project.tasks.annotation_counts([a.task_id for a in chunk])  # the last check, per chunk
        todo = []
        for item in chunk:
            task = by_id.get(item.task_id)
            prediction = task.prediction_of(version) if task else None
            if task is None or counts_now.get(item.task_id, 1) > 0 or prediction is None:
                skipped += 1  # annotated meanwhile (by a person, or by this round before a restart), or gone
                continue
            todo.append((item, task, prediction))

        def write(entry):
            item, task, prediction = entry
            result = choices.result(item.label, item.confidence, version)
            annotation_id = project.tasks.add_annotation(item.task_id, result["result"], completed_by=project.bot_id,
                                                         parent_prediction=prediction.id)
            return Annotation(annotation_id, task.id, project.bot_id, (choices.choice_of[item.label],), False,
                              prediction.id, _now_iso(), result["result"])

        for (item, task, _), annotation in zip(todo, in_parallel(write, todo)):
            task.annotations.append(annotation)
            made += 1
            hook("auto_label", {"task": item.task_id, "made": made})
    return made, skipped


def apply_review_queue(project: LoopProject, tasks: list[Task], review: list[ReviewItem]) -> int:
    """Put the queue's ranks on the open tasks (and take stale ranks off); returns the tasks changed."""
    rank = {r.task_id: r.rank for r in review}
    # labelled tasks are out of the view anyway: their data is left as it is
    changes = [(task, rank.get(task.id)) for task in tasks
               if not task.annotations and task.data.get(RANK_KEY) != rank.get(task.id)]
    return sum(in_parallel(lambda change: project.tasks.set_data_fields(change[0], {RANK_KEY: change[1]}), changes))
