"""`alloop ingest` and `alloop watch` against a real Label Studio, a real MLflow store and a tiny real champion.

Idempotence is checked the hard ways: a rerun, a lost ledger, a process stopped between creating
tasks and predicting them, and two ingestions of one folder at once.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlproject.cli import app

pytestmark = pytest.mark.integration

FAST = ["--settle-seconds", "0", "--retry-seconds", "0.05", "--attempts", "2"]


def drop_images(synthetic_data: Path, folder: Path, names: list[str], *, offset: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(synthetic_data.rglob("*.PNG"))
    out = []
    for index, name in enumerate(names):
        target = folder / name
        shutil.copy(sources[(offset + index) % len(sources)], target)
        out.append(target)
    return out


def client_for(settings):
    from label_studio_sdk.client import LabelStudio

    return LabelStudio(base_url=settings.url, api_key=settings.api_key)


def project_tasks(settings, title: str):
    from integrations.labelstudio.tasks import ProjectTasks

    ls = client_for(settings)
    project = next(p for p in ls.projects.list() if p.title == title)
    return ProjectTasks(ls, settings.url, project.id).read(progress=False)


def shown_files(tasks) -> Counter:
    """How many tasks show each file (by the local-files path in the task's image URL)."""
    from urllib.parse import parse_qs, urlsplit

    return Counter((parse_qs(urlsplit(t.data["image"]).query).get("d") or [""])[0] for t in tasks)


def new_project(labelstudio, synthetic_data, tag: str) -> tuple[str, Path]:
    """A project made by `alloop init` on a folder under the document root holding two images."""
    title = f"ingest {tag} {uuid.uuid4().hex[:6]}"
    folder = Path(labelstudio.document_root) / f"incoming-{uuid.uuid4().hex[:8]}"
    drop_images(synthetic_data, folder, ["first-0.png", "first-1.png"])
    made = CliRunner().invoke(app, ["init", "--images", str(folder), "--title", title])
    assert made.exit_code == 0, made.output
    return title, folder


def ingest(folder: Path, title: str, state: Path, *extra: str):
    return CliRunner().invoke(app, ["ingest", "--images", str(folder), "--project", title,
                                    "--state-dir", str(state), *FAST, *extra])


def test_ingest_is_idempotent_across_reruns_and_a_lost_ledger_and_reports_bad_files(
        labelstudio, tiny_champion, synthetic_data, tmp_path):
    champion = str(tiny_champion())
    title, folder = new_project(labelstudio, synthetic_data, "idempotent")
    state = tmp_path / "state"
    drop_images(synthetic_data, folder / "line-2", [f"new-{i}.png" for i in range(4)], offset=5)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    good = next(folder.rglob("new-0.png")).read_bytes()
    (folder / "half.png").write_bytes(good[: len(good) // 2])  # a copy that stopped half way

    first = ingest(folder, title, state)
    assert first.exit_code == 1, first.output
    assert "4 new task(s)" in first.output and "2 already had a task" in first.output
    assert "FAILED" in first.output and "broken.png" in first.output and "half.png" in first.output
    assert "not an image Pillow can read" in first.output and "corrupt or truncated" in first.output
    assert "2 file(s) could not be ingested" in first.output
    tasks = project_tasks(labelstudio, title)
    files = shown_files(tasks)
    assert len(tasks) == 6 and set(files.values()) == {1}  # init's 2 are not created again
    assert not any(name.endswith(("broken.png", "half.png")) for name in files)
    new = [t for t in tasks if "alloop_source_key" in t.data]
    assert len(new) == 4
    assert all(len(t.predictions) == 1 and t.prediction_of(champion) is not None for t in new)
    ledger_file = next((state / "ingest").rglob("*.json"))
    assert '"reason": "not an image' in ledger_file.read_text()

    again = ingest(folder, title, state)
    assert again.exit_code == 0, again.output
    assert "0 new task(s)" in again.output and "2 file(s) failed before" in again.output
    ledger_file.unlink()  # a lost ledger: Label Studio's tasks still say what exists
    lost = ingest(folder, title, state)
    assert "0 new task(s)" in lost.output and "6 already had a task" in lost.output, lost.output
    tasks = project_tasks(labelstudio, title)
    assert len(tasks) == 6 and sum(len(t.predictions) for t in new) == 4

    (folder / "half.png").write_bytes(good)  # the copy finished: ingested now
    fixed = ingest(folder, title, state)
    assert "1 new task(s)" in fixed.output, fixed.output
    tasks = project_tasks(labelstudio, title)
    assert len(tasks) == 7 and set(shown_files(tasks).values()) == {1}
    half = next(t for t in tasks if t.data["image"].endswith("half.png"))
    assert half.prediction_of(champion) is not None


@pytest.mark.parametrize("stop_at", ["save_ledger", "score_tasks"])
def test_a_stop_between_creating_tasks_and_predicting_them_is_finished_by_the_next_pass(
        stop_at, labelstudio, tiny_champion, synthetic_data, tmp_path, monkeypatch):
    from integrations.labelstudio.project import connection_from_env
    from mlproject.loop import ingest as ingest_module
    from mlproject.loop.ingest import IngestOptions, Ingestor
    from mlproject.loop.ingest_ledger import IngestRules
    from mlproject.loop.project import open_project
    from mlproject.loop.sources import LocalFolderSource

    champion = str(tiny_champion())
    title, folder = new_project(labelstudio, synthetic_data, "crash")
    drop_images(synthetic_data, folder, [f"burst-{i}.png" for i in range(3)], offset=9)
    options = IngestOptions(model_name="alloop-defect-classifier", state_dir=tmp_path / "state",
                            rules=IngestRules(settle_s=0.0))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after the import")

    project = open_project(connection_from_env(), title)
    # save_ledger: the tasks exist but no ledger says so; score_tasks: the ledger says they await predictions
    monkeypatch.setattr(ingest_module, stop_at, killed)
    with pytest.raises(KeyboardInterrupt):
        Ingestor(project, LocalFolderSource(folder, project.document_root), options).run_once()
    tasks = project_tasks(labelstudio, title)
    assert len(tasks) == 5 and not any(t.predictions for t in tasks)
    monkeypatch.undo()

    restarted = Ingestor(open_project(connection_from_env(), title),
                         LocalFolderSource(folder, project.document_root), options)
    burst = restarted.run_once()
    assert burst.created == [] and burst.predicted == 3, burst.lines()
    tasks = project_tasks(labelstudio, title)
    assert len(tasks) == 5 and set(shown_files(tasks).values()) == {1}
    ingested = [t for t in tasks if "alloop_source_key" in t.data]
    assert len(ingested) == 3 and all(len(t.predictions) == 1 and t.prediction_of(champion) for t in ingested)
    assert restarted.run_once().predicted == 0  # and not again


def test_two_ingestions_of_one_folder_at_once_create_each_task_once(labelstudio, tiny_champion, synthetic_data,
                                                                   tmp_path):
    from integrations.labelstudio.project import connection_from_env
    from mlproject.loop.ingest import IngestOptions, Ingestor
    from mlproject.loop.ingest_ledger import IngestRules
    from mlproject.loop.project import open_project
    from mlproject.loop.sources import LocalFolderSource

    tiny_champion()
    title, folder = new_project(labelstudio, synthetic_data, "two")
    drop_images(synthetic_data, folder, [f"many-{i}.png" for i in range(12)], offset=3)
    bursts, errors = [], []

    def one(state: Path):
        try:  # separate state dirs: like two machines, each with its own ledger
            options = IngestOptions(model_name="alloop-defect-classifier", state_dir=state,
                                    rules=IngestRules(settle_s=0.0), wait_s=120)
            project = open_project(connection_from_env(), title)
            bursts.append(Ingestor(project, LocalFolderSource(folder, project.document_root), options).run_once())
        except Exception as exc:  # noqa: BLE001  (reported by the assert below)
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(tmp_path / f"state-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    assert sorted(len(b.created) for b in bursts)[1] > 0 and sum(len(b.created) for b in bursts) == 12
    tasks = project_tasks(labelstudio, title)
    assert len(tasks) == 14 and set(shown_files(tasks).values()) == {1}
    assert all(len(t.predictions) == 1 for t in tasks if "alloop_source_key" in t.data)


def test_watch_turns_files_into_tasks_and_names_a_folder_label_studio_cannot_serve(
        labelstudio, tiny_champion, synthetic_data, tmp_path):
    tiny_champion()
    title, folder = new_project(labelstudio, synthetic_data, "watch")
    drop_images(synthetic_data, folder, ["w-0.png", "w-1.png", "w-2.png"], offset=20)
    watched = CliRunner().invoke(app, ["watch", "--images", str(folder), "--project", title, "--state-dir",
                                       str(tmp_path / "state"), "--settle-seconds", "0", "--max-seconds", "1"])
    assert watched.exit_code == 0, watched.output
    assert "5 file(s) -> 3 new task(s), 3 prediction(s)" in watched.output
    tasks = project_tasks(labelstudio, title)
    assert len(tasks) == 5

    outside = tmp_path / "outside"
    outside.mkdir()
    refused = CliRunner().invoke(app, ["watch", "--images", str(outside), "--project", title, "--max-seconds", "1"])
    assert refused.exit_code == 1
    assert "must be a sub-folder of Label Studio's local-files document root" in refused.output


def test_a_folder_without_storage_gets_one_that_serves_files_and_never_imports_them(
        labelstudio, tiny_champion, synthetic_data, tmp_path):
    from integrations.labelstudio import project as lsp
    from integrations.labelstudio.auth import authorization_headers

    tiny_champion()
    ls = client_for(labelstudio)
    title = f"ingest bare {uuid.uuid4().hex[:6]}"
    project, _ = lsp.ensure_project(ls, title, lsp.image_choices_config(["defect", "ok"]))
    folder = Path(labelstudio.document_root) / f"bare-{uuid.uuid4().hex[:8]}"
    drop_images(synthetic_data, folder, ["b-0.png", "b-1.png"], offset=30)
    done = ingest(folder, title, tmp_path / "state")
    assert done.exit_code == 0, done.output
    assert "serves the files" in done.output and "2 new task(s)" in done.output
    tasks = project_tasks(labelstudio, title)
    assert len(tasks) == 2
    import requests

    image = requests.get(f"{labelstudio.url}{tasks[0].data['image']}", headers=authorization_headers(ls), timeout=30)
    on_disk = (folder / tasks[0].data["image"].rsplit("/", 1)[1]).read_bytes()
    assert image.status_code == 200 and image.content == on_disk
    for storage in ls.import_storage.local.list(project=project.id):  # someone presses "Sync" in the UI
        ls.import_storage.local.sync(id=storage.id)
    after_sync = len(project_tasks(labelstudio, title))  # (not inline: an assert would print the settings)
    assert after_sync == 2


def test_ingesting_a_folder_alloop_init_imported_makes_its_storage_serve_only_so_no_sync_duplicates(
        labelstudio, tiny_champion, synthetic_data, tmp_path):
    from integrations.labelstudio.project import SERVE_ONLY_REGEX

    tiny_champion()
    title, folder = new_project(labelstudio, synthetic_data, "init-then-watch")  # init's storage imported 2 files
    ls = client_for(labelstudio)
    project = next(p for p in ls.projects.list() if p.title == title)
    (storage,) = ls.import_storage.local.list(project=project.id)
    assert storage.regex_filter != SERVE_ONLY_REGEX

    drop_images(synthetic_data, folder, ["later-0.png", "later-1.png", "later-2.png"], offset=40)
    done = ingest(folder, title, tmp_path / "state")
    assert done.exit_code == 0, done.output
    assert f"storage {storage.id}" in done.output and "now serves the files only" in done.output
    assert "3 new task(s)" in done.output  # init's two tasks are known, not made again
    assert ls.import_storage.local.get(id=storage.id).regex_filter == SERVE_ONLY_REGEX

    drop_images(synthetic_data, folder, ["late-3.png"], offset=50)
    ls.import_storage.local.sync(id=storage.id)  # someone presses "Sync" in the UI
    again = CliRunner().invoke(app, ["init", "--images", str(folder), "--title", title])  # or runs init again
    assert again.exit_code == 0, again.output
    assert "serves the files only" in again.output and "alloop ingest" in again.output
    counts = shown_files(project_tasks(labelstudio, title))
    assert len(counts) == 5 and set(counts.values()) == {1}  # late-3.png waits for the next ingest
    assert ingest(folder, title, tmp_path / "state").exit_code == 0
    counts = shown_files(project_tasks(labelstudio, title))
    assert len(counts) == 6 and set(counts.values()) == {1}
