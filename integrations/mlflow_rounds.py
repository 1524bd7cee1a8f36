"""Thin adapter: labelling rounds as MLflow runs (experiment ``alloop-rounds``).

A round's run is its ledger: tags say which project and round it is and how far it got
(``alloop.state``), artifacts hold its plan (``plan.json``: the auto-labels and the review queue),
so a killed round is found and resumed, and later commands (``audit``, ``status``) can tell which
round made which machine label. Uses ``MlflowClient`` (no active fluent run), so a round can run
MLflow project entry points while its own run stays open.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from integrations.mlflow_runs import experiment_id

ROUNDS_EXPERIMENT = "alloop-rounds"
STATES = ("started", "planned", "applied", "trained", "complete")


def _escape(value: str) -> str:
    return value.replace("'", "\\'")


def round_runs(project_key: str, experiment: str = ROUNDS_EXPERIMENT) -> list[Run]:
    """Every round run of a project, oldest round first."""
    client = MlflowClient()
    runs = client.search_runs([experiment_id(experiment)],
                              filter_string=f"tags.`alloop.project` = '{_escape(project_key)}'",
                              max_results=5000)
    return sorted(runs, key=lambda r: (int(r.data.tags.get("alloop.round", 0)), r.info.start_time))


def state_of(run: Run) -> str:
    return run.data.tags.get("alloop.state", "started")


def round_number(run: Run) -> int:
    return int(run.data.tags.get("alloop.round", 0))


def upcoming_round(project_key: str, experiment: str = ROUNDS_EXPERIMENT) -> int:
    """The number of the round the next ``alloop sync`` runs: the unfinished one, else the one after the last."""
    runs = round_runs(project_key, experiment)
    if not runs:
        return 1
    return round_number(runs[-1]) + (state_of(runs[-1]) == "complete")


def open_or_new_round(project_key: str, experiment: str = ROUNDS_EXPERIMENT) -> tuple[Run, bool]:
    """The project's unfinished round (resumed: True) or a new one numbered after the last."""
    client = MlflowClient()
    runs = round_runs(project_key, experiment)
    if runs and state_of(runs[-1]) != "complete":
        return runs[-1], True
    number = round_number(runs[-1]) + 1 if runs else 1
    run = client.create_run(experiment_id(experiment), run_name=f"round-{number}",
                            tags={"alloop.project": project_key, "alloop.round": str(number), "alloop.state": "started"})
    return client.get_run(run.info.run_id), False


def set_state(run_id: str, state: str) -> None:
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    MlflowClient().set_tag(run_id, "alloop.state", state)


def set_tags(run_id: str, tags: dict) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))


def log_params(run_id: str, params: dict) -> None:
    client = MlflowClient()
    existing = client.get_run(run_id).data.params
    for key, value in params.items():
        if key not in existing:  # a resumed round keeps the params it started with
            client.log_param(run_id, key, str(value)[:500])


def log_metrics(run_id: str, metrics: dict) -> None:
    client = MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))


def log_json(run_id: str, obj, artifact_file: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text(json.dumps(obj, indent=1, sort_keys=True))
        parent = str(Path(artifact_file).parent)
        MlflowClient().log_artifact(run_id, str(path), None if parent == "." else parent)


def load_json(run_id: str, artifact_file: str):
    """The JSON artifact, or None when the run has none."""
    client = MlflowClient()
    parent = str(Path(artifact_file).parent)
    names = {f.path for f in client.list_artifacts(run_id, None if parent == "." else parent)}
    if artifact_file not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, artifact_file, tmp)).read_text())


def log_file(run_id: str, path, artifact_path: str | None = None) -> None:
    MlflowClient().log_artifact(run_id, str(path), artifact_path)


def finish(run_id: str) -> None:
    set_state(run_id, "complete")
    MlflowClient().set_terminated(run_id, "FINISHED")


def get_setting(project_key: str, name: str, experiment: str = ROUNDS_EXPERIMENT) -> str | None:
    """A per-project loop setting kept on the rounds experiment (e.g. the tau an audit raised)."""
    client = MlflowClient()
    tags = client.get_experiment(experiment_id(experiment)).tags
    return tags.get(f"alloop.{name}:{project_key}")


def set_setting(project_key: str, name: str, value, experiment: str = ROUNDS_EXPERIMENT) -> None:
    client = MlflowClient()
    client.set_experiment_tag(experiment_id(experiment), f"alloop.{name}:{project_key}", str(value))


def log_audit(project_key: str, metrics: dict, record: dict, experiment: str = ROUNDS_EXPERIMENT) -> str:
    """An audit as its own finished run (not a round: it carries no ``alloop.project`` tag)."""
    client = MlflowClient()
    run = client.create_run(experiment_id(experiment), run_name="audit",
                            tags={"alloop.audit_project": project_key})
    log_metrics(run.info.run_id, metrics)
    log_json(run.info.run_id, record, "audit.json")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
