"""The round lock: the staleness policy (pure), and the lease protocol over an in-memory registry
with the same guarantees MLflow's gives (a name is created, renamed or deleted atomically).

The same protocol against a real MLflow store and real `alloop sync` processes is in
tests/integration/mlproject/loop/test_sync_concurrency.py.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from integrations.mlflow_lock import LockRecord
from mlproject.loop import round_lock
from mlproject.loop.round_lock import Holder, LockLost, RoundBusy, RoundLock, describe, stale_reason

NOW = 1_700_000_000.0


# --- the policy ------------------------------------------------------------------------------------------


def holder(**fields) -> Holder:
    base = dict(token="t1", host="builder", machine="boot/pid:[1]", pid=4242, round="3", run_id="abc123",
                started=NOW - 600, heartbeat=NOW - 5, lease_s=120.0)
    return Holder(**{**base, **fields})


def test_a_lock_with_a_fresh_heartbeat_whose_holder_runs_is_not_stale():
    assert stale_reason(holder(), NOW, holder_alive=True, lease_s=120) is None
    assert stale_reason(holder(), NOW, holder_alive=None, lease_s=120) is None  # another machine: heartbeat only


def test_a_lock_is_stale_once_its_heartbeat_is_older_than_the_holders_lease():
    assert stale_reason(holder(heartbeat=NOW - 121), NOW, holder_alive=None, lease_s=120).startswith(
        "its heartbeat is 121 s old (lease 120 s)")
    # the holder's own lease wins over the caller's: it promised to renew within it
    assert stale_reason(holder(heartbeat=NOW - 100, lease_s=60), NOW, holder_alive=None, lease_s=600) is not None
    assert stale_reason(holder(heartbeat=NOW - 100, lease_s=600), NOW, holder_alive=None, lease_s=60) is None
    # a holder that did not say: the caller's lease
    assert stale_reason(holder(heartbeat=NOW - 100, lease_s=0), NOW, holder_alive=None, lease_s=60) is not None


def test_a_lock_whose_process_on_this_machine_is_gone_is_stale_at_once():
    reason = stale_reason(holder(heartbeat=NOW), NOW, holder_alive=False, lease_s=120)
    assert reason == "its process 4242 on builder is gone"


def test_a_heartbeat_from_a_clock_slightly_ahead_is_not_stale():
    assert stale_reason(holder(heartbeat=NOW + 30), NOW, holder_alive=None, lease_s=120) is None


def test_holder_tags_round_trip_and_garbled_tags_read_as_stale():
    h = holder()
    assert Holder.from_tags(h.to_tags()) == h
    garbled = Holder.from_tags({"alloop.lock.pid": "not a pid", "alloop.lock.heartbeat": "soon"})
    assert garbled.pid == 0 and garbled.heartbeat == 0.0
    assert stale_reason(garbled, NOW, holder_alive=None, lease_s=120) is not None


def test_the_busy_message_names_the_running_round_and_how_to_wait():
    line = round_lock.busy_message("ls_8080.project-7", holder(), NOW, waited_s=0, lease_s=120)
    assert "\n" not in line
    for part in ("project ls_8080.project-7 is busy", "`alloop sync` round 3", "(run abc123)", "host builder",
                 "pid 4242", "since 2023-11-14 22:03:20 UTC", "last heartbeat 5 s ago", "`alloop sync --wait SECONDS`",
                 "frees itself 120 s after its last heartbeat"):
        assert part in line, part
    assert "(waited 12 s)" in round_lock.busy_message("k", holder(), NOW, waited_s=12, lease_s=120)
    assert "a round (number not known yet)" in describe(holder(round="", run_id=""), NOW)


def test_pid_alive_knows_this_process_and_a_finished_one():
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert round_lock.pid_alive(round_lock.os.getpid())
    assert not round_lock.pid_alive(finished.pid)
    assert not round_lock.pid_alive(0)


# --- the protocol, over a registry with MLflow's guarantees ---------------------------------------------


class Registry:
    """Registered models by name: create/rename/delete are atomic, names unique (as in MLflow's DB)."""

    def __init__(self):
        self.models: dict[str, dict] = {}
        self.mutex = threading.Lock()

    def create(self, name, tags, description):
        with self.mutex:
            if name in self.models:
                return False
            self.models[name] = dict(tags)
            return True

    def read(self, name):
        with self.mutex:
            tags = self.models.get(name)
            return None if tags is None else LockRecord(name, dict(tags), 0)

    def set_tags(self, name, tags):
        with self.mutex:
            self.models[name].update(tags)

    def rename(self, name, new_name):
        with self.mutex:
            if name not in self.models or new_name in self.models:
                return False
            self.models[new_name] = self.models.pop(name)
            return True

    def delete(self, name):
        with self.mutex:
            return self.models.pop(name, None) is not None


@pytest.fixture
def registry(monkeypatch):
    fake = Registry()
    monkeypatch.setattr(round_lock, "mlflow_lock", fake)
    return fake


def test_a_second_lock_is_refused_while_the_first_is_held_and_taken_once_released(registry):
    first = RoundLock("proj")
    first.acquire(round_hint="1")
    with pytest.raises(RoundBusy) as refused:
        RoundLock("proj").acquire()
    assert "`alloop sync` round 1" in str(refused.value) and f"pid {round_lock.os.getpid()}" in str(refused.value)
    RoundLock("other-project").acquire()  # one lock per project
    first.release()
    assert "alloop-round-lock.proj" not in registry.models
    second = RoundLock("proj")
    second.acquire()
    second.release()


def test_wait_polls_until_the_holder_releases(registry, monkeypatch):
    monkeypatch.setattr(round_lock, "POLL_S", 0.05)
    first = RoundLock("proj")
    first.acquire()
    threading.Timer(0.3, first.release).start()
    started = time.monotonic()
    second = RoundLock("proj")
    asked = []

    def hint():  # "1", "2", ...: one number per try
        asked.append(1)
        return str(len(asked))

    second.acquire(wait_s=10, round_hint=hint)
    assert 0.25 < time.monotonic() - started < 5
    # the hint is asked again at each try: the round that held the lock has moved the number on
    assert len(asked) > 1 and registry.models["alloop-round-lock.proj"]["alloop.lock.round"] == str(len(asked))
    second.release()


def test_wait_gives_up_after_its_time_with_the_running_round_named(registry, monkeypatch):
    monkeypatch.setattr(round_lock, "POLL_S", 0.05)
    first = RoundLock("proj")
    first.acquire(round_hint="4")
    started = time.monotonic()
    with pytest.raises(RoundBusy, match="round 4"):
        RoundLock("proj").acquire(wait_s=0.4)
    assert 0.35 < time.monotonic() - started < 5
    first.release()


def test_a_stale_lock_is_taken_over_and_its_tombstone_removed(registry):
    dead = subprocess.Popen(["true"])
    dead.wait()
    for stale in (holder(token="gone", heartbeat=time.time() - 500),  # another machine, silent too long
                  holder(token="gone", machine=round_lock.machine_id(), pid=dead.pid, heartbeat=time.time())):
        registry.models = {"alloop-round-lock.proj": stale.to_tags()}
        lock = RoundLock("proj")
        lock.acquire()
        assert list(registry.models) == ["alloop-round-lock.proj"]  # no tombstone left behind
        assert registry.models["alloop-round-lock.proj"]["alloop.lock.token"] == lock.holder.token
        lock.release()


def test_a_live_lock_of_another_machine_is_not_taken_over(registry):
    registry.models = {"alloop-round-lock.proj": holder(heartbeat=time.time()).to_tags()}
    with pytest.raises(RoundBusy, match="host builder, pid 4242"):
        RoundLock("proj").acquire()
    assert registry.models["alloop-round-lock.proj"]["alloop.lock.token"] == "t1"


def test_removing_a_lock_that_changed_hands_puts_it_back(registry):
    # judged stale under token "old", but by the time of the rename a live holder ("new") has it
    registry.models = {"alloop-round-lock.proj": holder(token="new").to_tags()}
    assert RoundLock("proj")._remove("old") is False
    assert list(registry.models) == ["alloop-round-lock.proj"]
    assert registry.models["alloop-round-lock.proj"]["alloop.lock.token"] == "new"


def test_a_holder_whose_lock_was_taken_over_stops_at_its_next_step(registry):
    lock = RoundLock("proj", lease_s=0.4)  # a heartbeat every 0.05 s
    lock.acquire()
    steps = []
    guarded = lock.guard(lambda step, info: steps.append(step))
    guarded("predicted", {})
    registry.models["alloop-round-lock.proj"]["alloop.lock.token"] = "someone else"
    deadline = time.monotonic() + 5
    while lock._lost is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(LockLost, match="lost project proj's lock"):
        guarded("planned", {})
    assert steps == ["predicted"]
    lock.release()  # never removes a lock that is not its own
    assert registry.models["alloop-round-lock.proj"]["alloop.lock.token"] == "someone else"


def test_the_heartbeat_renews_the_lock(registry):
    lock = RoundLock("proj", lease_s=0.4)
    lock.acquire()
    first = float(registry.models["alloop-round-lock.proj"]["alloop.lock.heartbeat"])
    deadline = time.monotonic() + 5
    while float(registry.models["alloop-round-lock.proj"]["alloop.lock.heartbeat"]) == first \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert float(registry.models["alloop-round-lock.proj"]["alloop.lock.heartbeat"]) > first
    lock.release()


def test_two_threads_racing_for_one_lock_one_wins(registry):
    barrier, outcomes = threading.Barrier(8), []

    def contend():
        lock = RoundLock("proj")
        barrier.wait()
        try:
            lock.acquire()
            outcomes.append("won")
            winners.append(lock)
        except RoundBusy:
            outcomes.append("refused")

    winners = []
    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]
    winners[0].release()
