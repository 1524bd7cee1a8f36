"""The one prediction path: grouping, and per-task reasons when reading, decoding or the model fails.

The model is a stand-in (it reads P(defect) from the image bytes and can be told to fail): what is
tested is the path around it; the real model's scores are in tests/integration/mlproject/registry/test_registered_model.py.
"""

import numpy as np

from integrations.labelstudio.images import FETCH_THREADS, ImageFetcher
from mlproject.data.decode import BadImageError
from mlproject.serving.champion import Champion
from mlproject.serving.predictions import ImageJob, PredictLimits, score_images


class NumberModel:
    def __init__(self, fail_on=()):
        self.calls, self.fail_on = [], set(fail_on)

    def score_and_embed(self, images, sources=None):
        self.calls.append(list(sources))
        if self.fail_on & set(sources):
            raise RuntimeError("out of memory")
        good = [i for i, raw in enumerate(images) if raw != b"broken"]
        errors = [BadImageError(sources[i], "cannot identify image file") for i in range(len(images)) if i not in good]
        p = np.asarray([float(images[i].decode()) for i in good])
        return p, np.ones((len(good), 3), np.float32) * p[:, None], good, errors


def jobs_in(tmp_path, contents):
    for name, content in contents.items():
        (tmp_path / name).write_bytes(content)
    return [ImageJob(name, f"/data/local-files/?d={name}", f"t-{name}") for name in contents]


def test_every_job_is_scored_or_has_a_reason_and_groups_stay_within_the_limit(tmp_path):
    contents = {f"{i}.png": f"0.{i}".encode() for i in range(1, 10)}
    contents.update({"broken.png": b"broken"})
    jobs = jobs_in(tmp_path, contents) + [ImageJob("gone", "/data/local-files/?d=gone.png", "t-gone")]
    model = NumberModel()
    errors = {}
    groups = list(score_images(Champion("m/1", model, ("ok", "defect"), 0.5), ImageFetcher(str(tmp_path), None, None, []), jobs,
                               image_key="image", errors=errors, limits=PredictLimits(max_images_per_call=FETCH_THREADS)))
    scored = {s.key: s for g in groups for s in g.scored}
    assert {k: round(s.p_defect, 2) for k, s in scored.items()} == {f"{i}.png": i / 10 for i in range(1, 10)}
    assert scored["3.png"].embedding.tolist() == [0.3] * 3
    assert set(errors) == {"broken.png", "gone"}
    assert "image not decoded: cannot identify image file" in errors["broken.png"] and "not read" in errors["gone"]
    assert sum(g.done for g in groups) == len(jobs)
    assert max(len(call) for call in model.calls) <= FETCH_THREADS


def test_a_batch_the_model_fails_on_is_reported_per_task_and_the_other_batches_go_on(tmp_path):
    jobs = jobs_in(tmp_path, {f"{i}.png": f"0.{i}".encode() for i in range(1, 9)})
    model = NumberModel(fail_on={"task t-1.png"})
    errors = {}
    groups = list(score_images(Champion("m/1", model, ("ok", "defect"), 0.5), ImageFetcher(str(tmp_path), None, None, []), jobs,
                               image_key="image", errors=errors, limits=PredictLimits(max_images_per_call=FETCH_THREADS)))
    failed = {job.key for job in jobs[:len(model.calls[0])]}
    assert set(errors) == failed and all("m/1 failed on its batch" in errors[k] and "out of memory" in errors[k]
                                         for k in failed)
    assert {s.key for g in groups for s in g.scored} == {job.key for job in jobs} - failed
