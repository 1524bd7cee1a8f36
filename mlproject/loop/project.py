"""The Label Studio project a round works on: its tasks, labeling config, bot user and images."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from integrations.labelstudio.images import ImageFetcher, safe_join
from integrations.labelstudio.label_config import ChoicesTarget, LabelConfigError
from integrations.labelstudio.tasks import ProjectTasks, Task


def project_key(url: str, project_id: int) -> str:
    """A stable name for a project in MLflow tags and cache files."""
    host = urlsplit(url).netloc or url
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', host)}.project-{int(project_id)}"


@dataclass
class LoopProject:
    """The Label Studio side of a round: the project, its labeling config, the bot user, images."""

    tasks: ProjectTasks
    target: ChoicesTarget
    bot_id: int
    fetcher: ImageFetcher
    document_root: str | None
    key: str

    def image_url(self, task: Task) -> str | None:
        value = task.data.get(self.target.image_value_key)
        return str(value) if value else None


def open_project(connection, project: str, *, from_name: str | None = None) -> LoopProject:
    """The round's view of a Label Studio project given by id or title (made by ``alloop init``)."""
    from integrations.labelstudio import project as lsp
    from integrations.labelstudio.label_config import parse_choices_target
    from integrations.labelstudio.settings import LabelStudioError

    client = lsp.connect(connection)
    found = [p for p in client.projects.list() if str(p.id) == str(project) or p.title == project]
    if not found:
        raise LabelStudioError(f"no Label Studio project {project!r} at {connection.url} (by id or title); "
                               "create it with `alloop init --images FOLDER --title ...`")
    if len(found) > 1:
        raise LabelStudioError(f"{len(found)} projects are titled {project!r}: pass its id instead "
                               f"({', '.join(str(p.id) for p in found)})")
    details = client.projects.get(id=found[0].id)
    try:
        target = parse_choices_target(details.label_config, from_name)
    except LabelConfigError as exc:
        raise LabelStudioError(f"project {details.id}: {exc}") from None
    bot_id, _ = lsp.ensure_bot_user(client)
    lsp.ensure_views(client, details.id, bot_id)  # the loop's views read the task data it writes
    fetcher = ImageFetcher(connection.document_root, connection.url, connection.api_key, [])
    return LoopProject(ProjectTasks(client, connection.url, details.id, from_name=target.from_name), target, bot_id,
                       fetcher, connection.document_root, project_key(connection.url, details.id))


def local_image_path(project: LoopProject, task: Task, images_dir: Path) -> str:
    """A local file for the task's image: the file itself under the document root, else a downloaded copy."""
    url = project.image_url(task) or ""
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith("/data/local-files") and project.document_root:
        relative = (parse_qs(parts.query).get("d") or [""])[0]
        return str(safe_join(project.document_root, relative))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(parts.path).name or "image")
    target = images_dir / f"{task.id}-{name}"
    if not target.is_file():
        images_dir.mkdir(parents=True, exist_ok=True)
        content = project.fetcher.fetch(url, task_id=task.id)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(content)
        tmp.replace(target)
    return str(target)
