"""One round per project at a time: a lease kept in MLflow's model registry.

Two ``alloop sync`` on one project, on one machine or on two that share only the Label Studio and
MLflow servers, would each write the same auto-labels and predictions. The lock is a registered
model named ``alloop-round-lock.<project key>`` (:mod:`integrations.mlflow_lock`: creating a name
that exists fails atomically); its tags say who holds it (host, pid, round, run id, since when) and
a heartbeat a daemon thread renews every ``lease_s / 8`` seconds.

A second sync refuses with a line that names the running round, or with ``wait_s`` polls until the
lock frees. A lock whose holder died does not block forever (a killed sync is resumed by the next
one): it is stale when its heartbeat is older than the holder's lease, or when its holder ran on
this machine and its process is gone. A stale lock is renamed to a unique tombstone first (atomic),
so of several syncs that judged it stale only one removes it, and never a lock that was renewed
meanwhile. A holder whose heartbeat finds the lock no longer its own stops at its next step
(:meth:`RoundLock.check`).

The policy (:func:`stale_reason`, :func:`describe`) is pure; the rest is the adapter's few calls.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from integrations import mlflow_lock

log = logging.getLogger("alloop.loop")

PREFIX = "alloop-round-lock."
TAG = "alloop.lock."
DEFAULT_LEASE_S = 120.0
POLL_S = 2.0


class RoundLockError(RuntimeError):
    """The round cannot run (or go on) under the project's lock; the message says what to do."""


class RoundBusy(RoundLockError):
    """Another round of this project is running."""


class LockLost(RoundLockError):
    """This round's lock was taken over (its heartbeat stopped for longer than the lease)."""


def lock_name(project_key: str) -> str:
    return f"{PREFIX}{project_key}"


# --- the policy (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its tags say. Times are UTC epoch seconds of the holder's clock."""

    token: str = ""
    host: str = "?"
    machine: str = ""  # boot id + pid namespace: where ``pid`` means something
    pid: int = 0
    command: str = "sync"
    round: str = ""
    run_id: str = ""
    started: float = 0.0
    heartbeat: float = 0.0
    lease_s: float = 0.0

    def to_tags(self) -> dict[str, str]:
        return {f"{TAG}{k}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict) -> "Holder":
        """Missing or garbled values read as their defaults (a heartbeat of 0 is stale)."""
        values = {}
        for name, default in asdict(cls()).items():
            raw = tags.get(f"{TAG}{name}")
            try:
                values[name] = type(default)(raw) if raw is not None else default
            except ValueError:
                values[name] = default
        return cls(**values)


def stale_reason(holder: Holder, now: float, *, holder_alive: bool | None, lease_s: float) -> str | None:
    """Why the lock may be taken over, or None while its holder counts as alive.

    ``holder_alive``: whether its process still runs, when it ran on this machine (else None: only
    the heartbeat can tell). The holder's own lease wins over ``lease_s`` (it promised to renew
    within it). Clocks of machines that share the servers are assumed to agree within the lease.
    """
    if holder_alive is False:
        return f"its process {holder.pid} on {holder.host} is gone"
    lease = holder.lease_s if holder.lease_s > 0 else lease_s
    age = now - holder.heartbeat
    if age > lease:
        return f"its heartbeat is {age:.0f} s old (lease {lease:.0f} s)"
    return None


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(holder: Holder, now: float) -> str:
    """The running round, for a message: which round, which run, where, since when."""
    what = f"round {holder.round}" if holder.round else "a round (number not known yet)"
    run = f" (run {holder.run_id})" if holder.run_id else ""
    return (f"`alloop {holder.command}` {what}{run} on host {holder.host}, pid {holder.pid}, since "
            f"{_clock(holder.started)}, last heartbeat {max(now - holder.heartbeat, 0):.0f} s ago")


def busy_message(project_key: str, holder: Holder, now: float, *, waited_s: float, lease_s: float,
                 command: str = "sync") -> str:
    """Why ``alloop COMMAND`` refused, and how to wait (one line)."""
    lease = holder.lease_s if holder.lease_s > 0 else lease_s
    waited = f" (waited {waited_s:.0f} s)" if waited_s >= 1 else ""
    return (f"project {project_key} is busy{waited}: {describe(holder, now)}. One round per project at a time: "
            f"wait for it with `alloop {command} --wait SECONDS`, or run again later; if that process died, its "
            f"lock frees itself {lease:.0f} s after its last heartbeat")


# --- this machine ----------------------------------------------------------------------------------------


def machine_id() -> str:
    """Where a pid means the same process: this boot of this kernel, this pid namespace (containers differ)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"{socket.gethostname()}/{uuid.getnode():x}"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # a killed process nobody has reaped yet is a zombie: gone all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --- the lock ------------------------------------------------------------------------------------------


class RoundLock:
    """A project's round lock: :meth:`acquire`, :meth:`update`, :meth:`check`, :meth:`release`."""

    def __init__(self, project_key: str, *, command: str = "sync", lease_s: float = DEFAULT_LEASE_S,
                 clock: Callable[[], float] = time.time):
        if lease_s <= 0:
            raise ValueError(f"the lock's lease must be positive, got {lease_s}")
        self.project_key, self.name, self.lease_s, self._clock = project_key, lock_name(project_key), lease_s, clock
        self._machine = machine_id()
        self.holder = Holder(token=uuid.uuid4().hex, host=socket.gethostname(), machine=self._machine,
                             pid=os.getpid(), command=command, lease_s=lease_s)
        self._held = False
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking it ------------------------------------------------------------------------------------

    def acquire(self, wait_s: float = 0.0, *, round_hint: str | Callable[[], str] = "") -> None:
        """Take the lock, or raise :class:`RoundBusy` once ``wait_s`` has passed with another round holding it.

        ``round_hint``: the round this one expects to run, for others' messages (a callable is asked at
        each try: after a wait, the round that held the lock has moved the number on)."""
        started = time.monotonic()
        deadline = started + max(wait_s, 0.0)
        quick = 0  # retries at once: the lock was just released or taken over (bounded, then polled)
        while True:
            now = self._clock()
            hint = round_hint() if callable(round_hint) else round_hint
            self.holder = replace(self.holder, round=hint, started=now, heartbeat=now)
            if mlflow_lock.create(self.name, self.holder.to_tags(), self._description()):
                self._held = True
                self._start_heartbeat()
                return
            record = mlflow_lock.read(self.name)
            other = Holder.from_tags(record.tags) if record is not None else None
            if other is not None:
                alive = pid_alive(other.pid) if other.machine == self._machine else None
                reason = stale_reason(other, now, holder_alive=alive, lease_s=self.lease_s)
                if reason is not None and self._remove(other.token):
                    log.warning("took over the stale round lock of project %s: %s (%s)", self.project_key,
                                describe(other, now), reason)
            quick += 1
            if (other is None or reason is not None) and quick <= 10:
                continue
            if time.monotonic() >= deadline:
                if other is None:
                    raise RoundBusy(f"project {self.project_key}'s round lock keeps changing hands; run again")
                raise RoundBusy(busy_message(self.project_key, other, now, waited_s=time.monotonic() - started,
                                             lease_s=self.lease_s, command=self.holder.command))
            time.sleep(max(min(POLL_S, deadline - time.monotonic()), 0.05))

    def _remove(self, token: str) -> bool:
        """Remove the lock if it is still the one held under ``token``; True when removed.

        Renamed away first (atomic): of several processes that judged one lock stale only one gets it,
        and one that was re-created meanwhile is put back, not deleted.
        """
        tombstone = f"{self.name}.stale-{uuid.uuid4().hex[:12]}"
        if not mlflow_lock.rename(self.name, tombstone):
            return False  # gone already, or changed hands
        moved = mlflow_lock.read(tombstone)
        if moved is not None and Holder.from_tags(moved.tags).token == token:
            mlflow_lock.delete(tombstone)
            return True
        if not mlflow_lock.rename(tombstone, self.name):  # someone took the name meanwhile: the renamed
            mlflow_lock.delete(tombstone)                 # holder sees its loss at its next heartbeat
        return False

    def _description(self) -> str:
        return (f"Round lock of project {self.project_key}, held by `alloop {self.holder.command}` on "
                f"{self.holder.host} (pid {self.holder.pid}). Removed when the round ends; stale "
                f"{self.lease_s:.0f} s after its last heartbeat. Not a model.")

    # -- holding it -----------------------------------------------------------------------------------

    def update(self, **fields) -> None:
        """Record facts about the running round on the lock (``round``, ``run_id``)."""
        self.holder = replace(self.holder, **fields)
        self.check()
        mlflow_lock.set_tags(self.name, {f"{TAG}{k}": str(v) for k, v in fields.items()})

    def check(self) -> None:
        """Raise :class:`LockLost` when the heartbeat found the lock no longer this round's."""
        if self._lost is not None:
            raise LockLost(f"this round lost project {self.project_key}'s lock ({self._lost}): it stopped here so "
                           "that two rounds never write at once; run `alloop sync` again (it resumes the round)")

    def guard(self, hook: Callable[[str, dict], None]) -> Callable[[str, dict], None]:
        """``hook`` preceded by :meth:`check`: the round stops at its next step once the lock is lost."""
        def guarded(step: str, info: dict) -> None:
            self.check()
            hook(step, info)
        return guarded

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"round-lock {self.project_key}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        last_renewed = time.monotonic()
        while not self._stop.wait(self.lease_s / 8):
            try:
                record = mlflow_lock.read(self.name)
                if record is None or Holder.from_tags(record.tags).token != self.holder.token:
                    self._lost = "another process removed or took it over"
                    return
                now = self._clock()
                mlflow_lock.set_tags(self.name, {f"{TAG}heartbeat": str(now)})
                self.holder = replace(self.holder, heartbeat=now)
                last_renewed = time.monotonic()
            except Exception as exc:  # MLflow unreachable for a moment: the lease covers that, not more
                if time.monotonic() - last_renewed > self.lease_s * 0.75:
                    silent = time.monotonic() - last_renewed
                    self._lost = f"its heartbeat could not be renewed for {silent:.0f} s: {exc}"
                    return
                log.warning("round lock heartbeat: %s", str(exc).splitlines()[0] if str(exc) else exc)

    # -- giving it back --------------------------------------------------------------------------------

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._held and self._lost is None:
            try:
                self._remove(self.holder.token)
            except Exception as exc:  # never hide the round's own error; the lock goes stale by itself
                log.warning("could not release the round lock of project %s (%s); it frees itself %s s after "
                            "its last heartbeat", self.project_key, exc, int(self.lease_s))
        self._held = False


@contextmanager
def hold(project_key: str, *, wait_s: float = 0.0, lease_s: float = DEFAULT_LEASE_S, command: str = "sync",
         round_hint: str | Callable[[], str] = "") -> Iterator[RoundLock]:
    """The project's round lock for the ``with`` block (released in any case)."""
    lock = RoundLock(project_key, command=command, lease_s=lease_s)
    lock.acquire(wait_s, round_hint=round_hint)
    try:
        yield lock
    finally:
        lock.release()
