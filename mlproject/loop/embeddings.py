"""Backbone embeddings and scores of task images, cached on disk per model version.

One ``.npz`` per (registered model version, Label Studio project): the task ids, the image URL each
was computed from (a changed URL means a changed image: recomputed), the vectors (float16: half
the disk, and far more precision than k-means needs) and the model's P(defect) (so a round killed
before its predictions reached Label Studio writes them on the rerun without scoring again).
Written atomically; a lost or corrupt cache only costs recomputation.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from integrations.files import atomic_write

log = logging.getLogger("alloop.loop")


def cache_path(state_dir, model_version: str, project_key: str) -> Path:
    safe = lambda text: re.sub(r"[^A-Za-z0-9_.\-]+", "_", text)  # noqa: E731
    return Path(state_dir) / "embeddings" / safe(model_version) / f"{safe(project_key)}.npz"


class EmbeddingCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._vectors: dict[int, tuple[str, np.ndarray]] = {}
        self._scores: dict[int, float] = {}
        self.dirty = False
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as stored:
                    scores = stored["p_defect"] if "p_defect" in stored else np.full(len(stored["ids"]), np.nan)
                    for task_id, url, vector, p in zip(stored["ids"], stored["urls"], stored["vectors"], scores):
                        self._vectors[int(task_id)] = (str(url), vector)
                        if np.isfinite(p):
                            self._scores[int(task_id)] = float(p)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable embedding cache %s (%s); recomputing", self.path, exc)
                self._vectors, self._scores = {}, {}

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, task_id: int, url: str) -> np.ndarray | None:
        found = self._vectors.get(int(task_id))
        return found[1].astype(np.float32) if found and found[0] == url else None

    def p_defect(self, task_id: int, url: str) -> float | None:
        """The model's score of this image, if it was cached with the embedding."""
        found = self._vectors.get(int(task_id))
        return self._scores.get(int(task_id)) if found and found[0] == url else None

    def put(self, task_id: int, url: str, vector: np.ndarray, p_defect: float | None = None) -> None:
        self._vectors[int(task_id)] = (url, np.asarray(vector, dtype=np.float16))
        if p_defect is None:
            self._scores.pop(int(task_id), None)
        else:
            self._scores[int(task_id)] = float(p_defect)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        ids = sorted(self._vectors)
        dims = {self._vectors[i][1].shape for i in ids}
        if len(dims) > 1:
            raise ValueError(f"embeddings of different shapes {dims} in one cache {self.path}")
        atomic_write(self.path, lambda handle: np.savez(
            handle, ids=np.array(ids, dtype=np.int64), urls=np.array([self._vectors[i][0] for i in ids]),
            vectors=np.stack([self._vectors[i][1] for i in ids]) if ids else np.zeros((0, 0), np.float16),
            p_defect=np.array([self._scores.get(i, np.nan) for i in ids], dtype=np.float64)))
        self.dirty = False
