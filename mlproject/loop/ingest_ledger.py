"""What ingestion knows about each file, and the decisions made on it (pure, but for load/save).

A file is *pending* from its first listing until it is ingested or given up on. It is read only once
it has stopped changing: the same size and version stamp for ``settle_s`` by this process's clock,
or a modification time at least ``settle_s`` old (files already there at start-up go at once). A
file that does not decode (half-written, or simply broken) is retried ``max_attempts`` times, with
growing pauses, then moved to ``failed`` with the reason: reported, never silently dropped. A failed
file that changes later gets a fresh chance. An ingested file stays one task, whatever happens to it
afterwards.

The ledger is one JSON file per (project, source) in the state dir, written atomically. It is a
cache of Label Studio's own record, not the truth: every task holds its file's key, and ingestion
checks the project's tasks before creating one, so a lost ledger never duplicates a task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from integrations.files import atomic_write
from mlproject.loop.sources import SourceObject

log = logging.getLogger("alloop.loop")

VERSION = 1


@dataclass(frozen=True)
class IngestRules:
    settle_s: float = 1.0  # unchanged this long before a file is read
    max_attempts: int = 3  # decoding attempts at one content before it is reported as failed
    retry_s: float = 2.0  # pause before the next attempt, times the attempts made so far

    def __post_init__(self):
        if self.settle_s < 0 or self.retry_s < 0 or self.max_attempts < 1:
            raise ValueError(f"settle and retry seconds must be >= 0 and attempts >= 1, got {self.settle_s}, "
                             f"{self.retry_s} and {self.max_attempts}")


@dataclass
class Pending:
    size: int
    stamp: float | str
    since: float  # when this size and stamp were first listed (this process's clock, epoch seconds)
    attempts: int = 0
    error: str = ""
    retry_at: float = 0.0
    name: str = ""

    def ready_at(self, rules: IngestRules) -> float:
        """When it may be read next, by the process's clock (a stamp that is an old mtime may make it sooner)."""
        return max(self.since + rules.settle_s, self.retry_at)


@dataclass
class Failed:
    name: str
    reason: str
    attempts: int
    size: int
    stamp: float | str
    at: float


@dataclass
class Ledger:
    source: str
    ingested: dict[str, dict] = field(default_factory=dict)  # key -> {"task": id, "by": "ingest"|"found", ...}
    pending: dict[str, Pending] = field(default_factory=dict)
    failed: dict[str, Failed] = field(default_factory=dict)

    # -- the decisions ----------------------------------------------------------------------------------

    def observe(self, objects: list[SourceObject], now: float, rules: IngestRules, *,
                complete: bool = True) -> list[SourceObject]:
        """Take in a listing; the objects to read now. ``complete``: the listing holds every object,
        so pending ones missing from it were removed (they are forgotten, not failed)."""
        ready, listed = [], set()
        for obj in objects:
            listed.add(obj.key)
            if obj.key in self.ingested:
                continue
            failed = self.failed.get(obj.key)
            if failed is not None:
                if (failed.size, failed.stamp) == (obj.size, obj.stamp):
                    continue
                del self.failed[obj.key]  # rewritten since it failed: a fresh chance
            entry = self.pending.get(obj.key)
            if entry is None or (entry.size, entry.stamp) != (obj.size, obj.stamp):  # new, or still being written
                entry = self.pending[obj.key] = Pending(obj.size, obj.stamp, since=now, name=obj.name)
            if now < entry.retry_at:
                continue
            unchanged_for = now - entry.since
            if isinstance(obj.stamp, (int, float)):
                unchanged_for = max(unchanged_for, now - float(obj.stamp))
            if unchanged_for >= rules.settle_s:
                ready.append(obj)
        if complete:
            for key in [k for k in self.pending if k not in listed]:
                del self.pending[key]
        return ready

    def attempt_failed(self, obj: SourceObject, reason: str, now: float, rules: IngestRules) -> Failed | None:
        """A read or decode of ``obj`` failed: retried later, or (returned) given up on."""
        entry = self.pending.get(obj.key) or Pending(obj.size, obj.stamp, since=now, name=obj.name)
        entry.attempts += 1
        entry.error = reason
        if entry.attempts >= rules.max_attempts:
            self.pending.pop(obj.key, None)
            failed = self.failed[obj.key] = Failed(obj.name, reason, entry.attempts, obj.size, obj.stamp, now)
            return failed
        entry.retry_at = now + rules.retry_s * entry.attempts
        self.pending[obj.key] = entry
        return None

    def mark_ingested(self, obj: SourceObject, task_id: int, *, by: str) -> None:
        """``by``: "ingest" (this ledger's process created the task), "found-ingested" (an ingestion made
        it: another watcher, or this one before a stop that lost the entry) or "found" (anything else,
        e.g. a storage sync; its prediction is left to ``alloop sync``). The first two are predicted."""
        if by not in ("ingest", "found-ingested", "found"):
            raise ValueError(f"unknown origin {by!r}")
        self.pending.pop(obj.key, None)
        self.failed.pop(obj.key, None)
        self.ingested[obj.key] = {"task": int(task_id), "by": by, "size": obj.size, "stamp": obj.stamp,
                                  "predicted": by == "found"}

    def mark_predicted(self, task_ids: set[int]) -> None:
        for entry in self.ingested.values():
            if entry["task"] in task_ids:
                entry["predicted"] = True

    def unpredicted(self) -> dict[int, str]:
        """Tasks an ingestion created whose predictions this one has not written or seen (task id -> key)."""
        return {e["task"]: k for k, e in self.ingested.items() if not e.get("predicted", True)}

    def retrying(self) -> dict[str, Pending]:
        return {k: p for k, p in self.pending.items() if p.attempts}

    # -- on disk ---------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({
            "version": VERSION, "source": self.source, "ingested": self.ingested,
            "pending": {k: asdict(p) for k, p in self.pending.items()},
            "failed": [{"key": k, **asdict(f)} for k, f in sorted(self.failed.items())],
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> "Ledger":
        raw = json.loads(text)
        if raw.get("version") != VERSION:
            raise ValueError(f"ledger version {raw.get('version')!r}, expected {VERSION}")
        failed = {}
        for item in raw.get("failed") or []:
            item = dict(item)
            key = item.pop("key")
            failed[key] = Failed(**item)
        return cls(source, {k: dict(v) for k, v in (raw.get("ingested") or {}).items()},
                   {k: Pending(**v) for k, v in (raw.get("pending") or {}).items()}, failed)


def ledger_path(state_dir, project_key: str, source_description: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", project_key)
    digest = hashlib.sha256(source_description.encode()).hexdigest()[:16]
    return Path(state_dir) / "ingest" / safe / f"{digest}.json"


def load_ledger(path: Path, source: str) -> Ledger:
    """The ledger at ``path``; a missing or unreadable one starts empty (Label Studio is checked anyway)."""
    path = Path(path)
    if not path.is_file():
        return Ledger(source)
    try:
        return Ledger.from_json(path.read_text(), source)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring unreadable ingestion ledger %s (%s): Label Studio's tasks say what exists", path, exc)
        return Ledger(source)


def save_ledger(path: Path, ledger: Ledger) -> None:
    atomic_write(path, ledger.to_json())
