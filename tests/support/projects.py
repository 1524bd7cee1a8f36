"""Label Studio projects for loop tests: made with `alloop init`, read back, annotated by a simulated
person (these helpers writing the synthetic data's true labels through the API)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from typer.testing import CliRunner

from mlproject.cli import app
from mlproject.data.loaders import load_dagm

LOOSE = ["--tau", "0.7", "--cluster-confidence", "0.7", "--cluster-agreement", "0.7", "--clusters", "3"]


def ls_client(settings):
    from label_studio_sdk.client import LabelStudio

    return LabelStudio(base_url=settings.url, api_key=settings.api_key)


def make_project(labelstudio, synthetic_data, n_images: int, tag: str = "") -> tuple[str, dict[str, str]]:
    """Copy images under the document root, `alloop init` a project on them; returns (title, truth by file name)."""
    title = f"sync {tag} {uuid.uuid4().hex[:6]}"
    folder = Path(labelstudio.document_root) / title.replace(" ", "-")
    folder.mkdir(parents=True)
    truth = {}
    for record in sorted(load_dagm(synthetic_data), key=lambda r: r.path)[:n_images]:
        name = f"{Path(record.path).parent.name}-{Path(record.path).name}"
        shutil.copy(record.path, folder / name)
        truth[name] = record.label
    result = CliRunner().invoke(app, ["init", "--images", str(folder), "--title", title])
    assert result.exit_code == 0, result.output
    return title, truth


def project_id(ls, title) -> int:
    return next(p.id for p in ls.projects.list() if p.title == title)


def read(ls, settings, title):
    from integrations.labelstudio.tasks import ProjectTasks

    return ProjectTasks(ls, settings.url, project_id(ls, title)).read(progress=False)


def bot_id(ls) -> int:
    return next(u.id for u in ls.users.list() if u.email == "alloop-bot@alloop.local")


def human_snapshot(tasks, bot) -> list:
    return sorted((a.id, a.task, a.completed_by, a.was_cancelled, json.dumps(a.result, sort_keys=True))
                  for t in tasks for a in t.annotations if a.completed_by != bot)


def file_name(task) -> str:
    return task.data["image"].rsplit("/", 1)[-1]


def queue(ls, title) -> list:
    """The 'Needs review' view, in the order Label Studio shows it."""
    pid = project_id(ls, title)
    view = next(v for v in ls.views.list(project=pid) if v.data["title"] == "Needs review")
    return list(ls.tasks.list(project=pid, view=view.id, fields="task_only"))


def annotate(ls, task_id: int, choice: str | None):
    """The simulated annotator: a choice, or a skip (None)."""
    if choice is None:
        return ls.annotations.create(id=task_id, result=[], was_cancelled=True)
    return ls.annotations.create(id=task_id, result=[{"from_name": "label", "to_name": "image", "type": "choices",
                                                       "value": {"choices": [choice]}}])


def sync(title, *args, state=None):
    result = CliRunner().invoke(app, ["sync", "--project", title, *args] + (["--state-dir", str(state)] if state else []))
    return result


def round_plan(run_id: str) -> dict:
    from integrations import mlflow_rounds

    return mlflow_rounds.load_json(run_id, "plan.json")


def latest_round(title_key):
    from integrations import mlflow_rounds

    return mlflow_rounds.round_runs(title_key)[-1]
