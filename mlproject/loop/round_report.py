"""What a round tells its caller: counts, messages, timings, and the error that stops it."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("alloop.loop")


class SyncError(RuntimeError):
    """A round cannot go on; the message says what to do."""


class Timings(dict):
    """Seconds per step of a round, summed over ``with timings("step"): ...`` blocks."""

    @contextmanager
    def __call__(self, step: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[step] = self.get(step, 0.0) + time.perf_counter() - started


@dataclass
class RoundReport:
    round: int
    resumed: bool
    skipped: bool = False
    champion_before: str = ""
    champion_after: str = ""
    counts: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    run_id: str = ""
    timings: Timings = field(default_factory=Timings)

    def say(self, message: str) -> None:
        log.info(message)
        self.messages.append(message)
