"""The one prediction path: images of Label Studio tasks through the champion.

:func:`score_images` reads the images a few at a time and scores them in groups bounded in count
and in bytes, so a caller never holds more than ``max_request_bytes`` of encoded images however
many tasks it brings. The backend's ``/predict`` (:func:`predict_tasks`) and ``alloop sync``/
``predict`` (:mod:`mlproject.loop.scoring`) both use it, and both turn its scores into Label Studio
results through :class:`~mlproject.serving.champion.ChampionChoices`.

An image that cannot be read or decoded (or a batch the model fails on) is reported per task, by
name and reason; the other tasks are not held up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import numpy as np

from integrations.labelstudio.images import FETCH_THREADS, ImageFetcher, fetch_all
from integrations.labelstudio.label_config import ChoicesTarget, LabelConfigError, empty_result, parse_choices_target
from mlproject.serving.champion import Champion

logger = logging.getLogger("alloop.serving")

NO_CHAMPION = "no-champion"
DEFAULT_MAX_REQUEST_BYTES = 512 * 1024 * 1024
MAX_IMAGES_PER_MODEL_CALL = 64  # the decoded batch (float32, 3 MB an image at 512 px) stays small too


@dataclass(frozen=True)
class PredictLimits:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_images_per_call: int = MAX_IMAGES_PER_MODEL_CALL

    def check(self, max_image_bytes: int) -> None:
        if self.max_request_bytes < FETCH_THREADS * max_image_bytes:
            raise ValueError(f"ALLOOP_MAX_REQUEST_BYTES ({self.max_request_bytes}) must be at least "
                             f"{FETCH_THREADS} x the per-image limit ALLOOP_MAX_IMAGE_BYTES ({max_image_bytes}): "
                             "images are read that many at a time")


@lru_cache(maxsize=64)
def target_for(label_config: str, from_name: str | None) -> ChoicesTarget:
    return parse_choices_target(label_config, from_name)


def task_id_of(task: Any) -> Any:
    return task.get("id") if isinstance(task, dict) else None


def task_image_url(task: Any, image_key: str) -> tuple[str | None, str | None]:
    """``(url, None)`` or ``(None, why)``: the task's image URL, checked for shape."""
    if not isinstance(task, dict):
        return None, f"the task is a {type(task).__name__}, not an object"
    data = task.get("data")
    if not isinstance(data, dict):
        return None, f"its 'data' is {'missing' if data is None else 'a ' + type(data).__name__}, not an object"
    url = data.get(image_key)
    if not url:
        return None, f"task data has no {image_key!r} field"
    if not isinstance(url, str):
        return None, f"task data field {image_key!r} is a {type(url).__name__}, not a URL"
    return url, None


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, looked up once (find_library runs ldconfig), or None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def release_memory() -> None:
    """Give freed heap back to the system after a large request (glibc keeps it otherwise)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@dataclass(frozen=True)
class ImageJob:
    key: Any  # the caller's handle: a task, an index
    url: str
    task_id: Any  # for messages and the fetcher's checks


@dataclass(frozen=True)
class Scored:
    key: Any
    p_defect: float
    embedding: np.ndarray


@dataclass(frozen=True)
class ScoredGroup:
    scored: list  # of Scored, one per image the model scored
    done: int  # jobs finished with this group (scored or failed), for progress bars


def score_images(champion: Champion, fetcher: ImageFetcher, jobs: list[ImageJob], *, image_key: str,
                 errors: dict, limits: PredictLimits = PredictLimits()) -> Iterator[ScoredGroup]:
    """Score ``jobs``' images; yields after each model call. ``errors[key]`` gets the reason for each
    job whose image could not be read or decoded, or whose batch the model failed on."""
    held, held_bytes, failed = [], 0, 0
    # the next chunk may add FETCH_THREADS images of up to max_bytes each
    room = limits.max_request_bytes - FETCH_THREADS * fetcher.max_bytes
    for start in range(0, len(jobs), FETCH_THREADS):
        chunk = jobs[start : start + FETCH_THREADS]
        fetched = fetch_all(fetcher, [job.url for job in chunk], image_key=image_key,
                            task_ids=[job.task_id for job in chunk])
        for job, (content, error) in zip(chunk, fetched):
            if content is None:
                errors[job.key] = f"image not read: {error}"
                failed += 1
            else:
                held.append((job, content))
                held_bytes += len(content)
        if len(held) >= limits.max_images_per_call or held_bytes > room:
            yield ScoredGroup(_score_group(champion, held, errors), len(held) + failed)
            held, held_bytes, failed = [], 0, 0
    if held or failed:
        yield ScoredGroup(_score_group(champion, held, errors) if held else [], len(held) + failed)


def _score_group(champion: Champion, group: list, errors: dict) -> list[Scored]:
    started = time.monotonic()
    try:
        scores = champion.score([content for _, content in group], [f"task {job.task_id}" for job, _ in group])
    except Exception as exc:  # one bad batch must not take the others down
        reason = f"the model {champion.version} failed on its batch of {len(group)}: " \
                 f"{exc.__class__.__name__}: {str(exc)[:300]}"
        logger.error("%s", reason)
        for job, _ in group:
            errors[job.key] = reason
        return []
    logger.info("%d image(s) through %s in %.2f s", len(group), champion.version, time.monotonic() - started)
    scored = set(scores.good)
    bad = [index for index in range(len(group)) if index not in scored]
    for index, error in zip(bad, scores.errors):
        errors[group[index][0].key] = f"image not decoded: {getattr(error, 'reason', error)}"
    return [Scored(group[index][0].key, float(scores.p_defect[row]), scores.embeddings[row])
            for row, index in enumerate(scores.good)]


def predict_tasks(tasks: list, label_config: str | None, champion: Champion | None, fetcher: ImageFetcher, *,
                  from_name: str | None = None, label_map: dict | None = None, reason_no_champion: str = "",
                  limits: PredictLimits = PredictLimits()) -> list[dict]:
    """The backend's ``/predict``: exactly one result per task, in order (empty where it cannot predict)."""
    if champion is None:
        if tasks:
            logger.error("predict: %d task(s) get empty results: no champion (%s)", len(tasks), reason_no_champion)
        return [empty_result(NO_CHAMPION) for _ in tasks]
    results = [empty_result(champion.version) for _ in tasks]
    if not tasks:
        return results
    try:
        if not label_config:
            raise LabelConfigError("the request carries no label_config and /setup sent none for this project")
        choices = champion.choices_for(target_for(str(label_config), from_name), label_map)
    except LabelConfigError as exc:
        logger.error("predict: %d task(s) get empty results: the labeling config cannot be served: %s",
                     len(tasks), exc)
        return results
    jobs = []
    for index, task in enumerate(tasks):
        url, why = task_image_url(task, choices.target.image_value_key)
        if why:
            logger.error("predict: task %s: no image to read: %s", task_id_of(task), why)
        else:
            jobs.append(ImageJob(index, url, task_id_of(task)))
    errors, calls = {}, 0
    for group in score_images(champion, fetcher, jobs, image_key=choices.target.image_value_key, errors=errors,
                              limits=limits):
        calls += 1
        for scored in group.scored:
            results[scored.key] = choices.result_for(scored.p_defect)
    for index, error in sorted(errors.items()):
        logger.error("predict: task %s: %s", task_id_of(tasks[index]), error)
    if calls > 1:
        release_memory()
    return results
