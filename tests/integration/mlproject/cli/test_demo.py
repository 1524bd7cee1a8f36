"""`alloop demo` (the README's main job) through Typer's CliRunner: real MLflow store, the session's real
Label Studio, a real backend process, tiny models (random weights, 32 px) and fewer, smaller rounds."""

import os
import re
import sys
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from typer.testing import CliRunner

from integrations.processes import free_port
from mlproject.cli import app

pytestmark = pytest.mark.integration


def test_demo_tells_the_whole_story(labelstudio, tracking_uri, monkeypatch):
    from label_studio_sdk.client import LabelStudio

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    backend_port, ui_port = free_port(), free_port()
    # a pool with 30% defects, a review queue and a spot check per round: a retrain is due by round 2
    # and held-out human labels of both classes judge it
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--weights", "none", "--image-size", "32", "--model-name", "demo-test",
                                 "--experiment", "demo-test", "--rounds", "3", "--pool", "64", "--budget", "16",
                                 "--spot-check", "4", "--held-out-per-class", "2", "--retrain-after", "4",
                                 "--backend-port", str(backend_port), "--ui-port", str(ui_port)])
    try:
        assert result.exit_code == 0, result.output
        out = result.output
        assert "SYNTHETIC" in out and "SIMULATED annotator labelled 16 tasks" in out
        labelled = re.findall(r"SIMULATED annotator labelled (\d+) tasks of the review queue .* and spot-checked "
                              r"(\d+) random tasks", out)
        assert len(labelled) == 2 and all(int(spot) >= 4 for _, spot in labelled), labelled
        # the three variants were trained, registered and judged
        client = MlflowClient()
        versions = client.search_model_versions("name='demo-test'")
        assert {"finetune", "frozen", "svm"} <= {v.tags["variant"] for v in versions}
        training = client.search_runs([client.get_experiment_by_name("demo-test").experiment_id])
        assert sum(r.data.tags.get("task") == "promote" for r in training) == 3
        # the rounds ran, and a retrain was triggered and judged by promotion
        assert "Round 1: champion demo-test/" in out and "Round 3" in out
        # the retrain is the champion's own recipe
        started_as = re.search(r"^Champion: (demo-test/\d+)$", out, re.M).group(1)
        recipe = client.get_model_version("demo-test", started_as.split("/")[1]).tags["variant"]
        assert f"retraining: mlflow run . -e {recipe} on " in out, out[out.find("[6/7]"):][-6000:]
        # on the project's labels and on the data the champion was trained on
        inherited = re.search(r"retraining: .* (\d+) from the champion's training data\)", out)
        assert inherited and int(inherited.group(1)) > 0, out[out.find("[6/7]"):][-6000:]
        verdict = out[out.find("[7/7]"):]
        # the story ends with the challenger judged on held-out human labels of both classes
        held_out = re.search(r"Held-out human labels it never trained on: \d+ \(defect (\d+), ok (\d+)\)", verdict)
        assert held_out and min(map(int, held_out.groups())) >= 2, verdict
        assert "NOT judged" not in verdict and "No challenger" not in verdict, verdict
        promoted = re.search(r"^PROMOTED (demo-test/\d+) to champion: \S.*$", verdict, re.M)
        rejected = re.search(r"^NOT promoted: (demo-test/\d+) stays challenger because \S.*$", verdict, re.M)
        assert promoted or rejected, verdict
        champion = f"demo-test/{client.get_model_version_by_alias('demo-test', 'champion').version}"
        judged = (promoted or rejected).group(1)
        assert client.get_model_version("demo-test", judged.split("/")[1]).tags["promotion"] == \
            ("promoted" if promoted else "rejected")
        assert judged != started_as and (champion == judged if promoted else champion != judged)
        rounds = client.search_runs([client.get_experiment_by_name("alloop-rounds").experiment_id])
        assert len(rounds) == 3 and all(r.data.tags["alloop.state"] == "complete" for r in rounds)
        # the servers it started answer: the backend with that champion, whose predictions the project shows
        assert requests.get(f"http://127.0.0.1:{backend_port}/health", timeout=10).json()["champion"] == champion
        assert re.search(rf"^Backend http://127.0.0.1:{backend_port} serves {champion}: /predict on task \d+ "
                         rf"answered '(defect|ok)' \(\S+\) from model_version {champion}$", verdict, re.M), verdict
        assert requests.get(f"http://127.0.0.1:{ui_port}/health", timeout=10).status_code == 200
        ls = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.api_key)
        project = next(p for p in ls.projects.list() if p.title == "alloop demo (SYNTHETIC)")
        # the project holds the simulated annotator's labels, and the champion's predictions on every task
        assert ls.projects.get(id=project.id).model_version == champion
        tasks = list(ls.tasks.list(project=project.id, fields="all"))
        assert all(any(p.model_version == champion for p in t.predictions or []) for t in tasks)
        bot = next(u.id for u in ls.users.list() if u.email == "alloop-bot@alloop.local")
        human = [a for t in tasks for a in (t.annotations or []) if a["completed_by"] != bot]
        assert len(human) == sum(int(queue) + int(spot) for queue, spot in labelled)
        assert f"{labelstudio.url}/projects/{project.id}/data" in out and "scripts/demo --stop" in out
    finally:
        stopped = runner.invoke(app, ["demo", "--stop"])
    assert "backend" in stopped.output and "mlflow-ui" in stopped.output, stopped.output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{backend_port}/health", timeout=5)
