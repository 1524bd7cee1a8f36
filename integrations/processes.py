"""Background servers alloop starts for the user (Label Studio, the demo's backend and MLflow UI).

Each one runs detached in its own session (so it outlives the command that started it and can be
stopped as a whole process group), writes to a log file, and is recognised later by its pid plus a
marker in its command line (pids get recycled). Nothing here knows about Label Studio.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import requests

from integrations.files import atomic_write

LOOPBACK = "127.0.0.1"
STOP_GRACE_SECONDS = 10.0


class WaitFailed(RuntimeError):
    """A started server never answered: it exited (``exited``) or ran out of time. The message ends
    with the last lines of its log."""

    def __init__(self, message: str, *, exited: bool):
        super().__init__(message)
        self.exited = exited


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when something listens on host:port (or the port cannot be bound there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR ignores TIME_WAIT leftovers, like Django's server does, but not listeners.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (for tests and parallel servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def spawn(
    command: Sequence[str],
    *,
    log: Path,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
    append: bool = False,
) -> int:
    """Start `command` in a session of its own, output to `log`; its pid (also its process group)."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a" if append else "w") as out:
        process = subprocess.Popen(
            [str(part) for part in command],
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the command, and terminate() stops it whole
        )
    return process.pid


def log_tail(log: Optional[Path], lines: int = 30) -> str:
    if log is None or not Path(log).exists():
        return f"({log or 'no log'} is missing)"
    return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])


def _reap(pid: int) -> bool:
    """Reap pid if it is our exited child. True while it is our child and cannot be reaped yet.

    A server started by this very process (tests, the demo) stays a zombie, "alive" to os.kill,
    until reaped; a multi-threaded one shows as a zombie before its last threads are gone.
    """
    try:
        reaped_pid, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child (or already reaped): init takes care of it
    return reaped_pid == 0


def is_ours(pid: Optional[int], *markers: str) -> bool:
    """True when pid runs (not a zombie) and its command line contains one of `markers` (any
    command line when none are given), so a recycled pid of something else is not taken for ours."""
    if not pid:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False  # gone, or someone else's process: a recycled pid
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no procfs (macOS): trust the pid
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return not markers or any(marker in cmdline for marker in markers)


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc_root = Path("/proc")
    if not proc_root.exists():
        return True
    # killpg also "finds" zombies; only members that still run count.
    for stat in proc_root.glob("[0-9]*/stat"):
        try:
            stat_fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat_fields[2]) == pgid and stat_fields[0] != "Z":
            return True
    return False


def _signal(pid: int, sig: int, *, group: bool) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except ProcessLookupError:
        pass  # exited meanwhile


def terminate(pid: int, grace: float = STOP_GRACE_SECONDS) -> str:
    """SIGTERM pid's process group, SIGKILL it after `grace` seconds. Says what happened.

    Only a group pid leads (as spawn() makes it) is signalled whole; anything else (never our own
    group) is signalled alone.
    """
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return "already gone"
    group = pgid == pid and pgid != os.getpgid(0)
    _signal(pid, signal.SIGTERM, group=group)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = _group_alive(pid) if group else is_ours(pid)
        if not alive and not _reap(pid):  # also leave no zombie behind in our own process
            return "stopped (SIGTERM)"
        time.sleep(0.2)
    _signal(pid, signal.SIGKILL, group=group)
    time.sleep(0.5)
    _reap(pid)
    return f"killed (SIGKILL after {grace:.0f} s)"


def answers(response: requests.Response) -> bool:
    """Any answer but a server error: the server is up."""
    return response.status_code < 500


def wait_http(
    url: str,
    *,
    timeout: float,
    pid: Optional[int] = None,
    log: Optional[Path] = None,
    what: str = "the server",
    ready: Callable[[requests.Response], bool] = answers,
    interval: float = 1.0,
    on_wait: Optional[Callable[[float], None]] = None,
) -> float:
    """Poll `url` until `ready(response)`; the seconds it took (about 0 when it answered at once).

    Raises WaitFailed, with the end of `log`, as soon as `pid` no longer runs or after `timeout`
    seconds. `on_wait(elapsed)` is called after each unanswered poll (progress for the user).
    """
    started = time.monotonic()
    while True:
        try:
            if ready(requests.get(url, timeout=2)):
                return time.monotonic() - started
        except (requests.RequestException, ValueError):  # ValueError: a body that is not the JSON expected
            pass
        elapsed = time.monotonic() - started
        named = f"{what} (pid {pid})" if pid else what
        if pid and not is_ours(pid):
            raise WaitFailed(
                f"{named} exited before it answered {url}. Last lines of {log}:\n{log_tail(log)}", exited=True
            )
        if elapsed > timeout:
            raise WaitFailed(
                f"{named} did not answer {url} within {timeout:.0f} s. Last lines of {log}:\n{log_tail(log)}",
                exited=False,
            )
        if on_wait is not None:
            on_wait(elapsed)
        time.sleep(interval)


class ServiceRecord:
    """The servers one command started and a later one stops (`alloop demo`, then `alloop demo --stop`),
    kept as name -> {pid, marker, url, log} in a JSON file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def entries(self) -> dict[str, dict]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def add(self, name: str, **info) -> None:
        entries = self.entries()
        entries[name] = info
        atomic_write(self.path, json.dumps(entries, indent=2))

    def stop_all(self, stoppers: Mapping[str, Callable[[], str]] = {}) -> list[str]:
        """Stop every recorded server (through `stoppers[name]` where given), forget them; one line each."""
        done = []
        for name, info in self.entries().items():
            if name in stoppers:
                done.append(f"{name}: {stoppers[name]()}")
            elif not is_ours(info.get("pid"), info.get("marker", "")):
                done.append(f"{name} (pid {info.get('pid')}): not running")
            else:
                done.append(f"{name} (pid {info['pid']}): {terminate(info['pid'])}")
        self.path.unlink(missing_ok=True)
        return done
