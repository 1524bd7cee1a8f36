"""Where new images come from, for ``alloop ingest`` and ``alloop watch``.

A source lists its objects cheaply (metadata only: a stable key, a size and a version stamp), reads
one object's bytes, and says how a Label Studio task refers to it. :class:`LocalFolderSource` is a
folder under Label Studio's local-files document root. An S3 prefix would be a second
implementation of :class:`Source` (see the README, "New images as they arrive"): key
``s3://bucket/key``, version stamp the ETag, ``list_objects_v2`` pages from a cursor (``StartAfter``
for keys that grow in order), tasks that point at ``s3://...`` and a Label Studio S3 import storage
on the prefix with ``presign`` on, used only to serve the files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from integrations.labelstudio.project import IMAGE_SUFFIXES, SERVE_ONLY_REGEX

SOURCE_KEY = "alloop_source_key"  # the task data field holding the object's key


@dataclass(frozen=True)
class SourceObject:
    """One image as the source lists it. ``stamp`` changes whenever its content may have changed."""

    key: str  # stable across restarts and listings: the one thing a task is matched by
    name: str  # for people: a path or URL
    size: int
    stamp: float | str  # mtime (local), ETag (S3)


class Source(Protocol):
    """What ingestion needs from a place images arrive in."""

    description: str  # names the source in messages and the ledger's file name

    def list(self, cursor: str | None) -> tuple[list[SourceObject], str | None]:
        """Objects that may be new or changed since ``cursor`` (None: all of them), and the next cursor."""

    def read(self, obj: SourceObject) -> bytes:
        """The object's bytes now."""

    def task_data(self, obj: SourceObject, image_key: str) -> dict:
        """The data of the task that shows ``obj``."""

    def key_of_task(self, data: dict, image_key: str) -> str | None:
        """The key of the object a task shows (also for tasks that alloop did not create), else None."""

    def ensure_served(self, client, project_id: int) -> str | None:
        """Make sure Label Studio can show the objects; a line saying what was done, or None."""


class SourceError(RuntimeError):
    """A source that cannot be used as given; the message says what to change."""


def _wanted(name: str) -> bool:
    # dot files are editors' and copiers' temporary files; the suffix filter drops "x.png.part" too
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


class LocalFolderSource:
    """Images in ``folder`` (recursively), which lies under Label Studio's local-files ``document_root``.

    Tasks point at ``/data/local-files/?d=<path under the root>``, as the tasks of a local-files
    storage sync (``alloop init``) do, so those count as already ingested. Listing is a ``scandir``
    walk: a ``stat`` per file, no file is opened (22,000 files: well under a second). The cursor is
    unused: the caller compares listings with its ledger.
    """

    PREFIX = "file:"

    def __init__(self, folder: Path, document_root: str | Path | None):
        if not document_root:
            raise SourceError("Label Studio serves no local files here (no document root known): start it with "
                              "LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT=<root> (as `alloop "
                              "labelstudio start` does) and pass --document-root, or set LOCAL_FILES_DOCUMENT_ROOT")
        self.folder = Path(folder).resolve()
        self.root = Path(document_root).resolve()
        if self.folder == self.root or self.root not in self.folder.parents:
            raise SourceError(f"{self.folder} must be a sub-folder of Label Studio's local-files document root "
                              f"{self.root}: move or link the incoming folder there")
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder} is not a folder: create it, or pass the folder images arrive in")
        self.description = f"folder {self.folder}"

    def _key(self, path: Path) -> str:
        return self.PREFIX + path.relative_to(self.root).as_posix()

    def path_of(self, obj: SourceObject) -> Path:
        return self.root / obj.key[len(self.PREFIX):]

    def list(self, cursor: str | None = None) -> tuple[list[SourceObject], str | None]:
        found: list[SourceObject] = []
        for path, stat in _walk(self.folder):
            found.append(SourceObject(self._key(path), str(path), stat.st_size, stat.st_mtime))
        return found, None

    def read(self, obj: SourceObject) -> bytes:
        return self.path_of(obj).read_bytes()

    def task_data(self, obj: SourceObject, image_key: str) -> dict:
        relative = obj.key[len(self.PREFIX):]
        return {image_key: f"/data/local-files/?d={quote(relative)}", SOURCE_KEY: obj.key}

    def key_of_task(self, data: dict, image_key: str) -> str | None:
        if data.get(SOURCE_KEY):
            return str(data[SOURCE_KEY])
        parts = urlsplit(str(data.get(image_key) or ""))
        if not parts.path.rstrip("/").endswith("/data/local-files"):
            return None
        relative = (parse_qs(parts.query).get("d") or [""])[0].lstrip("/")
        return self.PREFIX + relative if relative else None

    def ensure_served(self, client, project_id: int) -> str | None:
        """A local-files storage covering the folder (Label Studio answers 404 for files outside one)
        that never imports a file of it: a storage sync does not know the tasks alloop made, so an
        importing storage on the folder (``alloop init``'s) is made serve-only, and one on a folder
        above it is named, since a sync of it would import the files a second time."""
        covering = [s for s in client.import_storage.local.list(project=project_id)
                    if Path(s.path).resolve() == self.folder or Path(s.path).resolve() in self.folder.parents]
        for storage in covering:
            if Path(storage.path).resolve() == self.folder:
                if (storage.regex_filter or "") == SERVE_ONLY_REGEX:
                    return None
                # Label Studio validates the whole storage on update: the path goes with the filter
                client.import_storage.local.update(id=storage.id, path=storage.path, project=project_id,
                                                   regex_filter=SERVE_ONLY_REGEX)
                return (f"local-files storage {storage.id} on {self.folder} now serves the files only (it imported "
                        f"them with filter {storage.regex_filter!r}): new files become tasks through `alloop "
                        "ingest`/`watch`, and a Sync of that storage no longer imports any")
        if covering:
            parent = covering[0]
            if (parent.regex_filter or "") == SERVE_ONLY_REGEX:
                return None
            return (f"warning: local-files storage {parent.id} on {parent.path} also imports the files of "
                    f"{self.folder}: do not Sync it in Label Studio (it would make a second task of each file "
                    "ingested here), or set its file filter to match none of them")
        # created, never synced: the tasks are alloop's to create
        storage = client.import_storage.local.create(
            project=project_id, path=str(self.folder), regex_filter=SERVE_ONLY_REGEX, use_blob_urls=True,
            recursive_scan=True, title=f"alloop ingest: {self.folder.name} (serves files only)")
        return f"local-files storage {storage.id} on {self.folder} (serves the files; `alloop ingest` makes the tasks)"


def _walk(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:  # removed while we looked
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):
                        stack.append(Path(entry.path))
                elif entry.is_file() and _wanted(entry.name):
                    yield Path(entry.path), entry.stat()
            except FileNotFoundError:
                continue


def change_waiter(source: Source, interval_s: float) -> Callable[[float], None]:
    """A wait of at most N seconds that ends early when a file under a local folder changes (through
    ``watchfiles`` when it is installed); a plain sleep for other sources."""
    folder = getattr(source, "folder", None)
    try:
        import watchfiles
    except ImportError:
        watchfiles = None
    if folder is None or watchfiles is None:
        return time.sleep
    events = watchfiles.watch(folder, rust_timeout=int(interval_s * 1000), yield_on_timeout=True,
                              debounce=50, step=20)

    def wait(seconds: float) -> None:
        if seconds < interval_s:  # files still settling: look again after that, events or not
            time.sleep(seconds)
        else:  # the next change, or the interval's end (watchfiles then yields an empty set)
            next(events, None)
    return wait
