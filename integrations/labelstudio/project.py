"""Thin adapter: the Label Studio project alloop works in, made idempotently.

Every ``ensure_*`` function finds what exists first and creates only what is missing, so
``alloop init`` run twice changes nothing the second time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import requests
from tqdm.auto import tqdm

from integrations.labelstudio.auth import authorization_headers
from integrations.labelstudio.settings import LabelStudioError, load_settings

IMAGE_PATTERN = r"(?i).*\.(png|jpe?g|bmp|tiff?)$"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
BOT_EMAIL = "alloop-bot@alloop.local"
BOT_USERNAME = "alloop-bot"
BACKEND_TITLE = "alloop champion"


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str
    document_root: str | None


def connection_from_env(url: str | None = None, api_key: str | None = None,
                        document_root: str | None = None) -> Connection:
    """Flags, then ``LABEL_STUDIO_URL``/``LABEL_STUDIO_API_KEY``, then ``alloop labelstudio start``'s settings."""
    saved = load_settings()
    url = url or os.environ.get("LABEL_STUDIO_URL") or (saved.url if saved else None)
    api_key = api_key or os.environ.get("LABEL_STUDIO_API_KEY") or (saved.api_key if saved else None)
    document_root = (document_root or os.environ.get("LOCAL_FILES_DOCUMENT_ROOT")
                     or (saved.document_root if saved else None))
    if not url or not api_key:
        raise LabelStudioError(
            "No Label Studio to talk to: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or pass --url/--api-key), "
            "or start a local one with `alloop labelstudio start`."
        )
    return Connection(url.rstrip("/"), api_key, document_root)


def sdk_error(exc: Exception, *, body: bool = True) -> str:
    """An SDK error in one short line: its status and body, never the response headers it carries
    (``str(ApiError)`` prints them, cookies included)."""
    status = getattr(exc, "status_code", None)
    if status is None:
        return f"{exc.__class__.__name__}: {str(exc)[:200]}"
    detail = getattr(exc, "body", None) if body else None
    return f"HTTP {status}" + (f": {str(detail)[:200]}" if detail else "")


def connect(connection: Connection):
    """An SDK client whose token is checked now, so a wrong URL or token fails with advice."""
    from label_studio_sdk.client import LabelStudio

    try:
        requests.get(f"{connection.url}/health", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        raise LabelStudioError(
            f"Label Studio at {connection.url} does not answer ({exc.__class__.__name__}). "
            "Is it running? `alloop labelstudio status` / `alloop labelstudio start`."
        ) from None
    client = LabelStudio(base_url=connection.url, api_key=connection.api_key)
    try:
        client.users.whoami()
    except Exception as exc:  # the SDK raises ApiError (401) or a token-refresh error
        raise LabelStudioError(
            f"Label Studio at {connection.url} refused the API key ({sdk_error(exc, body=False)}). "
            "Use a personal access token from Account & Settings, or `alloop labelstudio env`."
        ) from None
    return client


def image_choices_config(choices: list[str], *, from_name: str = "label", to_name: str = "image",
                         value: str = "image") -> str:
    """An Image + single-choice Choices labeling config."""
    options = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in choices)
    return (
        "<View>\n"
        f"  <Image name={quoteattr(to_name)} value=\"${value}\" zoom=\"true\"/>\n"
        f"  <Choices name={quoteattr(from_name)} toName={quoteattr(to_name)} choice=\"single-radio\" "
        "showInLine=\"true\" required=\"true\">\n"
        f"{options}\n"
        "  </Choices>\n"
        "</View>"
    )


def ensure_project(client, title: str, label_config: str) -> tuple[object, bool]:
    """The project with this title (reused), or a new one."""
    for project in client.projects.list():
        if project.title == title:
            return project, False
    return client.projects.create(title=title, label_config=label_config,
                                  description="Defect inspection with alloop: predictions from the champion model"), True


def is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


# A storage that only lets Label Studio serve a folder's files (``alloop ingest``/``watch`` make the
# tasks): its regex matches no file, so a sync (in the UI, or by anyone) never makes a second task.
SERVE_ONLY_REGEX = "(?!)"


def ensure_local_storage(client, project_id: int, folder: Path, document_root: Path) -> tuple[int, str]:
    """A local-files import storage on ``folder`` (under the server's document root), synced; returns
    its id and ``created``, ``reused`` or ``serve-only`` (a folder ``alloop watch`` owns: not synced)."""
    folder = folder.resolve()
    if folder == document_root.resolve():
        raise LabelStudioError(f"{folder} is the document root itself; Label Studio needs a sub-folder of it")
    existing = [s for s in client.import_storage.local.list(project=project_id) if Path(s.path).resolve() == folder]
    if existing and (existing[0].regex_filter or "") == SERVE_ONLY_REGEX:
        return existing[0].id, "serve-only"
    storage = existing[0] if existing else client.import_storage.local.create(
        project=project_id, path=str(folder), regex_filter=IMAGE_PATTERN, use_blob_urls=True,
        recursive_scan=True, title=f"alloop images: {folder.name}")
    client.import_storage.local.sync(id=storage.id)
    return storage.id, "reused" if existing else "created"


def list_tasks(client, project_id: int, *, fields: str = "all", page_size: int = 100, progress: bool = False):
    """Every task of the project, page by page."""
    pager = client.tasks.list(project=project_id, fields=fields, page_size=page_size)
    for task in tqdm(pager, desc="tasks", unit="task", disable=not progress):
        yield task


def uploaded_name(url: str) -> str:
    """``/data/upload/3/1a2b3c4d-name.png`` -> ``name.png`` (Label Studio prefixes a hash)."""
    name = url.rsplit("/", 1)[-1]
    return re.sub(r"^[0-9a-f]{8}-", "", name)


def upload_images(connection: Connection, client, project_id: int, files: list[Path], *,
                  data_key: str = "image", batch: int = 20) -> int:
    """Upload the files not yet in the project (matched by file name); returns how many were added."""
    present = {uploaded_name(str((t.data or {}).get(data_key, ""))) for t in list_tasks(client, project_id, fields="task_only")}
    missing = [f for f in files if f.name not in present]
    headers = _auth_headers(connection, client)
    for start in tqdm(range(0, len(missing), batch), desc="uploading", unit="batch", disable=not missing):
        chunk = missing[start : start + batch]
        handles = [f.open("rb") for f in chunk]
        try:
            # One distinct form field per file: a repeated field name keeps only one of them.
            form = {f"file{i}": (f.name, h) for i, (f, h) in enumerate(zip(chunk, handles))}
            response = requests.post(f"{connection.url}/api/projects/{project_id}/import", files=form,
                                     headers=headers, timeout=300)
            if response.status_code >= 400:
                raise LabelStudioError(f"uploading {chunk[0].name} and others failed: {response.status_code} "
                                       f"{response.text[:300]}")
        finally:
            for h in handles:
                h.close()
    return len(missing)


def _auth_headers(connection: Connection, client) -> dict:
    """Headers for raw HTTP calls, using the SDK's current access token (PAT) or the legacy token."""
    return authorization_headers(client)


def ensure_ml_backend(client, project_id: int, url: str, *, title: str = BACKEND_TITLE,
                      basic_auth: tuple[str, str] | None = None) -> tuple[int, bool]:
    """Connect the backend at ``url`` unless it already is; Label Studio calls its /health and /setup."""
    for backend in client.ml.list(project=project_id):
        if backend.url.rstrip("/") == url.rstrip("/"):
            return backend.id, False
    kwargs = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]} \
        if basic_auth else {}
    try:
        backend = client.ml.create(project=project_id, url=url, title=title, is_interactive=False, **kwargs)
    except Exception as exc:
        raise LabelStudioError(
            f"Label Studio could not connect the ML backend at {url}: {sdk_error(exc)}. Is it running "
            "(`alloop serve`)? Label Studio must allow local backends (ML_BLOCK_LOCAL_IP=false, "
            "SSRF_PROTECTION_ENABLED=false; `alloop labelstudio start` sets both)."
        ) from None
    return backend.id, True


def view_definitions(bot_user_id: int) -> dict[str, dict]:
    """The saved tabs of the loop. Filters use Label Studio's data-manager columns; the loop writes the
    task data fields they read (``alloop_review_rank``, ``alloop_audit``)."""
    return {
        "Needs review": {
            # The queue `alloop sync` ranked (1 = most useful), while nobody has answered it.
            "filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:data.alloop_review_rank", "operator": "greater", "type": "Number",
                 "value": 0},
                {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
                {"filter": "filter:tasks:cancelled_annotations", "operator": "equal", "type": "Number",
                 "value": 0}]},
            "ordering": ["tasks:data.alloop_review_rank"],
            "columnsDisplayType": {"tasks:data.alloop_review_rank": "Number"},  # numeric, not text, order
        },
        "Auto-labelled": {
            "filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:annotators", "operator": "contains", "type": "List", "value": bot_user_id}]},
            "ordering": ["-tasks:updated_at"],
        },
        "Audit": {
            # Filled by `alloop audit` with a random sample of auto-labels.
            "filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:data.alloop_audit", "operator": "equal", "type": "String", "value": "yes"}]},
            "ordering": ["tasks:id"],
        },
    }


def ensure_views(client, project_id: int, bot_user_id: int) -> list[str]:
    """Create the missing saved views and bring changed ones up to date; returns what it did."""
    existing = {(v.data or {}).get("title"): v for v in client.views.list(project=project_id)}
    done = []
    for title, definition in view_definitions(bot_user_id).items():
        wanted = {"title": title, **definition}
        view = existing.get(title)
        if view is None:
            client.views.create(project=project_id, data=wanted)
            done.append(title)
        elif any((view.data or {}).get(k) != v for k, v in wanted.items()):
            client.views.update(id=view.id, project=project_id, data={**(view.data or {}), **wanted})
            done.append(f"{title} (updated)")
    return done


def ensure_bot_user(client, email: str = BOT_EMAIL) -> tuple[int, bool]:
    """The user machine labels are written as (Label Studio has no 'made by a machine' flag)."""
    for user in client.users.list():
        if (user.email or "").lower() == email.lower():
            return user.id, False
    user = client.users.create(username=BOT_USERNAME, email=email, first_name="alloop",
                               last_name="bot (machine labels)")
    return user.id, True


def set_model_version(client, project_id: int, model_version: str) -> str:
    """Keep the project's model_version equal to the champion's (the data manager's score column uses it).

    Returns "unchanged", "updated" or "pending": Label Studio accepts only a version it has seen,
    from a connected backend or from existing predictions.
    """
    from label_studio_sdk.core.api_error import ApiError

    project = client.projects.get(id=project_id)
    if project.model_version == model_version:
        return "unchanged"
    try:
        client.projects.update(id=project_id, model_version=model_version)
    except ApiError as exc:
        if exc.status_code == 400 and "model_version" in str(exc.body):
            return "pending"
        raise
    return "updated"


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
