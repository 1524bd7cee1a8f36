"""The backend's ``/predict``: Label Studio tasks in, exactly one result per task out, in order.

A task that cannot be predicted (no image field, ``data`` that is not an object, an image that
cannot be read or decoded) gets an empty result and a logged reason naming it; the others are not
held up. Images go through the model in groups bounded in count and in bytes, so one request never
holds more than ``max_request_bytes`` of encoded images, however many tasks it carries.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from integrations.labelstudio.images import FETCH_THREADS, ImageFetcher, fetch_all
from integrations.labelstudio.label_config import (
    ChoicesTarget,
    LabelConfigError,
    empty_result,
    map_classes,
    parse_choices_target,
    prediction_result,
)

logger = logging.getLogger("alloop.backend")

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


def predict_tasks(tasks: list, label_config: str | None, champion, fetcher: ImageFetcher, *,
                  from_name: str | None = None, label_map: dict | None = None, reason_no_champion: str = "",
                  limits: PredictLimits = PredictLimits()) -> list[dict]:
    """Exactly one result per task, in order. ``champion``: ``model``, ``version``, ``class_names``."""
    if champion is None:
        if tasks:
            logger.error("predict: %d task(s) get empty results: no champion (%s)", len(tasks), reason_no_champion)
        return [empty_result(NO_CHAMPION) for _ in tasks]
    version = champion.version
    results = [empty_result(version) for _ in tasks]
    if not tasks:
        return results
    try:
        if not label_config:
            raise LabelConfigError("the request carries no label_config and /setup sent none for this project")
        target = target_for(str(label_config), from_name)
        choice_of = map_classes(list(champion.class_names), target.choices, label_map or {})
    except LabelConfigError as exc:
        logger.error("predict: %d task(s) get empty results: the labeling config cannot be served: %s",
                     len(tasks), exc)
        return results

    todo = []
    for index, task in enumerate(tasks):
        url, why = task_image_url(task, target.image_value_key)
        if why:
            logger.error("predict: task %s: no image to read: %s", task_id_of(task), why)
        else:
            todo.append((index, url))
    held, held_bytes, calls = [], 0, 0
    for start in range(0, len(todo), FETCH_THREADS):
        chunk = todo[start : start + FETCH_THREADS]
        fetched = fetch_all(fetcher, [url for _, url in chunk], image_key=target.image_value_key,
                            task_ids=[task_id_of(tasks[i]) for i, _ in chunk])
        for (index, _), (content, error) in zip(chunk, fetched):
            if error:
                logger.error("predict: task %s: image not read: %s", task_id_of(tasks[index]), error)
            else:
                held.append((index, content))
                held_bytes += len(content)
        # the next chunk may add FETCH_THREADS images of up to max_bytes each
        room = limits.max_request_bytes - FETCH_THREADS * fetcher.max_bytes
        if len(held) >= limits.max_images_per_call or held_bytes > room:
            _predict_group(held, tasks, champion, target, choice_of, results)
            held, held_bytes, calls = [], 0, calls + 1
    if held:
        _predict_group(held, tasks, champion, target, choice_of, results)
        calls += 1
    if calls > 1:
        release_memory()
    return results


def _predict_group(group: list[tuple[int, bytes]], tasks: list, champion, target: ChoicesTarget,
                   choice_of: dict, results: list[dict]) -> None:
    import pandas as pd

    version = champion.version
    started = time.monotonic()
    frame = pd.DataFrame({"image": [content for _, content in group],
                          "source": [f"task {task_id_of(tasks[index])}" for index, _ in group]})
    try:
        output = champion.model.predict(frame)
    except Exception as exc:
        logger.error("predict: the model %s failed on a batch of %d: %s: %s", version, len(group),
                     exc.__class__.__name__, str(exc)[:300])
        return
    finally:
        del frame
    logger.info("predict: %d image(s) through %s in %.2f s", len(group), version, time.monotonic() - started)
    _, positive = champion.class_names
    for (index, _), row in zip(group, output.to_dict("records")):
        task_id = task_id_of(tasks[index])
        p_defect = row.get("p_defect")
        label = row.get("label") or ""
        if p_defect is None or (isinstance(p_defect, float) and math.isnan(p_defect)) or not label:
            logger.error("predict: task %s: image not decoded: %s", task_id, row.get("error") or "no prediction")
            continue
        if label not in choice_of:
            logger.error("predict: task %s: the model's label %r has no choice in the labeling config", task_id, label)
            continue
        p_defect = float(p_defect)
        score = p_defect if label == positive else 1.0 - p_defect
        results[index] = prediction_result(target, choice_of[label], score, version)
