"""`alloop demo` (the README's main job) through Typer's CliRunner, on a real tracking store."""

import os
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from mlproject.cli import app

pytestmark = pytest.mark.integration


def test_demo_trains_registers_and_promotes_all_three_variants(tracking_uri, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    result = CliRunner().invoke(app, ["demo", "--weights", "none", "--image-size", "32",
                                      "--model-name", "demo-test", "--experiment", "demo-test"])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output
    assert "Champion: demo-test/" in result.output and "mlflow ui --backend-store-uri" in result.output
    client = MlflowClient()
    versions = client.search_model_versions("name='demo-test'")
    assert sorted(v.tags["variant"] for v in versions) == ["finetune", "frozen", "svm"]
    champion = client.get_model_version_by_alias("demo-test", "champion")
    assert f"Champion: demo-test/{champion.version}" in result.output
    runs = client.search_runs([client.get_experiment_by_name("demo-test").experiment_id])
    assert sum(r.data.tags.get("task") == "promote" for r in runs) == 3
