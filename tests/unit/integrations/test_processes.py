"""Background servers: ports, detached process groups, health waits, records (real subprocesses)."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time

import pytest

from integrations import processes


def _http_server(tmp_path, port):
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    return processes.spawn(command, log=tmp_path / "logs" / "http.log")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return not processes.is_ours(pid)


def test_a_listening_port_is_in_use_and_a_free_one_is_not():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert processes.port_in_use(taken)
    port = processes.free_port()
    assert not processes.port_in_use(port)


def test_spawn_wait_recognise_and_terminate_a_real_server(tmp_path):
    port = processes.free_port()
    pid = _http_server(tmp_path, port)
    try:
        waited = processes.wait_http(f"http://127.0.0.1:{port}/", timeout=60, pid=pid, log=tmp_path / "logs" / "http.log")
        assert waited < 60 and processes.port_in_use(port)
        assert os.getpgid(pid) == pid  # its own group, not ours
        assert processes.is_ours(pid, "http.server")
        assert processes.is_ours(pid, "no-such-marker", "http.server")
        assert not processes.is_ours(pid, "label-studio")  # a recycled pid would look like this
    finally:
        outcome = processes.terminate(pid, grace=10)
    assert outcome == "stopped (SIGTERM)"
    assert _gone(pid) and not processes.port_in_use(port)
    assert processes.terminate(pid) == "already gone"


def test_a_server_that_exits_fails_the_wait_at_once_with_its_log(tmp_path):
    log = tmp_path / "crash.log"
    pid = processes.spawn([sys.executable, "-c", "import sys; sys.exit('bad config: port missing')"], log=log)
    started = time.monotonic()
    with pytest.raises(processes.WaitFailed, match="bad config: port missing") as failure:
        processes.wait_http(f"http://127.0.0.1:{processes.free_port()}/", timeout=60, pid=pid, log=log, what="crashy")
    assert failure.value.exited and "crashy" in str(failure.value) and f"pid {pid}" in str(failure.value)
    assert time.monotonic() - started < 30


def test_a_server_that_never_answers_fails_the_wait_after_the_timeout(tmp_path):
    log = tmp_path / "silent.log"
    pid = processes.spawn([sys.executable, "-u", "-c", "import time; print('migrating'); time.sleep(60)"], log=log)
    ticks = []
    try:
        with pytest.raises(processes.WaitFailed, match="did not answer .* within 1 s") as failure:
            processes.wait_http(f"http://127.0.0.1:{processes.free_port()}/", timeout=1, pid=pid, log=log,
                                interval=0.2, on_wait=ticks.append)
        assert not failure.value.exited and "migrating" in str(failure.value)
        assert ticks and ticks == sorted(ticks)
    finally:
        processes.terminate(pid)


def test_a_group_that_ignores_sigterm_is_killed_whole(tmp_path):
    script = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    log = tmp_path / "stubborn.log"
    pid = processes.spawn([sys.executable, "-c", script], log=log)
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(log.read_text().split()[0])
    assert os.getpgid(child) == pid
    assert processes.terminate(pid, grace=1) == "killed (SIGKILL after 1 s)"
    assert _gone(pid)
    deadline = time.monotonic() + 10  # the orphaned child is reaped by init, not by us
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child)


def test_is_ours_refuses_nothing_and_the_dead():
    assert not processes.is_ours(None)
    assert not processes.is_ours(0)
    assert processes.is_ours(os.getpid(), "pytest", "python")


def test_the_record_stops_what_runs_and_reports_what_does_not(tmp_path):
    port = processes.free_port()
    pid = _http_server(tmp_path, port)
    record = processes.ServiceRecord(tmp_path / "state" / "services.json")
    try:
        processes.wait_http(f"http://127.0.0.1:{port}/", timeout=60, pid=pid)
        record.add("web", pid=pid, marker="-m http.server", url=f"http://127.0.0.1:{port}")
        record.add("impostor", pid=pid, marker="-m mlflow")  # the pid now runs something else
        record.add("special", url="http://127.0.0.1:1")
        assert set(processes.ServiceRecord(record.path).entries()) == {"web", "impostor", "special"}
        done = record.stop_all({"special": lambda: "stopped its own way"})
    finally:
        processes.terminate(pid)
    assert done == [
        f"web (pid {pid}): stopped (SIGTERM)",
        f"impostor (pid {pid}): not running",
        "special: stopped its own way",
    ]
    assert not record.path.exists() and record.entries() == {}
    assert record.stop_all() == []


def test_log_tail_keeps_the_last_lines_and_names_a_missing_log(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert processes.log_tail(log, lines=3) == "line 97\nline 98\nline 99"
    assert str(tmp_path / "missing.log") in processes.log_tail(tmp_path / "missing.log")
