"""``alloop demo``: the whole story on the embedded SYNTHETIC data, on this machine.

MLflow store (and its UI), Label Studio and the ML backend are started; the three VGG16 variants
are trained, registered and the best promoted; ``alloop init`` makes the labelling project on a
fresh SYNTHETIC pool; then ``alloop sync`` rounds run, in each of which a SIMULATED annotator (this
program, answering with the generator's true labels through Label Studio's API) labels the review
queue and a random spot check, until a retrain is triggered and judged on held-out human labels.
It ends with the verdict and the backend serving the champion it leaves. ``alloop demo --stop``
stops what it started.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import requests
import typer

from mlproject.cli._app import app, fail

SERVICES_FILE = "demo-services.json"


def _services():
    from integrations.processes import ServiceRecord
    from mlproject.state import state_dir

    return ServiceRecord(state_dir() / SERVICES_FILE)


def _spawn(name: str, command: list[str], env: dict, port: int, health_path: str, timeout: float = 180) -> int:
    from integrations import processes
    from mlproject.state import state_dir

    if processes.port_in_use(port):
        fail(f"port {port} is taken (needed for the {name}); stop what runs there (`alloop demo --stop` if it is an "
             f"earlier demo) or pick another port")
    log = state_dir() / f"demo-{name}.log"
    pid = processes.spawn(command, log=log, env=env)
    _services().add(name, pid=pid, url=f"http://127.0.0.1:{port}", log=str(log), marker=" ".join(command[1:3]))
    try:
        processes.wait_http(f"http://127.0.0.1:{port}{health_path}", timeout=timeout, pid=pid, log=log, what=name)
    except processes.WaitFailed as exc:
        fail(str(exc))
    return pid


def _stop_services() -> list[str]:
    from integrations.labelstudio.server import stop as stop_label_studio

    return _services().stop_all({"label-studio": stop_label_studio})


def _label_studio(port: int):
    """The Label Studio named by LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY if it answers, else a local one."""
    from integrations.labelstudio.project import connection_from_env
    from integrations.labelstudio.server import install, is_healthy, start
    from integrations.labelstudio.settings import LabelStudioError, label_studio_executable

    try:
        connection = connection_from_env()
        if is_healthy(connection.url):
            return connection, False
    except LabelStudioError:
        pass
    if not label_studio_executable().exists():
        install(say=typer.echo)
    settings = start(port=port, timeout=900, say=typer.echo)
    _services().add("label-studio", url=settings.url)
    return connection_from_env(settings.url, settings.api_key, settings.document_root), True


def _train_variants(weights: str, image_size: int, model_name: str, experiment: str) -> None:
    from integrations.mlflow_runs import run_entry_point

    common = {"data": "synthetic", "weights": weights, "image_size": image_size, "registered_model_name": model_name}
    # the head is searched by default; on the demo's small set a minute shows the child runs
    plan = [("svm", {}), ("frozen", {"epochs": 20, "head_search_budget_s": 60}),
            ("finetune", {"warmup_epochs": 5, "epochs": 10, "head_search_budget_s": 60})]
    for entry_point, extra in plan:
        typer.secho(f"\n=== mlflow run . -e {entry_point} ===", bold=True)
        run_entry_point(entry_point, {**common, **extra}, experiment=experiment)
        typer.secho(f"\n=== mlflow run . -e promote (challenger from {entry_point}) ===", bold=True)
        run_entry_point("promote", {"model_name": model_name, "eval_data": "synthetic"}, experiment=experiment)


def _pool(document_root: str, size: int, seed: int) -> tuple[Path, dict[str, str]]:
    """A fresh SYNTHETIC pool to label, under Label Studio's document root; the truth stays with the annotator."""
    from mlproject.data.loaders import load_dagm
    from mlproject.data.synthetic import generate_synthetic_dagm

    # more defects than DAGM's 12%, so that a short demo sees enough of them to retrain
    generated = generate_synthetic_dagm(Path(document_root).parent / "demo-pool-source", n_images=size, size=128,
                                        defect_fraction=0.3, seed=seed)
    folder = Path(document_root) / "alloop-demo-pool"
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for record in load_dagm(generated):
        name = f"{Path(record.path).parent.name.lower()}-{Path(record.path).name}"
        truth[name] = record.label
        if not (folder / name).exists():
            shutil.copy(record.path, folder / name)
    return folder, truth


def _simulated_annotator(loop_project, truth: dict[str, str], *, spot_check: int, held_out, per_class: int,
                         seed: int) -> dict[str, Counter]:
    """A stand-in for a person (the admin, answering with the true labels): the 'Needs review' queue
    first, then a spot check of random tasks no person has labelled yet (machine-labelled or not).

    The queue is what the model is least sure of, and a demo model is often sure of every 'ok': the
    queue alone can be all defects, and so the held-out human labels promotion is judged on (the
    tasks ``held_out(task_id)`` picks). As a team building an evaluation set would, the spot check
    goes on past ``spot_check`` tasks until the held-out labels have ``per_class`` of each class.
    Returns Counters of the classes given: ``queue``, ``spot_check`` and ``held_out`` (all so far).
    """
    client, project_id, target = loop_project.tasks.client, loop_project.tasks.project_id, loop_project.target
    bot = loop_project.bot_id

    def label(task_id: int, data: dict) -> str:
        choice = truth[str(data[target.image_value_key]).rsplit("/", 1)[-1]]
        client.annotations.create(id=task_id, result=[{"from_name": target.from_name, "to_name": target.to_name,
                                                       "type": "choices", "value": {"choices": [choice]}}])
        return choice

    view = next(v for v in client.views.list(project=project_id) if (v.data or {}).get("title") == "Needs review")
    queue = Counter(label(task.id, task.data)
                    for task in client.tasks.list(project=project_id, view=view.id, fields="task_only"))
    tasks = loop_project.tasks.read(progress=False)
    held = Counter({name: 0 for name in sorted(set(truth.values()))})
    for task in tasks:
        human = task.human_annotations(bot, labelled=True)
        if human and held_out(task.id):
            held[max(human, key=lambda a: (a.created_at, a.id)).choices[0]] += 1
    candidates = sorted((t for t in tasks if not t.touched_by_people(bot)), key=lambda t: t.id)
    random.Random(seed).shuffle(candidates)
    spot = Counter()
    for task in candidates:
        if sum(spot.values()) >= spot_check and min(held.values()) >= per_class:
            break
        choice = label(task.id, task.data)
        spot[choice] += 1
        if held_out(task.id):
            held[choice] += 1
    return {"queue": queue, "spot_check": spot, "held_out": held}


def _counts(counter: Counter) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items())) or "none"


def _challenger_verdict(reports: list, options, project_key: str) -> tuple[object | None, str | None]:
    """Prints how the rounds' challengers fared on the held-out human labels, in detail for the one
    that tells the story (the newest promoted, else the newest retrained); returns (that version,
    its promotion tag: promoted | rejected | None when it could not be judged)."""
    from mlflow import MlflowClient

    from integrations import mlflow_registry
    from mlproject.data.loaders import label_counts, read_manifest

    client = MlflowClient()
    retrained = [r for r in reports if r.counts.get("retrained")]
    metric = options.metric
    if not retrained:
        reasons = [m for r in reports for m in r.messages if "retrain" in m]
        typer.secho(f"No challenger was trained in {len(reports)} rounds: "
                    f"{reasons[-1] if reasons else 'see the rounds above'}", fg="red", bold=True)
        return None, None
    for earlier in retrained:
        typer.echo(f"Round {earlier.round}: " + "; ".join(m for m in earlier.messages if ": promoted (" in m
                                                          or ": rejected (" in m or "stays challenger" in m))
    promoted = [r for r in retrained if r.counts.get("promoted")]
    report = (promoted or retrained)[-1]
    version = client.get_run(report.run_id).data.tags["alloop.challenger"]
    ref = mlflow_registry.VersionRef(*version.rsplit("/", 1))
    tags = mlflow_registry.version_tags(ref)
    trained = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(tags.items()) if k.startswith("labels_by_source."))
    typer.echo(f"Round {report.round} retrained {version} ({tags.get('variant', '?')}; trained on {trained})")
    holdout = Path(options.state_dir) / "rounds" / project_key / f"round-{report.round}" / "holdout.csv"
    if holdout.exists():
        counts = label_counts(read_manifest(holdout))
        typer.echo(f"Held-out human labels it never trained on: {sum(counts.values())} ({_counts(Counter(counts))})")
    decision = tags.get("promotion")
    if decision is None:
        why = next((m for m in report.messages if m.startswith(f"{version} stays challenger")), "not judged")
        typer.secho(f"NOT judged: {why}", fg="red", bold=True)
        return ref, None
    experiment = client.get_experiment_by_name(options.training_experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.task = 'promote' and tags.challenger = '{version}'",
                              order_by=["attributes.start_time DESC"], max_results=1) if experiment else []
    if runs:
        m, before = runs[0].data.metrics, runs[0].data.tags.get("champion_before", "champion")
        left, right = f"champion {before}", f"challenger {version}"
        typer.echo(f"  {'':18} {left:{len(left)}}   {right}")
        for name in dict.fromkeys((metric, "defect_recall", "accuracy")):
            if f"challenger_{name}" in m and f"champion_{name}" in m:
                typer.echo(f"  {name:18} {m[f'champion_{name}']:<{len(left)}.4f}   {m[f'challenger_{name}']:.4f}")
    reason = tags.get("promotion_reason", "")
    if decision == "promoted":
        typer.secho(f"PROMOTED {version} to champion: {reason}", fg="green", bold=True)
    else:
        typer.secho(f"NOT promoted: {version} stays challenger because {reason} (promotion needs a higher {metric} "
                    f"on these labels and no drop in defect recall)", fg="yellow", bold=True)
    return ref, decision


def _backend_serves(backend_url: str, champion: str, loop_project, timeout: float = 180) -> None:
    """Waits for the backend to serve ``champion`` (it re-reads the alias every few seconds), asks its
    /predict about one task, and shows the project's predictions following."""
    deadline = time.monotonic() + timeout
    serving = None
    while time.monotonic() < deadline:
        try:
            serving = requests.get(f"{backend_url}/health", timeout=10).json().get("champion")
        except (requests.RequestException, ValueError):
            serving = None
        if serving == champion:
            break
        time.sleep(2)
    else:
        fail(f"the backend at {backend_url} still serves {serving} {timeout:.0f} s after {champion} became champion; "
             f"see its log {_state_dir() / 'demo-backend.log'}")
    client, project_id = loop_project.tasks.client, loop_project.tasks.project_id
    tasks = loop_project.tasks.read(progress=False)
    task = tasks[0]
    answer = requests.post(f"{backend_url}/predict", timeout=120, json={
        "tasks": [{"id": task.id, "data": task.data}],
        "label_config": client.projects.get(id=project_id).label_config}).json()["results"][0]
    choices = [c for r in answer.get("result", []) for c in r.get("value", {}).get("choices", [])]
    typer.echo(f"Backend {backend_url} serves {serving}: /predict on task {task.id} answered "
               f"{choices[0] if choices else 'nothing'!r} ({float(answer.get('score') or 0):.3f}) "
               f"from model_version {answer.get('model_version')}")
    followed = sum(t.prediction_of(champion) is not None for t in tasks)
    typer.echo(f"Project predictions: {followed} of {len(tasks)} tasks have one from {champion}; project "
               f"model_version {client.projects.get(id=project_id).model_version}")


@app.command()
def demo(
    weights: str = typer.Option("hed", help="imagenet | hed | none | weights file"),
    image_size: int = typer.Option(64, help="input size; small keeps the demo fast on a CPU"),
    rounds: int = typer.Option(3, help="alloop sync rounds"),
    pool: int = typer.Option(160, help="SYNTHETIC images to label"),
    budget: int = typer.Option(16, help="tasks the review queue asks the simulated annotator for per round"),
    spot_check: int = typer.Option(8, help="random tasks the simulated annotator also labels per round"),
    held_out_per_class: int = typer.Option(4, help="the spot check goes on until the held-out human labels "
                                                    "(that judge a challenger) have this many of each class"),
    retrain_after: int = typer.Option(20, help="new human labels that trigger a retrain"),
    experiment: str = typer.Option("alloop-demo", help="MLflow experiment for the training runs"),
    model_name: str = typer.Option("alloop-demo-classifier", help="registered model name"),
    ls_port: int = typer.Option(8080, help="Label Studio port (when the demo starts it)"),
    backend_port: int = typer.Option(9090, help="ML backend port"),
    ui_port: int = typer.Option(5000, help="MLflow UI port (0: no UI)"),
    stop: bool = typer.Option(False, "--stop", help="stop the servers an earlier demo started, and exit"),
):
    """The whole story on SYNTHETIC data: servers, training, the Label Studio project, labelling rounds."""
    if stop:
        for line in _stop_services() or ["nothing to stop"]:
            typer.echo(line)
        return
    from integrations import mlflow_registry
    from integrations.labelstudio import project as lsp
    from mlproject.cli.project import init as init_command
    from mlproject.loop.policy import PolicyConfig
    from mlproject.cli.loop import print_round
    from mlproject.loop.labels import in_holdout
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    from integrations import postgres

    try:
        if postgres.selected():  # ALLOOP_DB=postgres: runs, registry and UI on the local cluster's `mlflow` database
            cluster = postgres.start(say=typer.echo)  # Label Studio (step 2) then finds it running
            os.environ.update(postgres.client_env(cluster), MLFLOW_TRACKING_URI=postgres.mlflow_backend_uri(cluster))
    except postgres.PostgresError as exc:
        fail(str(exc))
    uri = mlflow_registry.configure_tracking()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    typer.secho("alloop demo on SYNTHETIC DAGM-like textures (generated; not real inspection images).",
                fg="yellow", bold=True)

    typer.secho("\n[1/7] MLflow tracking store and UI", bold=True)
    ui_url = None
    if ui_port:
        ui_url = f"http://127.0.0.1:{ui_port}"
        _spawn("mlflow-ui", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                             "127.0.0.1", "--port", str(ui_port), "--workers", "1"],
               {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, ui_port, "/health", timeout=120)
        typer.echo(f"MLflow UI at {ui_url} (store {uri})")

    typer.secho("\n[2/7] Label Studio", bold=True)
    connection, started_here = _label_studio(ls_port)
    typer.echo(f"Label Studio at {connection.url} ({'started' if started_here else 'already running'})")

    typer.secho("\n[3/7] Train and register the three VGG16 variants; promote the best", bold=True)
    _train_variants(weights, image_size, model_name, experiment)
    champion = mlflow_registry.require(model_name, mlflow_registry.CHAMPION)
    typer.secho(f"Champion: {champion}", fg="green", bold=True)

    typer.secho("\n[4/7] The ML backend serving the champion", bold=True)
    backend_url = f"http://127.0.0.1:{backend_port}"
    _spawn("backend", [sys.executable, "-m", "mlproject.serving.server", "--host", "127.0.0.1", "--port",
                       str(backend_port), "--model-name", model_name, "--refresh-seconds", "5"],
           {**env, "LABEL_STUDIO_URL": connection.url, "LABEL_STUDIO_API_KEY": connection.api_key,
            "LOCAL_FILES_DOCUMENT_ROOT": connection.document_root or ""}, backend_port, "/health", timeout=300)
    typer.echo(f"backend at {backend_url}")

    typer.secho("\n[5/7] alloop init: the labelling project on a fresh SYNTHETIC pool", bold=True)
    if not connection.document_root:
        fail("the demo needs Label Studio's local-files document root (LOCAL_FILES_DOCUMENT_ROOT)")
    folder, truth = _pool(connection.document_root, pool, seed=7)
    title = "alloop demo (SYNTHETIC)"
    init_command(images=folder, title=title, labels="defect,ok", backend_url=backend_url, model_name=model_name,
                 url=connection.url, api_key=connection.api_key, document_root=connection.document_root, upload=False)

    typer.secho(f"\n[6/7] {rounds} labelling rounds; a SIMULATED annotator (this program, using the "
                "generator's true labels) answers each review queue and spot-checks random tasks", bold=True)
    loop_project = open_project(connection, title)
    options = SyncOptions(model_name=model_name, retrain_after=retrain_after, holdout_share=0.3,
                          # At most an eighth of the pool per class auto-labelled a round: a tiny demo model
                          # can be confident about nearly everything, and the story needs a review queue.
                          policy=PolicyConfig(human_budget=budget, max_auto_per_class=max(1, pool // 8)),
                          # the retrain is the champion's own recipe (entry point and parameters) on the labels
                          state_dir=_state_dir())
    reports = []
    for number in range(1, rounds + 1):
        typer.secho(f"\n--- alloop sync (round {number} of {rounds}) ---", bold=True)
        if number == rounds and not any(r.counts.get("retrained") for r in reports):
            # the story ends with a judged challenger: the last round retrains whatever the count
            typer.echo("last round and no retrain yet: alloop sync --retrain (even below --retrain-after)")
            options = replace(options, force_retrain=True)
        report = run_round(loop_project, options)
        reports.append(report)
        print_round(report, loop_project)
        if number < rounds:
            labelled = _simulated_annotator(
                loop_project, truth, spot_check=spot_check,
                held_out=lambda task_id: in_holdout(loop_project.key, task_id, options.holdout_share),
                per_class=max(held_out_per_class, options.min_holdout_per_class), seed=number)
            typer.echo(f"SIMULATED annotator labelled {sum(labelled['queue'].values())} tasks of the review queue "
                       f"({_counts(labelled['queue'])}) and spot-checked {sum(labelled['spot_check'].values())} "
                       f"random tasks ({_counts(labelled['spot_check'])}); held-out human labels so far: "
                       f"{_counts(labelled['held_out'])}")

    typer.secho("\n[7/7] The retrained challenger, judged on held-out human labels", bold=True)
    challenger, decision = _challenger_verdict(reports, options, loop_project.key)
    final = mlflow_registry.require(model_name, mlflow_registry.CHAMPION)
    _backend_serves(backend_url, str(final), loop_project)
    project_url = f"{connection.url}/projects/{loop_project.tasks.project_id}/data"
    typer.secho("\nDone.", fg="green", bold=True)
    typer.echo(f"Champion now: {final} (started as {champion}"
               + (f"; {challenger} {decision}" if challenger is not None and decision else "") + ")\n"
               f"Label Studio project: {project_url}  (views 'Needs review', 'Auto-labelled', 'Audit'; a task's "
               f"predictions show their model_version)\n"
               + (f"  log in as {lsp.load_settings().username}; the password is in {_settings_file()}\n"
                  if started_here else "  log in with your Label Studio account\n") +
               f"MLflow UI: {ui_url or f'mlflow ui --backend-store-uri {uri}'}  (experiments '{experiment}', "
               f"'alloop-rounds', '{options.training_experiment}' (the retrain and its promote run: held-out "
               f"champion_* vs challenger_* metrics); Models -> {model_name}: aliases and promotion tags)\n"
               f"Rounds so far: alloop status --project '{title}' --model-name {model_name}\n"
               "Stop the servers: scripts/demo --stop")


def _state_dir() -> Path:
    from mlproject.state import state_dir

    return state_dir()


def _settings_file() -> Path:
    from integrations.labelstudio.settings import default_settings_path

    return default_settings_path()
