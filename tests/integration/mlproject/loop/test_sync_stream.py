"""`alloop sync` over a stream: a round killed while it writes predictions resumes with what is missing.

Real Label Studio, real MLflow store, a tiny real champion. The kill is a KeyboardInterrupt raised from
the second bulk write of predictions (what Ctrl-C or a lost connection at that moment does).
"""

from __future__ import annotations

import pytest

from tests.support.projects import ls_client, make_project, read

pytestmark = pytest.mark.integration


def test_a_round_killed_mid_stream_resumes_without_scoring_again_what_it_wrote(labelstudio, tiny_champion,
                                                                               synthetic_data, tmp_path, monkeypatch):
    from integrations.labelstudio.project import connection_from_env
    from integrations.labelstudio.tasks import ProjectTasks
    from mlproject.loop import scoring
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    version = str(tiny_champion())
    title, _ = make_project(labelstudio, synthetic_data, 24, "stream")
    options = SyncOptions(model_name="alloop-defect-classifier", state_dir=tmp_path / "state", progress=False,
                          batch_size=4)
    monkeypatch.setattr(scoring, "FLUSH_PREDICTIONS", 8)  # a write every 8 predictions: 3 writes for 24 tasks

    scored: list[list[int]] = []  # the task ids each run sends to the model
    score_images = scoring.score_images

    def counting_score_images(champion, fetcher, jobs, **kwargs):
        scored[-1].extend(job.key for job in jobs)
        return score_images(champion, fetcher, jobs, **kwargs)

    monkeypatch.setattr(scoring, "score_images", counting_score_images)
    writes: list[list[int]] = []
    add_predictions = ProjectTasks.add_predictions

    def killed_on_the_second_write(self, predictions):
        if len(writes) == 1:
            writes.append([p["task"] for p in predictions])
            raise KeyboardInterrupt("killed while writing predictions")
        writes.append([p["task"] for p in predictions])
        return add_predictions(self, predictions)

    monkeypatch.setattr(ProjectTasks, "add_predictions", killed_on_the_second_write)
    scored.append([])
    with pytest.raises(KeyboardInterrupt):
        run_round(open_project(connection_from_env(), title), options)
    ls = ls_client(labelstudio)
    written = {t.id for t in read(ls, labelstudio, title) if t.prediction_of(version) is not None}
    assert len(scored[0]) == 24 and written == set(writes[0]) and len(written) == 8

    monkeypatch.setattr(ProjectTasks, "add_predictions", add_predictions)
    scored.append([])
    report = run_round(open_project(connection_from_env(), title), options)
    # neither the 8 written nor the 8 scored but not yet written are scored again
    assert len(scored[1]) == 8 and not set(scored[1]) & (set(writes[0]) | set(writes[1]))
    assert report.counts["predicted"] == 16, report.counts
    tasks = read(ls, labelstudio, title)
    assert all(sum(p.model_version == version for p in t.predictions) == 1 for t in tasks)
