"""`alloop init` against a real Label Studio server and a real MLflow registry."""

import shutil

import pytest
from typer.testing import CliRunner

from mlproject.cli import app

pytestmark = pytest.mark.integration


def copy_images(source_root, target, n):
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source_root.rglob("0*.PNG"))[:n]:
        shutil.copy(path, target / f"{path.parent.name}-{path.name}")
    return target


def client_for(settings):
    from label_studio_sdk.client import LabelStudio

    return LabelStudio(base_url=settings.url, api_key=settings.api_key)


def test_init_twice_creates_everything_once(labelstudio, tiny_champion, synthetic_data, tmp_path):
    champion = tiny_champion()
    from pathlib import Path

    images = copy_images(synthetic_data, Path(labelstudio.document_root) / "init-twice", 5)
    runner = CliRunner()
    first = runner.invoke(app, ["init", "--images", str(images), "--title", "init twice"])
    assert first.exit_code == 0, first.output
    assert "created" in first.output
    assert f"model_version: {champion} once a backend serving it is connected" in first.output
    second = runner.invoke(app, ["init", "--images", str(images), "--title", "init twice"])
    assert second.exit_code == 0, second.output
    assert "'init twice': reused" in second.output and "views created: none" in second.output

    ls = client_for(labelstudio)
    projects = [p for p in ls.projects.list() if p.title == "init twice"]
    assert len(projects) == 1
    project = ls.projects.get(id=projects[0].id)
    tasks = list(ls.tasks.list(project=project.id, fields="all"))
    assert len(tasks) == 5
    assert all(str(t.data["image"]).startswith("/data/local-files/?d=init-twice/") for t in tasks)
    titles = sorted((v.data or {}).get("title") for v in ls.views.list(project=project.id))
    assert titles == ["Audit", "Auto-labelled", "Needs review"]
    bots = [u for u in ls.users.list() if u.email == "alloop-bot@alloop.local"]
    assert len(bots) == 1
    assert "<Choice value=\"defect\"/>" in project.label_config


def test_init_uploads_images_the_server_cannot_see_once(labelstudio, tiny_champion, synthetic_data, tmp_path):
    tiny_champion()
    images = copy_images(synthetic_data, tmp_path / "outside-root", 3)
    runner = CliRunner()
    first = runner.invoke(app, ["init", "--images", str(images), "--title", "init upload", "--labels", "defect,ok"])
    assert first.exit_code == 0, first.output
    assert "uploaded 3 new images" in first.output
    shutil.copy(next(images.iterdir()), images / "extra.png")
    second = runner.invoke(app, ["init", "--images", str(images), "--title", "init upload"])
    assert "uploaded 1 new images (3 already there)" in second.output, second.output
    ls = client_for(labelstudio)
    project = next(p for p in ls.projects.list() if p.title == "init upload")
    tasks = list(ls.tasks.list(project=project.id, fields="all"))
    assert len(tasks) == 4 and all("/data/upload/" in t.data["image"] for t in tasks)


def test_init_errors_say_what_to_fix(labelstudio, tracking_uri, synthetic_data, monkeypatch):
    runner = CliRunner()
    no_champion = runner.invoke(app, ["init", "--images", str(synthetic_data), "--title", "x"])
    assert no_champion.exit_code == 1
    assert "has no champion" in no_champion.output and "mlflow run . -e promote" in no_champion.output


def test_init_bad_token_and_server_down(labelstudio, tiny_champion, synthetic_data, monkeypatch):
    tiny_champion()
    runner = CliRunner()
    bad = runner.invoke(app, ["init", "--images", str(synthetic_data), "--api-key", "not-a-token"])
    assert bad.exit_code == 1 and "refused the API key" in bad.output
    assert "headers" not in bad.output and "set-cookie" not in bad.output.lower()  # the SDK's error carries them
    down = runner.invoke(app, ["init", "--images", str(synthetic_data), "--url", "http://127.0.0.1:9"])
    assert down.exit_code == 1 and "does not answer" in down.output
