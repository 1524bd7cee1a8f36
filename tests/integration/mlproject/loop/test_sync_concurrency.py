"""One round per project at a time: `alloop sync` against a real Label Studio and a real MLflow store.

Two syncs on one project share only the Label Studio and MLflow servers (here: separate processes,
or threads, on one machine; a holder on "another machine" is a lock whose tags name another one).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlproject.cli import app
from tests.support.projects import LOOSE, bot_id, ls_client, make_project, project_id, read

pytestmark = pytest.mark.integration

ALLOOP = str(Path(sys.executable).parent / "alloop")


def key_of(labelstudio, title) -> str:
    from mlproject.loop.project import project_key

    return project_key(labelstudio.url, project_id(ls_client(labelstudio), title))


def lock_of(key):
    from integrations import mlflow_lock
    from mlproject.loop.round_lock import Holder, lock_name

    record = mlflow_lock.read(lock_name(key))
    return None if record is None else Holder.from_tags(record.tags)


def assert_nothing_written_twice(labelstudio, title):
    """No task with two live bot annotations, none with two predictions of one model version."""
    ls = ls_client(labelstudio)
    bot = bot_id(ls)
    for task in read(ls, labelstudio, title):
        machine = [a for a in task.annotations if a.completed_by == bot and not a.was_cancelled]
        versions = [p.model_version for p in task.predictions]
        assert len(machine) <= 1, (task.id, machine)
        assert len(versions) == len(set(versions)), (task.id, versions)


def cli_env(tracking_uri) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONUNBUFFERED": "1"}


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")


def test_two_syncs_started_together_write_once_and_the_loser_names_the_running_round(
        labelstudio, tiny_champion, synthetic_data, tracking_uri, tmp_path):
    from integrations import mlflow_rounds

    champion = tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 20, "together")
    key = key_of(labelstudio, title)
    command = [ALLOOP, "sync", "--project", title, *LOOSE, "--budget", "5", "--state-dir", str(tmp_path / "state")]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env(tracking_uri), cwd=tmp_path) for _ in range(2)]
    outputs = [proc.communicate(timeout=900) for proc in procs]

    codes = [proc.returncode for proc in procs]
    assert sorted(codes) == [0, 1], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert "Round 1" in outputs[winner][0], outputs[winner]
    lines = [line for line in (outputs[loser][0] + outputs[loser][1]).splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one clear line, no traceback
    run = mlflow_rounds.round_runs(key)[-1]
    assert lines[0].startswith(f"Error: project {key} is busy: `alloop sync` round 1"), lines[0]
    assert f"pid {procs[winner].pid}" in lines[0] and f"host {socket.gethostname()}" in lines[0]
    assert "`alloop sync --wait SECONDS`" in lines[0]
    assert run.info.run_id in lines[0] or "round 1 on host" in lines[0]  # the run, once it was opened

    assert_nothing_written_twice(labelstudio, title)
    assert len(mlflow_rounds.round_runs(key)) == 1 and mlflow_rounds.state_of(run) == "complete"
    assert all(t.prediction_of(str(champion)) is not None for t in read(ls_client(labelstudio), labelstudio, title))
    assert lock_of(key) is None  # released


def test_a_sync_started_during_a_round_is_refused_and_with_wait_runs_after_it(labelstudio, tiny_champion,
                                                                              synthetic_data, tmp_path):
    from integrations import mlflow_rounds
    from integrations.labelstudio.project import connection_from_env
    from mlproject.loop.policy import PolicyConfig
    from mlproject.loop.round_lock import RoundBusy
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 12, "wait")
    key = key_of(labelstudio, title)
    options = SyncOptions(model_name="alloop-defect-classifier", state_dir=tmp_path / "state", progress=False,
                          policy=PolicyConfig(tau=0.7, cluster_confidence=0.7, cluster_agreement=0.7, n_clusters=3,
                                              human_budget=4))
    connection = connection_from_env()
    in_round, go_on, reports, errors = threading.Event(), threading.Event(), {}, []

    def hold_at_predicted(step, info):
        if step == "predicted":
            in_round.set()
            assert go_on.wait(300)

    def run(name, **kw):
        try:
            reports[name] = run_round(open_project(connection, title), kw.pop("opts", options), **kw)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    first = threading.Thread(target=run, args=("first",), kwargs={"hook": hold_at_predicted})
    first.start()
    assert in_round.wait(600), errors
    with pytest.raises(RoundBusy) as refused:
        run_round(open_project(connection, title), options)
    running = mlflow_rounds.round_runs(key)[-1]
    message = str(refused.value)
    assert f"`alloop sync` round 1 (run {running.info.run_id}) on host {socket.gethostname()}, pid {os.getpid()}" \
        in message, message

    from dataclasses import replace

    waiter = threading.Thread(target=run, args=("waiter",), kwargs={"opts": replace(options, wait_s=600)})
    waiter.start()
    time.sleep(3)
    assert waiter.is_alive() and "waiter" not in reports  # waiting, not writing
    go_on.set()
    first.join(600)
    waiter.join(600)
    assert not errors, errors
    assert reports["first"].round == 1 and not reports["first"].skipped
    assert reports["waiter"].skipped and "nothing changed since round 1" in reports["waiter"].messages[-1]
    assert_nothing_written_twice(labelstudio, title)
    assert lock_of(key) is None


def test_a_killed_sync_leaves_a_lock_the_next_sync_takes_over_and_resumes(labelstudio, tiny_champion,
                                                                          synthetic_data, tracking_uri, tmp_path):
    from integrations import mlflow_rounds

    tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 20, "killed")
    key = key_of(labelstudio, title)
    state = ["--state-dir", str(tmp_path / "state")]
    proc = subprocess.Popen([ALLOOP, "sync", "--project", title, *LOOSE, *state], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli_env(tracking_uri), cwd=tmp_path)
    def round_opened():
        holder = lock_of(key)
        return holder if holder is not None and holder.run_id else None

    try:
        held = wait_for(round_opened, 600, "the round's lock, with its run")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    assert held.pid == proc.pid and held.round == "1"
    assert lock_of(key) is not None  # a killed process releases nothing

    again = CliRunner().invoke(app, ["sync", "--project", title, *LOOSE, *state])
    assert again.exit_code == 0, again.output
    assert "Round 1 (resumed)" in again.output, again.output
    assert lock_of(key) is None and mlflow_rounds.state_of(mlflow_rounds.round_runs(key)[-1]) == "complete"
    assert_nothing_written_twice(labelstudio, title)


def test_another_machines_live_lock_refuses_and_its_stale_lock_is_taken_over(labelstudio, tiny_champion,
                                                                             synthetic_data, tmp_path):
    from integrations import mlflow_lock
    from mlproject.loop.round_lock import Holder, lock_name

    tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 12, "foreign")
    key = key_of(labelstudio, title)
    other = Holder(token="elsewhere", host="labeller-2", machine="another-boot/pid:[7]", pid=31337, round="5",
                   run_id="f00dfeed", started=time.time() - 60, heartbeat=time.time(), lease_s=120)
    assert mlflow_lock.create(lock_name(key), other.to_tags(), "a round on another machine")
    state = ["--state-dir", str(tmp_path / "state")]

    refused = CliRunner().invoke(app, ["sync", "--project", title, *state])
    assert refused.exit_code == 1
    assert [line for line in refused.output.splitlines() if line.strip()] == [refused.output.strip()]
    assert "`alloop sync` round 5 (run f00dfeed) on host labeller-2, pid 31337" in refused.output

    started = time.monotonic()
    waited = CliRunner().invoke(app, ["sync", "--project", title, "--wait", "3", *state])
    assert waited.exit_code == 1 and "(waited 3 s)" in waited.output, waited.output
    assert 3 <= time.monotonic() - started < 60
    assert lock_of(key).token == "elsewhere"  # a live lock is never taken

    mlflow_lock.set_tags(lock_name(key), {"alloop.lock.heartbeat": str(time.time() - 121)})  # it went silent
    taken = CliRunner().invoke(app, ["sync", "--project", title, *LOOSE, *state])
    assert taken.exit_code == 0 and "Round 1" in taken.output, taken.output
    assert lock_of(key) is None
    from mlflow import MlflowClient

    assert not [m.name for m in MlflowClient().search_registered_models() if m.name.startswith(lock_name(key))]


def test_a_round_whose_lock_was_taken_over_stops_before_writing_labels(labelstudio, tiny_champion,
                                                                       synthetic_data, tmp_path):
    from integrations import mlflow_lock
    from integrations.labelstudio.project import connection_from_env
    from mlproject.loop.policy import PolicyConfig
    from mlproject.loop.round_lock import Holder, LockLost, lock_name
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 12, "lost")
    key = key_of(labelstudio, title)
    options = SyncOptions(model_name="alloop-defect-classifier", state_dir=tmp_path / "state", progress=False,
                          lease_s=2.0, policy=PolicyConfig(tau=0.7, cluster_confidence=0.7, cluster_agreement=0.7,
                                                           n_clusters=3))
    usurper = Holder(token="usurper", host="labeller-2", machine="another-boot/pid:[7]", pid=1, round="1",
                     started=time.time(), heartbeat=time.time(), lease_s=120)

    def taken_over_after_predicting(step, info):
        if step == "predicted":  # as if this process had hung past its lease and another took the lock
            mlflow_lock.delete(lock_name(key))
            assert mlflow_lock.create(lock_name(key), usurper.to_tags(), "another round")
            time.sleep(1.5)  # several heartbeats (every 0.25 s)

    with pytest.raises(LockLost, match="run `alloop sync` again"):
        run_round(open_project(connection_from_env(), title), options, hook=taken_over_after_predicting)
    ls = ls_client(labelstudio)
    bot = bot_id(ls)
    assert not [a for t in read(ls, labelstudio, title) for a in t.annotations if a.completed_by == bot]
    assert lock_of(key).token == "usurper"  # the loser never removes the new holder's lock
