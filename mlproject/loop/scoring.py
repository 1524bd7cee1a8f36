"""Steps 1 and 2 of a round: the champion's prediction on every task, embeddings of the open ones.

Through the one prediction path (:func:`mlproject.serving.predictions.score_images`), so a task
gets the same prediction from ``alloop sync`` as from the backend's ``/predict``.
"""

from __future__ import annotations

import logging
import time

from tqdm.auto import tqdm

from integrations.labelstudio.tasks import Task
from mlproject.loop.embeddings import EmbeddingCache
from mlproject.loop.project import LoopProject
from mlproject.loop.round_report import Timings
from mlproject.serving.champion import ChampionChoices
from mlproject.serving.predictions import ImageJob, PredictLimits, score_images

log = logging.getLogger("alloop.loop")

# Label Studio 1.23 spends ~10 s per prediction import on a 10,000-task project whatever its size (and
# ~3 ms per prediction): import in large batches, and at least every FLUSH_SECONDS so that a crash never
# loses much inference.
FLUSH_PREDICTIONS = 10_000
FLUSH_SECONDS = 300.0
SAVE_EVERY_S = 30.0


def score_tasks(project: LoopProject, choices: ChampionChoices, tasks: list[Task], *, need_embedding: set[int],
                cache: EmbeddingCache, batch_size: int, progress: bool,
                timings: Timings | None = None) -> tuple[int, dict[int, str]]:
    """Predictions for tasks without one from the champion, embeddings for ``need_embedding``.

    Returns (predictions written, {task id: why its image could not be used}). Predictions are
    written in bulk (``FLUSH_PREDICTIONS`` or ``FLUSH_SECONDS``, whichever comes first) and the
    scores and embeddings saved every ``SAVE_EVERY_S`` seconds and before each write: a round killed
    mid-stream resumes with what is missing, scoring again at most ``SAVE_EVERY_S`` of work, never
    what it wrote.
    """
    timings = timings if timings is not None else Timings()
    version = choices.champion.version
    by_id = {t.id: t for t in tasks}
    todo = [t for t in tasks if t.prediction_of(version) is None
            or (t.id in need_embedding and cache.get(t.id, project.image_url(t) or "") is None)]
    errors: dict[int, str] = {}
    jobs, pending = [], []
    for task in todo:
        url = project.image_url(task)
        if not url:
            errors[task.id] = f"task data has no {project.target.image_value_key!r} field"
        elif (cached := cache.p_defect(task.id, url)) is not None and cache.get(task.id, url) is not None:
            # scored by a run that stopped before writing it: written now, not scored again
            if task.prediction_of(version) is None:
                pending.append({"task": task.id, **choices.result_for(cached)})
        else:
            jobs.append(ImageJob(task.id, url, task.id))
    written = 0
    last_save = last_flush = time.monotonic()

    def flush():
        nonlocal written, pending, last_flush
        with timings("embedding_cache"):  # first: every prediction in Label Studio has its scores on disk
            cache.save()
        with timings("write_predictions"):
            written += project.tasks.add_predictions(pending)
        pending, last_flush = [], time.monotonic()

    bar = tqdm(total=len(jobs), desc=f"scoring with {version}", unit="image", disable=not progress or not jobs)
    groups = score_images(choices.champion, project.fetcher, jobs, image_key=project.target.image_value_key,
                          errors=errors, limits=PredictLimits(max_images_per_call=batch_size))
    while True:
        with timings("inference"):  # reading the images is part of it
            group = next(groups, None)
        if group is None:
            break
        bar.update(group.done)
        for scored in group.scored:
            task = by_id[scored.key]
            cache.put(task.id, project.image_url(task), scored.embedding, scored.p_defect)
            if task.prediction_of(version) is None:
                pending.append({"task": task.id, **choices.result_for(scored.p_defect)})
        if len(pending) >= FLUSH_PREDICTIONS or (pending and time.monotonic() - last_flush > FLUSH_SECONDS):
            flush()
        if time.monotonic() - last_save > SAVE_EVERY_S:
            with timings("embedding_cache"):
                cache.save()
            last_save = time.monotonic()
    bar.close()
    flush()
    with timings("embedding_cache"):
        cache.save()
    for task_id, error in sorted(errors.items()):
        log.error("task %s: %s", task_id, error)
    return written, errors
