"""`alloop demo` (the README's main job) through Typer's CliRunner: real MLflow store, the session's real
Label Studio, a real backend process, tiny models (random weights, 32 px) and fewer, smaller rounds."""

import os
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
    # 2 x 16 human labels of a pool with 30% defects: enough of each class that a retrain is due by round 3
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--weights", "none", "--image-size", "32", "--model-name", "demo-test",
                                 "--experiment", "demo-test", "--rounds", "3", "--pool", "48", "--budget", "16",
                                 "--retrain-after", "4", "--backend-port", str(backend_port),
                                 "--ui-port", str(ui_port)])
    try:
        assert result.exit_code == 0, result.output
        out = result.output
        assert "SYNTHETIC" in out and "SIMULATED annotator labelled 16 tasks" in out
        # the three variants were trained, registered and judged
        client = MlflowClient()
        versions = client.search_model_versions("name='demo-test'")
        assert {"finetune", "frozen", "svm"} <= {v.tags["variant"] for v in versions}
        training = client.search_runs([client.get_experiment_by_name("demo-test").experiment_id])
        assert sum(r.data.tags.get("task") == "promote" for r in training) == 3
        # the rounds ran, and a retrain was triggered and judged by promotion
        assert "Round 1: champion demo-test/" in out and "Round 3" in out
        assert "retraining: mlflow run . -e finetune" in out, out[out.find("[6/6]"):][-6000:]
        assert "promoted" in out or "rejected" in out or "stays challenger" in out
        rounds = client.search_runs([client.get_experiment_by_name("alloop-rounds").experiment_id])
        assert len(rounds) == 3 and all(r.data.tags["alloop.state"] == "complete" for r in rounds)
        # the servers it started answer, and the project holds the simulated annotator's labels
        assert requests.get(f"http://127.0.0.1:{backend_port}/health", timeout=10).json()["champion"]
        assert requests.get(f"http://127.0.0.1:{ui_port}/health", timeout=10).status_code == 200
        ls = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.api_key)
        project = next(p for p in ls.projects.list() if p.title == "alloop demo (SYNTHETIC)")
        human = [a for t in ls.tasks.list(project=project.id, fields="all") for a in (t.annotations or [])
                 if a["completed_by"] != next(u.id for u in ls.users.list() if u.email == "alloop-bot@alloop.local")]
        assert len(human) == 32
        assert f"{labelstudio.url}/projects/{project.id}/data" in out and "scripts/demo --stop" in out
    finally:
        stopped = runner.invoke(app, ["demo", "--stop"])
    assert "backend" in stopped.output and "mlflow-ui" in stopped.output, stopped.output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{backend_port}/health", timeout=5)
