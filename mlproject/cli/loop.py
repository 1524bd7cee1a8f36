"""``alloop sync``, ``alloop status``, ``alloop audit``, ``alloop predict``: the labelling rounds."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from mlproject.cli._app import app, fail, mlflow_errors, require_champion, tracking
from mlproject.cli._policy import (
    CLASS_TAU,
    CLUSTER_AGREEMENT,
    CLUSTER_CONFIDENCE,
    CLUSTERS,
    DIVERSITY,
    DIVERSITY_POOL,
    MAX_AUTO,
    TAU,
    policy_config,
)

DEFAULT_PROJECT = "alloop defect inspection"  # alloop init's default title


def _key_values(items: list[str], what: str) -> dict[str, str]:
    values = {}
    for item in items or []:
        if "=" not in item:
            fail(f"{what} {item!r} must look like name=value")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def _state_dir(value: Path | None) -> Path:
    from mlproject.state import state_dir

    return Path(value) if value else state_dir()


def _open(project: str, url, api_key, document_root, from_name):
    from integrations.labelstudio.project import connection_from_env
    from mlproject.loop.project import open_project

    tracking()
    return open_project(connection_from_env(url, api_key, document_root), project, from_name=from_name)


# Options shared by the loop commands (Typer has no option groups: keep them identical by construction).
PROJECT = typer.Option(DEFAULT_PROJECT, "--project", help="Label Studio project id or title (from `alloop init`)")
MODEL = typer.Option("alloop-defect-classifier", "--model-name", envvar="ALLOOP_MODEL_NAME", help="registered model")
URL = typer.Option(None, "--url", envvar="LABEL_STUDIO_URL", help="Label Studio URL")
API_KEY = typer.Option(None, "--api-key", envvar="LABEL_STUDIO_API_KEY", show_default=False)
DOCROOT = typer.Option(None, "--document-root", envvar="LOCAL_FILES_DOCUMENT_ROOT",
                       help="the server's local-files root (images are then read from disk)")
FROM_NAME = typer.Option(None, "--from-name", help="the <Choices> tag to fill when the config has several")
STATE = typer.Option(None, "--state-dir", envvar="ALLOOP_STATE_DIR", help="caches and manifests (default .alloop)")
WAIT = typer.Option(0.0, "--wait", metavar="SECONDS", help="when another round of this project is running, wait up "
                    "to this long for it (default: refuse at once, naming it)")
LEASE = typer.Option(120.0, "--lease-seconds", envvar="ALLOOP_LOCK_LEASE_S", help="this command's round lock is "
                     "stale (taken over by the next sync) this long after its last heartbeat")


@app.command()
def sync(
    project: str = PROJECT,
    model_name: str = MODEL,
    tau: float = TAU,
    class_tau: str = CLASS_TAU,
    cluster_confidence: float = CLUSTER_CONFIDENCE,
    cluster_agreement: float = CLUSTER_AGREEMENT,
    clusters: int = CLUSTERS,
    max_auto_per_class: str = MAX_AUTO,
    diversity: bool = DIVERSITY,
    diversity_pool: int = DIVERSITY_POOL,
    strategy: str = typer.Option("margin", help="least_confidence | margin | entropy | cluster | random"),
    budget: int = typer.Option(20, help="tasks routed to people per round"),
    no_auto_labels: bool = typer.Option(False, "--no-auto-labels", help="route only; never auto-label"),
    retrain_after: int = typer.Option(50, help="retrain once this many new human labels exist"),
    retrain: bool = typer.Option(False, "--retrain", help="retrain this round whatever the count"),
    force_round: bool = typer.Option(False, "--force-round", help="a new round even if nothing changed"),
    holdout_share: float = typer.Option(0.2, help="share of human-labelled tasks kept out of training to judge "
                                                  "promotion"),
    entry_point: str = typer.Option("", help="MLproject entry point that retrains (default: the champion's own "
                                    "variant, with its run's parameters)"),
    champion_data: bool = typer.Option(True, "--champion-data/--project-labels-only",
                                       help="retrain on the champion's training data plus the project's labels "
                                       "(or on the project's labels alone)"),
    train_param: list[str] = typer.Option([], "--train-param", help="entry point parameter, e.g. epochs=10 "
                                          "(repeatable; the rest is taken from the champion's run)"),
    metric: str = typer.Option("balanced_accuracy", help="promotion metric"),
    min_improvement: float = typer.Option(0.0, help="promotion margin"),
    recall_tolerance: float = typer.Option(0.0, help="allowed drop in defect recall"),
    label_map: list[str] = typer.Option([], "--label-map", help="class=choice when names differ (repeatable)"),
    repair_duplicates: bool = typer.Option(False, "--repair-duplicates", help="delete auto-labels and predictions "
                                           "written twice (the oldest stays; human labels are never touched)"),
    wait: float = WAIT, lease_seconds: float = LEASE,
    url: str = URL, api_key: str = API_KEY, document_root: str = DOCROOT, from_name: str = FROM_NAME,
    state_dir: Path = STATE,
):
    """One round: predict, auto-label the sure, queue the unsure for people, retrain and promote when due."""
    from integrations.labelstudio.settings import LabelStudioError
    from mlproject.loop.round_lock import RoundLockError
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.sync import SyncError, run_round

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    policy = policy_config(tau=tau, class_tau=class_tau, cluster_confidence=cluster_confidence,
                           cluster_agreement=cluster_agreement, clusters=clusters,
                           max_auto_per_class=max_auto_per_class, diversity=diversity, diversity_pool=diversity_pool,
                           auto_label=not no_auto_labels, strategy=strategy, human_budget=budget)
    try:
        options = SyncOptions(model_name=model_name, policy=policy, retrain_after=retrain_after,
                              force_retrain=retrain, force_round=force_round, holdout_share=holdout_share,
                              entry_point=entry_point, champion_data=champion_data,
                              train_params=_key_values(train_param, "--train-param"),
                              metric=metric, min_improvement=min_improvement, recall_tolerance=recall_tolerance,
                              state_dir=_state_dir(state_dir), label_map=_key_values(label_map, "--label-map"),
                              wait_s=wait, lease_s=lease_seconds, repair_duplicates=repair_duplicates)
    except ValueError as exc:
        fail(str(exc))
    require_champion(model_name)
    try:
        with mlflow_errors():
            loop_project = _open(project, url, api_key, document_root, from_name)
            report = run_round(loop_project, options)
    except (LabelStudioError, SyncError, RoundLockError, LookupError) as exc:
        fail(str(exc))
    print_round(report, loop_project)


def print_round(report, loop_project) -> None:
    if report.skipped:  # "nothing changed", after what the duplicates check found
        for message in report.messages:
            typer.echo(message)
        return
    counts = report.counts
    typer.secho(f"Round {report.round}{' (resumed)' if report.resumed else ''}: champion {report.champion_before}"
                + (f" -> {report.champion_after}" if report.champion_after != report.champion_before else ""),
                bold=True)
    rows = [("tasks", "tasks"), ("predictions written", "predicted"), ("unreadable images", "unreadable"),
            ("auto-labelled", "auto_labelled"), ("routed to people", "routed"), ("human labels", "human_labels"),
            ("  held out for promotion", "holdout_labels"), ("new human labels", "new_human_labels"),
            ("retrained", "retrained"), ("promoted", "promoted"), ("auto-labels revoked", "revoked")]
    for title, key in rows:
        if key in counts:
            typer.echo(f"  {title:26} {counts[key]}")
    for message in report.messages:
        typer.echo(f"  - {message}")
    url = loop_project.tasks.url
    typer.echo(f"Review queue: {url}/projects/{loop_project.tasks.project_id}/data (view 'Needs review')\n"
               f"Round record: MLflow experiment 'alloop-rounds', run {report.run_id}")


@app.command()
def predict(
    project: str = PROJECT, model_name: str = MODEL, url: str = URL, api_key: str = API_KEY,
    document_root: str = DOCROOT, from_name: str = FROM_NAME, state_dir: Path = STATE,
    batch_size: int = typer.Option(32, help="images per model call"),
):
    """Make sure every task has a prediction from the current champion (pages through the project)."""
    from integrations.labelstudio.settings import LabelStudioError
    from mlproject.loop.sync import SyncError, predict_project

    ref = require_champion(model_name)
    try:
        with mlflow_errors():
            loop_project = _open(project, url, api_key, document_root, from_name)
            done = predict_project(loop_project, ref, state_dir=_state_dir(state_dir), batch_size=batch_size)
    except (LabelStudioError, SyncError) as exc:
        fail(str(exc))
    tasks, written, errors, state = done.tasks, done.written, done.errors, done.model_version_state
    champion = done.champion
    typer.echo(f"{len(tasks)} tasks: {written} new predictions from {champion.version}, "
               f"{len(tasks) - written - len(errors)} already had one, {len(errors)} unreadable"
               + "".join(f"\n  task {t}: {e}" for t, e in sorted(errors.items())[:20]))
    typer.echo(f"project model_version = {champion.version} ({state})")


@app.command()
def status(
    project: str = PROJECT, model_name: str = MODEL, url: str = URL, api_key: str = API_KEY,
    document_root: str = DOCROOT, from_name: str = FROM_NAME,
):
    """The rounds so far, the champion, label counts by source, and anything written twice."""
    from integrations.labelstudio.settings import LabelStudioError

    try:
        with mlflow_errors():
            loop_project = _open(project, url, api_key, document_root, from_name)
            tasks = loop_project.tasks.read(progress=False)
            _print_status(loop_project, tasks, model_name)
    except LabelStudioError as exc:
        fail(str(exc))


def _print_status(loop_project, tasks, model_name: str) -> None:
    import time

    from integrations import mlflow_lock, mlflow_registry, mlflow_rounds
    from mlproject.loop import round_lock
    from mlproject.loop.duplicates import find_duplicates
    from mlproject.loop.labels import AUDIT_KEY, RANK_KEY, REVOKED_KEY

    runs = mlflow_rounds.round_runs(loop_project.key)
    typer.secho(f"Project {loop_project.tasks.project_id} at {loop_project.tasks.url} ({loop_project.key})", bold=True)
    typer.echo(f"{'round':>5} {'state':9} {'champion':34} {'pred':>5} {'auto':>5} {'queue':>5} {'human':>5} "
               f"{'train':>5} {'promo':>5} {'revok':>5}")
    for run in runs:
        m, t = run.data.metrics, run.data.tags
        change = t.get("alloop.champion_before", "?")
        if t.get("alloop.champion_after") not in (None, change):
            change += f" -> {t['alloop.champion_after'].rsplit('/', 1)[-1]}"
        cells = [int(m.get(k, 0)) for k in ("predicted", "auto_labelled", "routed", "human_labels", "retrained",
                                            "promoted", "revoked")]
        typer.echo(f"{mlflow_rounds.round_number(run):>5} {mlflow_rounds.state_of(run):9} {change:34} "
                   + " ".join(f"{c:>5}" for c in cells))
    if not runs:
        typer.echo("  no rounds yet: run `alloop sync`")
    champion = mlflow_registry.resolve(model_name, mlflow_registry.CHAMPION)
    if champion is None:
        typer.echo(f"Champion: none for {model_name!r}")
    else:
        tags = mlflow_registry.version_tags(champion)
        trained = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(tags.items())
                            if k.startswith("labels_by_source."))
        typer.echo(f"Champion: {champion} ({tags.get('variant', '?')}, round {tags.get('round', '?')}; "
                   f"trained on {trained or 'unknown'})")
    bot = loop_project.bot_id
    human = sum(bool(t.human_annotations(bot)) for t in tasks)
    auto = sum(bool(t.machine_annotations(bot)) and not t.touched_by_people(bot) for t in tasks)
    skipped = sum(bool(t.annotations) and all(a.was_cancelled for a in t.annotations) for t in tasks)
    unlabelled = [t for t in tasks if not t.annotations]
    typer.echo(f"Labels: {len(tasks)} tasks; {human} human, {auto} auto (machine only), {skipped} skipped, "
               f"{len(unlabelled)} unlabelled ({sum(t.data.get(RANK_KEY) is not None for t in unlabelled)} in the "
               f"review queue, {sum(bool(t.data.get(REVOKED_KEY)) for t in unlabelled)} revoked auto-labels); "
               f"{sum(t.data.get(AUDIT_KEY) == 'yes' for t in tasks)} in the audit view")
    duplicates = find_duplicates(tasks, bot, f"{model_name}/")
    if duplicates.found:
        typer.secho(f"Written twice: {duplicates.summary()}; `alloop sync --repair-duplicates` deletes the extras",
                    fg="red")
    tau = mlflow_rounds.get_setting(loop_project.key, "tau")
    typer.echo(f"tau raised by audits: {tau}" if tau else "tau: the sync option (no audit raised it)")
    lock = mlflow_lock.read(round_lock.lock_name(loop_project.key))
    if lock is not None:
        typer.echo(f"Running now: {round_lock.describe(round_lock.Holder.from_tags(lock.tags), time.time())}")


@app.command()
def audit(
    project: str = PROJECT, model_name: str = MODEL,
    sample: int = typer.Option(20, help="auto-labels to add to the 'Audit' view"),
    target: float = typer.Option(0.995, help="auto-label precision the loop must keep"),
    tau: float = typer.Option(0.95, help="the sync tau (raised from here, or from an earlier audit)"),
    seed: int = typer.Option(0), wait: float = WAIT, lease_seconds: float = LEASE,
    url: str = URL, api_key: str = API_KEY, document_root: str = DOCROOT, from_name: str = FROM_NAME,
):
    """Sample auto-labels into the 'Audit' view; from the audited ones, report precision and react."""
    from integrations.labelstudio.settings import LabelStudioError
    from mlproject.loop.audit import run_audit
    from mlproject.loop.round_lock import RoundLockError
    from mlproject.loop.policy import PolicyConfig
    from mlproject.loop.options import SyncOptions

    if not 0 < target <= 1:
        fail(f"--target must be in (0, 1], got {target}")
    try:
        options = SyncOptions(model_name=model_name, policy=PolicyConfig(tau=tau), wait_s=wait, lease_s=lease_seconds)
    except ValueError as exc:
        fail(str(exc))
    try:
        with mlflow_errors():
            loop_project = _open(project, url, api_key, document_root, from_name)
            report = run_audit(loop_project, options, sample_size=sample, target=target, seed=seed)
    except (LabelStudioError, RoundLockError) as exc:
        fail(str(exc))
    v = report.verdict
    if v.audited:
        typer.echo(f"Audited auto-labels: {v.audited}, correct {v.correct}: precision {v.precision:.1%} "
                   f"(95% interval {v.low:.1%} .. {v.high:.1%}; target {v.target:.1%})")
    else:
        typer.echo("No audited auto-labels yet: label the tasks in the 'Audit' view, then run `alloop audit` again")
    for task, machine, human in report.wrong:
        typer.echo(f"  task {task}: machine said {machine!r}, the auditor {human!r}")
    if v.below_target:
        typer.secho(f"Below target: tau raised to {v.new_tau:.4f} for the next rounds; "
                    f"{report.revoked} auto-labels of round(s) {report.rounds_revoked} sent back to review",
                    fg="red", bold=True)
    elif v.audited and v.precision < v.target:
        typer.echo("Below target on this sample, but not with confidence: audit more before acting")
    typer.echo(f"Added {report.sampled} auto-labels to the 'Audit' view; {report.pending} await an auditor")
