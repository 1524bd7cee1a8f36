"""The champion a server serves: follows ``models:/NAME@champion`` and swaps new versions in atomically."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable

from mlproject.serving.champion import Champion, load_champion, no_champion_message, resolve_champion

logger = logging.getLogger("alloop.serving")


class ChampionHolder:
    """Follows ``models:/NAME@champion``; hands out the current (model, ref) pair without blocking on loads.

    ``snapshot()`` is one attribute read: a request that took it keeps using that model even when
    a newer one is swapped in meanwhile. Only one refresh runs at a time (in a worker thread),
    so a slow load never runs twice and never holds up ``/health``.
    """

    def __init__(self, model_name: str, refresh_seconds: float = 30.0, *,
                 resolver: Callable[[str], Any] | None = None, loader: Callable[[Any], Champion] | None = None,
                 clock: Callable[[], float] = time.monotonic, tracking_uri: str | None = None,
                 on_change: Callable[[Champion], None] | None = None):
        self.model_name = model_name
        self.on_change = on_change  # called (in its own thread) after a new champion is swapped in
        self.refresh_seconds = max(0.0, float(refresh_seconds))
        self._resolver = resolver or resolve_champion
        self._loader = loader or load_champion
        self._clock = clock
        self._tracking_uri = tracking_uri
        self._lock = threading.Lock()
        self._champion: Champion | None = None
        self._target = None  # what the alias pointed at when last read
        self._checked_at = -math.inf
        self._message = "not checked yet"
        self._worker: threading.Thread | None = None

    # -- reading -----------------------------------------------------------------------------------

    def snapshot(self) -> Champion | None:
        return self._champion

    @property
    def message(self) -> str:
        return self._message

    @property
    def target(self):
        return self._target

    def loading(self) -> bool:
        worker = self._worker
        return worker is not None and worker.is_alive()

    def stale(self) -> bool:
        return self._clock() - self._checked_at >= self.refresh_seconds

    # -- refreshing --------------------------------------------------------------------------------

    def start_refresh(self, *, force: bool = False) -> threading.Thread | None:
        """Start a refresh in a worker thread when due (or forced); returns the running worker, if any."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return self._worker
            if not force and not self.stale():
                return None
            self._worker = threading.Thread(target=self._refresh, name="champion-refresh", daemon=True)
            self._worker.start()
            return self._worker

    def current(self, *, force: bool = False, timeout: float | None = None) -> Champion | None:
        """The champion after a due (or forced) refresh, waiting up to ``timeout`` s for it (None: no limit)."""
        worker = self.start_refresh(force=force)
        if worker is not None:
            worker.join(timeout)
        return self.snapshot()

    def peek(self) -> Champion | None:
        """The champion now; starts a due refresh in the background without waiting for it."""
        self.start_refresh()
        return self.snapshot()

    def _refresh(self) -> None:
        name = self.model_name
        try:
            ref = self._resolver(name)
        except Exception as exc:  # registry unreachable: keep serving what we have
            self._message = (f"cannot read the model registry ({self._tracking_uri or 'MLFLOW_TRACKING_URI'}): "
                             f"{exc.__class__.__name__}: {str(exc)[:200]}")
            logger.error("champion check failed: %s", self._message)
            self._checked_at = self._clock()
            return
        self._target = ref
        current = self._champion
        if ref is None:
            if current is not None:
                logger.warning("the champion alias of %s is gone; no longer serving %s", name, current.version)
            self._champion = None
            self._message = (no_champion_message(name, self._tracking_uri or "the tracking store")
                             + "; predictions stay empty until then")
            self._checked_at = self._clock()
            return
        if current is not None and current.ref == ref:
            self._message = f"serving {current.version}"
            self._checked_at = self._clock()
            return
        logger.info("loading champion %s (was %s)", ref, current.version if current else None)
        started = time.monotonic()
        try:
            champion = self._loader(ref)
        except Exception as exc:
            self._message = (f"could not load {ref}: {exc.__class__.__name__}: {str(exc)[:200]}"
                             + (f"; still serving {current.version}" if current else ""))
            logger.error("%s", self._message)
            self._checked_at = self._clock()
            return
        with self._lock:
            self._champion = champion  # the swap: one assignment, readers hold their own reference
        self._message = f"serving {champion.version}"
        self._checked_at = self._clock()
        logger.info("champion is now %s (loaded in %.1f s)", champion.version, time.monotonic() - started)
        if self.on_change is not None:
            threading.Thread(target=self.on_change, args=(champion,), name="champion-follow", daemon=True).start()


def watch_champion(holder: ChampionHolder, stop: threading.Event | None = None) -> threading.Thread:
    """Re-read the alias every ``refresh_seconds`` even when no request comes (a daemon thread)."""
    stop = stop or threading.Event()

    def loop():
        while not stop.wait(max(holder.refresh_seconds, 0.5)):
            holder.start_refresh()

    thread = threading.Thread(target=loop, name="champion-watch", daemon=True)
    thread.start()
    return thread
