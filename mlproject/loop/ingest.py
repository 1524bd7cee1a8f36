"""New images become Label Studio tasks with the champion's predictions (``alloop ingest``, ``alloop watch``).

One pass (:meth:`Ingestor.run_once`): list the source (metadata only), let the ledger
(:mod:`mlproject.loop.ingest_ledger`) pick the files that stopped changing, decode each with the
model's own decoder (a file that does not decode is retried, then reported), then, under the
project's ingestion lock:

1. read the tasks created since the last look (task ids only grow), so a file some other process
   turned into a task (another watcher, ``alloop init``'s storage sync) is not created again;
2. create the missing tasks in one bulk import, each holding its file's key in its data, and record
   them in the ledger at once;
3. write their predictions through the one prediction path (:func:`mlproject.loop.scoring.score_tasks`).

Idempotent across restarts and lost ledgers: on start the project's task keys are read once, and a
task created but not yet predicted when a process died is predicted by the next pass. The lock is
not the round lock: a round can take minutes and new files must not wait for it. It is a second
lock of the same kind (:mod:`mlproject.loop.round_lock`, named ``<project key>.ingest``), held for
one pass only, so two watchers or a watcher and ``alloop ingest`` take turns and never create a
task twice. A round that reads the tasks while a pass runs may write a second prediction for a new
task; every round's duplicate check reports (and with ``--repair-duplicates`` removes) it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from integrations import mlflow_registry
from integrations.labelstudio.settings import LabelStudioError
from integrations.labelstudio.tasks import Task
from mlproject.data.decode import BadImageError, decode_image
from mlproject.loop import round_lock
from mlproject.loop.embeddings import EmbeddingCache, cache_path
from mlproject.loop.ingest_ledger import IngestRules, Ledger, ledger_path, load_ledger, save_ledger
from mlproject.loop.project import LoopProject
from mlproject.loop.round_report import SyncError, Timings
from mlproject.loop.scoring import score_tasks
from mlproject.loop.sources import SOURCE_KEY, Source, SourceObject, change_waiter
from mlproject.serving.champion import no_champion_message

log = logging.getLogger("alloop.loop")

IMPORT_BATCH = 1000  # tasks per import request
# Files per pass: a pass holds the lock and predicts before anything is reported, so a large backlog
# goes in slices and the first files of a burst get their predictions without waiting for the last.
MAX_PER_PASS = 100
CHAMPION_CHECK_S = 30.0  # how often a long-running watcher looks for a new champion


@dataclass(frozen=True)
class IngestOptions:
    model_name: str
    state_dir: Path
    rules: IngestRules = field(default_factory=IngestRules)
    batch_size: int = 32
    wait_s: float = 0.0  # for another ingestion of the project to finish its pass
    lease_s: float = round_lock.DEFAULT_LEASE_S


@dataclass
class Burst:
    """What one pass did."""

    listed: int = 0
    created: list[tuple[str, int]] = field(default_factory=list)  # (file, task id)
    found: int = 0  # ready files that already had a task
    predicted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): given up on this pass
    retrying: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): tried again later
    unscored: list[tuple[int, str]] = field(default_factory=list)  # (task id, reason): task made, no prediction
    waiting: list[str] = field(default_factory=list)  # files still changing when a one-off pass ended
    champion: str = ""
    seconds: float = 0.0
    more: bool = False  # files were ready beyond this pass's share
    timings: Timings = field(default_factory=Timings)

    def add(self, other: "Burst") -> None:
        self.listed = other.listed
        self.created += other.created
        self.found += other.found
        self.predicted += other.predicted
        self.failed += other.failed
        self.retrying += other.retrying
        self.unscored += other.unscored
        self.champion = other.champion or self.champion
        self.seconds += other.seconds
        for step, seconds in other.timings.items():
            self.timings[step] = self.timings.get(step, 0.0) + seconds

    @property
    def active(self) -> bool:
        return bool(self.created or self.found or self.predicted or self.failed or self.retrying or self.unscored)

    def lines(self) -> list[str]:
        head = (f"{len(self.created) + self.found} file(s) -> {len(self.created)} new task(s), {self.predicted} "
                f"prediction(s) from {self.champion or 'the champion'}"
                + (f", {self.found} already had a task" if self.found else "") + f" in {self.seconds:.1f} s"
                + (" (" + ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.timings.items()) if v >= 0.05) + ")"
                   if self.timings else ""))
        out = [head]
        out += [f"  retrying {name}: {reason}" for name, reason in self.retrying]
        out += [f"  FAILED {name}: {reason} (left out; fix or replace the file and it is tried again)"
                for name, reason in self.failed]
        out += [f"  still changing, left for the next run: {name}" for name in self.waiting]
        out += [f"  task {task}: no prediction ({reason}); `alloop predict` or the next `alloop sync` retries it"
                for task, reason in self.unscored]
        return out


class Ingestor:
    """Ingestion of one source into one project; keeps what it learnt between passes."""

    def __init__(self, project: LoopProject, source: Source, options: IngestOptions, *,
                 clock: Callable[[], float] = time.time):
        self.project, self.source, self.options, self.clock = project, source, options, clock
        self.path = ledger_path(options.state_dir, project.key, source.description)
        self.ledger: Ledger = load_ledger(self.path, source.description)
        self.index: dict[str, int] = {}  # key -> task id, of the project's tasks read so far
        self.keyed: set[int] = set()  # those of them an ingestion created (their data holds the key)
        self.last_task_id = 0
        self._choices = None
        self._champion_checked = 0.0
        self._started = False

    # -- setting up -------------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Label Studio can show the source's files; the project's task keys read once. Lines to print."""
        lines = []
        served = self.source.ensure_served(self.project.tasks.client, self.project.tasks.project_id)
        if served:
            lines.append(served)
        self._read_new_tasks()
        choices = self._champion()  # loaded now, not when the first files are waiting for it
        lines.append(f"ready: {choices.champion.version} loaded, {len(self.index)} task(s) of the project known")
        lost = [k for k, e in self.ledger.ingested.items() if e.get("by") == "ingest" and k not in self.index]
        if lost:  # deleted in Label Studio: a person's decision, kept (the ledger still holds them)
            lines.append(f"{len(lost)} ingested file(s) no longer have a task (deleted in Label Studio?); they are "
                         f"not created again (remove them from {self.path} to re-ingest)")
        if self.ledger.failed:
            lines.append(f"{len(self.ledger.failed)} file(s) failed before and wait for a new version: "
                         + ", ".join(f.name for f in list(self.ledger.failed.values())[:10]))
        self._started = True
        return lines

    def _read_new_tasks(self) -> list[Task]:
        """Tasks created since the last look (all of them the first time), their keys indexed."""
        image_key = self.project.target.image_value_key
        new = []
        for task in self.project.tasks.task_data(after_id=self.last_task_id):
            new.append(task)
            key = self.source.key_of_task(task.data, image_key)
            if key is not None:
                self.index.setdefault(key, task.id)
            if task.data.get(SOURCE_KEY):
                self.keyed.add(task.id)
        if new:
            self.last_task_id = max(self.last_task_id, max(t.id for t in new))
        return new

    def _champion(self):
        now = time.monotonic()
        if self._choices is None or now - self._champion_checked > CHAMPION_CHECK_S:
            from mlproject.loop.sync import champion_for

            try:
                ref = mlflow_registry.resolve(self.options.model_name, mlflow_registry.CHAMPION)
            except Exception as exc:  # MLflow away for a moment: new files keep the champion they had
                if self._choices is None:
                    raise
                log.warning("could not look for a new champion (%s); predicting with %s meanwhile",
                            str(exc).splitlines()[0] if str(exc) else exc, self._choices.champion.version)
                self._champion_checked = now
                return self._choices
            if ref is None:
                raise SyncError(no_champion_message(self.options.model_name))
            if self._choices is None or str(self._choices.champion.ref) != str(ref):
                self._choices = champion_for(ref, self.project)
                from integrations.labelstudio.project import set_model_version

                set_model_version(self.project.tasks.client, self.project.tasks.project_id,
                                  self._choices.champion.version)
            self._champion_checked = now
        return self._choices

    # -- one pass ---------------------------------------------------------------------------------------

    def run_once(self) -> Burst:
        if not self._started:
            self.start()
        started = time.monotonic()
        burst = Burst()
        objects, _ = self.source.list(None)
        burst.listed = len(objects)
        now = self.clock()
        good = []
        ready = sorted(self.ledger.observe(objects, now, self.options.rules), key=lambda o: (o.stamp, o.key))
        burst.more = len(ready) > MAX_PER_PASS
        for obj in ready[:MAX_PER_PASS]:  # oldest first
            with burst.timings("read"):
                reason = self._unreadable(obj)
            if reason is None:
                good.append(obj)
                continue
            failed = self.ledger.attempt_failed(obj, reason, now, self.options.rules)
            (burst.failed if failed else burst.retrying).append((obj.name, reason))
        if good or self.ledger.unpredicted():
            choices = self._champion()
            burst.champion = choices.champion.version
            with round_lock.hold(f"{self.project.key}.ingest", wait_s=self.options.wait_s,
                                 lease_s=self.options.lease_s, command="ingest") as lock:
                with burst.timings("tasks"):
                    tasks = self._create(good, burst)
                lock.check()
                self._predict(choices, tasks, burst)
        if burst.active:
            save_ledger(self.path, self.ledger)
        burst.seconds = time.monotonic() - started
        return burst

    def _unreadable(self, obj: SourceObject) -> str | None:
        """Why the file cannot be a task yet (None: it decodes as the model will decode it)."""
        try:
            decode_image(self.source.read(obj), source=obj.name)
        except BadImageError as exc:
            return exc.reason
        except OSError as exc:
            return f"cannot read it ({exc.__class__.__name__}: {exc.strerror or exc})"
        return None

    def _create(self, good: list[SourceObject], burst: Burst) -> list[Task]:
        """Tasks for the files without one; the ledger saved before anything else can fail."""
        self._read_new_tasks()
        missing = []
        for obj in good:
            if obj.key in self.index:
                task_id = self.index[obj.key]
                self.ledger.mark_ingested(obj, task_id, by="found-ingested" if task_id in self.keyed else "found")
                burst.found += 1
            else:
                missing.append(obj)
        image_key = self.project.target.image_value_key
        client, project_id = self.project.tasks.client, self.project.tasks.project_id
        for start in range(0, len(missing), IMPORT_BATCH):
            chunk = missing[start : start + IMPORT_BATCH]
            try:
                client.projects.import_tasks(id=project_id, request=[self.source.task_data(o, image_key)
                                                                     for o in chunk])
            except Exception as exc:  # the SDK's error prints response headers: one short line instead
                from integrations.labelstudio.project import sdk_error

                raise LabelStudioError(f"Label Studio refused the tasks for {chunk[0].name} and {len(chunk) - 1} "
                                       f"other file(s) ({sdk_error(exc)}); nothing was ingested from them, run "
                                       "again once it accepts imports") from None
        created = {t.id: t for t in self._read_new_tasks()}
        for obj in missing:
            task_id = self.index.get(obj.key)
            if task_id is None:
                raise SyncError(f"Label Studio accepted a task for {obj.name} but it cannot be found in project "
                                f"{project_id}; run `alloop ingest` again (it checks before creating)")
            self.ledger.mark_ingested(obj, task_id, by="ingest")
            burst.created.append((obj.name, task_id))
        if missing:
            save_ledger(self.path, self.ledger)  # a crash from here on never creates them again
        return [created[i] for _, i in burst.created if i in created]

    def _predict(self, choices, tasks: list[Task], burst: Burst) -> None:
        """Predictions for this pass's new tasks and for those a stopped process created but did not predict."""
        carried = {i: k for i, k in self.ledger.unpredicted().items() if i not in {t.id for t in tasks}}
        if carried:
            old = [Task(i, {}) for i in carried]
            found = {t.id: t for t in self._tasks_by_id(list(carried))}
            old = [found[t.id] for t in old if t.id in found]
            self.project.tasks.refresh_predictions(old)  # written before the stop: not again
            tasks = tasks + old
            gone = set(carried) - set(found)
            self.ledger.mark_predicted(gone)  # deleted meanwhile: nothing to predict
        if not tasks:
            return
        version = choices.champion.version
        cache = EmbeddingCache(cache_path(self.options.state_dir, version, self.project.key))  # fresh: a
        # round may have saved it meanwhile, and this pass must not write an older copy over it
        written, errors = score_tasks(self.project, choices, tasks, need_embedding=set(), cache=cache,
                                      batch_size=self.options.batch_size, progress=False, timings=burst.timings)
        burst.predicted += written
        self.ledger.mark_predicted({t.id for t in tasks if t.id not in errors})
        for task_id, reason in sorted(errors.items()):
            burst.unscored.append((task_id, reason))
        self.ledger.mark_predicted(set(errors))  # reported; `alloop predict` / `alloop sync` take them over

    def _tasks_by_id(self, ids: list[int]) -> list[Task]:
        return self.project.tasks.task_data(ids=ids)

    # -- many passes ------------------------------------------------------------------------------------

    def watch(self, *, interval_s: float, on_burst: Callable[[Burst], None], stop: Callable[[], bool],
              on_busy: Callable[[str], None] | None = None) -> None:
        """Passes until ``stop()`` (checked after each): woken by file events where the source has them,
        else every ``interval_s``."""
        wake = change_waiter(self.source, interval_s)
        while True:  # one pass at least, however soon stop() says stop
            try:
                burst = self.run_once()
            except round_lock.RoundBusy as exc:  # another pass holds the lock: the next look retries
                if on_busy:
                    on_busy(str(exc))
                burst = None
            except LabelStudioError as exc:  # down or restarting: a watcher outlives that; the next
                if on_busy:                  # pass finds whatever this one did (keys are in the tasks)
                    on_busy(f"{exc} (retrying every {interval_s:g} s)")
                burst = None
            if burst is not None and burst.active:
                on_burst(burst)
            if stop():
                return
            if burst is not None and burst.more:
                continue  # a backlog: the next slice at once
            # pending files are looked at again soon: they settle within settle_s
            soon = self.options.rules.settle_s if self.ledger.pending else interval_s
            wake(min(max(soon, 0.05), interval_s))


def ingest_folder_once(project: LoopProject, source: Source, options: IngestOptions, *, max_wait_s: float,
                       say: Callable[[str], None]) -> Burst:
    """``alloop ingest``: passes until every file seen is ingested or given up on, or ``max_wait_s`` passed
    (files that are still changing then are left for the next run, and named)."""
    ingestor = Ingestor(project, source, options)
    for line in ingestor.start():
        say(line)
    total = Burst()
    deadline = time.monotonic() + max_wait_s
    while True:
        burst = ingestor.run_once()
        total.add(burst)
        pending = ingestor.ledger.pending
        if not pending or (not burst.more and time.monotonic() >= deadline):  # a backlog is never cut short
            break
        soonest = min(p.ready_at(options.rules) for p in pending.values()) - ingestor.clock()
        time.sleep(min(max(soonest, 0.05), max(deadline - time.monotonic(), 0.05)))
    settled = {name for name, _ in total.failed + total.created}  # the last word on them is said
    total.retrying = [(n, r) for n, r in total.retrying if n not in settled]
    total.waiting = sorted(p.name for p in ingestor.ledger.pending.values())
    return total


def watch_folder(project: LoopProject, source: Source, options: IngestOptions, *, interval_s: float,
                 say: Callable[[str], None], stop: Callable[[], bool]) -> None:
    """``alloop watch``: a line per pass that did something, until ``stop()``."""
    ingestor = Ingestor(project, source, options)
    for line in ingestor.start():
        say(line)
    busy_said = []

    def on_busy(message: str) -> None:
        if message not in busy_said:  # once, not at every look
            say(f"waiting: {message}")
            busy_said.append(message)

    def on_burst(burst: Burst) -> None:
        busy_said.clear()
        for line in burst.lines():
            say(line)

    ingestor.watch(interval_s=interval_s, on_burst=on_burst, stop=stop, on_busy=on_busy)
