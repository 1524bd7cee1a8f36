"""``alloop demo``: the whole story on the embedded SYNTHETIC data, on this machine.

MLflow store (and its UI), Label Studio and the ML backend are started; the three VGG16 variants
are trained, registered and the best promoted; ``alloop init`` makes the labelling project on a
fresh SYNTHETIC pool; then ``alloop sync`` rounds run, in each of which a SIMULATED annotator (this
program, answering with the generator's true labels through Label Studio's API) labels the review
queue, until a retrain is triggered and judged. ``alloop demo --stop`` stops what it started.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

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
    plan = [("svm", {}), ("frozen", {"epochs": 20}), ("finetune", {"warmup_epochs": 5, "epochs": 10})]
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


def _simulated_annotator(client, project_id: int, truth: dict[str, str], target) -> int:
    """Answers the 'Needs review' queue with the true labels, as the admin (a stand-in for a person)."""
    view = next(v for v in client.views.list(project=project_id) if (v.data or {}).get("title") == "Needs review")
    answered = 0
    for task in client.tasks.list(project=project_id, view=view.id, fields="task_only"):
        name = str(task.data[target.image_value_key]).rsplit("/", 1)[-1]
        client.annotations.create(id=task.id, result=[{"from_name": target.from_name, "to_name": target.to_name,
                                                       "type": "choices", "value": {"choices": [truth[name]]}}])
        answered += 1
    return answered


@app.command()
def demo(
    weights: str = typer.Option("hed", help="imagenet | hed | none | weights file"),
    image_size: int = typer.Option(64, help="input size; small keeps the demo fast on a CPU"),
    rounds: int = typer.Option(3, help="alloop sync rounds"),
    pool: int = typer.Option(160, help="SYNTHETIC images to label"),
    budget: int = typer.Option(16, help="tasks the simulated annotator labels per round"),
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
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    uri = mlflow_registry.configure_tracking()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    typer.secho("alloop demo on SYNTHETIC DAGM-like textures (generated; not real inspection images).",
                fg="yellow", bold=True)

    typer.secho("\n[1/6] MLflow tracking store and UI", bold=True)
    ui_url = None
    if ui_port:
        ui_url = f"http://127.0.0.1:{ui_port}"
        _spawn("mlflow-ui", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                             "127.0.0.1", "--port", str(ui_port), "--workers", "1"],
               {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, ui_port, "/health", timeout=120)
        typer.echo(f"MLflow UI at {ui_url} (store {uri})")

    typer.secho("\n[2/6] Label Studio", bold=True)
    connection, started_here = _label_studio(ls_port)
    typer.echo(f"Label Studio at {connection.url} ({'started' if started_here else 'already running'})")

    typer.secho("\n[3/6] Train and register the three VGG16 variants; promote the best", bold=True)
    _train_variants(weights, image_size, model_name, experiment)
    champion = mlflow_registry.require(model_name, mlflow_registry.CHAMPION)
    typer.secho(f"Champion: {champion}", fg="green", bold=True)

    typer.secho("\n[4/6] The ML backend serving the champion", bold=True)
    backend_url = f"http://127.0.0.1:{backend_port}"
    _spawn("backend", [sys.executable, "-m", "mlproject.serving.server", "--host", "127.0.0.1", "--port",
                       str(backend_port), "--model-name", model_name, "--refresh-seconds", "5"],
           {**env, "LABEL_STUDIO_URL": connection.url, "LABEL_STUDIO_API_KEY": connection.api_key,
            "LOCAL_FILES_DOCUMENT_ROOT": connection.document_root or ""}, backend_port, "/health", timeout=300)
    typer.echo(f"backend at {backend_url}")

    typer.secho("\n[5/6] alloop init: the labelling project on a fresh SYNTHETIC pool", bold=True)
    if not connection.document_root:
        fail("the demo needs Label Studio's local-files document root (LOCAL_FILES_DOCUMENT_ROOT)")
    folder, truth = _pool(connection.document_root, pool, seed=7)
    title = "alloop demo (SYNTHETIC)"
    init_command(images=folder, title=title, labels="defect,ok", backend_url=backend_url, model_name=model_name,
                 url=connection.url, api_key=connection.api_key, document_root=connection.document_root, upload=False)

    typer.secho(f"\n[6/6] {rounds} labelling rounds; a SIMULATED annotator (this program, using the "
                "generator's true labels) answers each review queue", bold=True)
    loop_project = open_project(connection, title)
    # a short fine-tuning keeps the demo's retrain to about a minute on a CPU
    options = SyncOptions(model_name=model_name, retrain_after=retrain_after, holdout_share=0.3,
                          # At most an eighth of the pool per class auto-labelled a round: a tiny demo model
                          # can be confident about nearly everything, and the story needs a review queue.
                          policy=PolicyConfig(human_budget=budget, max_auto_per_class=max(1, pool // 8)),
                          state_dir=_state_dir(),
                          train_params={"epochs": 8, "warmup_epochs": 4})
    client = loop_project.tasks.client
    for number in range(1, rounds + 1):
        typer.secho(f"\n--- alloop sync (round {number} of {rounds}) ---", bold=True)
        report = run_round(loop_project, options)
        print_round(report, loop_project)
        if number < rounds:
            answered = _simulated_annotator(client, loop_project.tasks.project_id, truth, loop_project.target)
            typer.echo(f"SIMULATED annotator labelled {answered} tasks of the review queue")

    final = mlflow_registry.require(model_name, mlflow_registry.CHAMPION)
    project_url = f"{connection.url}/projects/{loop_project.tasks.project_id}/data"
    typer.secho("\nDone.", fg="green", bold=True)
    typer.echo(f"Champion now: {final} (started as {champion})\n"
               f"Label Studio project: {project_url}  (views 'Needs review', 'Auto-labelled', 'Audit')\n"
               + (f"  log in as {lsp.load_settings().username}; the password is in {_settings_file()}\n"
                  if started_here else "  log in with your Label Studio account\n") +
               f"MLflow UI: {ui_url or f'mlflow ui --backend-store-uri {uri}'}  (experiments '{experiment}', "
               "'alloop-rounds', 'alloop-retrain'; Models -> " f"{model_name})\n"
               f"Rounds so far: alloop status --project '{title}' --model-name {model_name}\n"
               "Stop the servers: scripts/demo --stop")


def _state_dir() -> Path:
    from mlproject.state import state_dir

    return state_dir()


def _settings_file() -> Path:
    from integrations.labelstudio.settings import default_settings_path

    return default_settings_path()
