"""``alloop ingest`` and ``alloop watch``: new image files become tasks with the champion's predictions."""

from __future__ import annotations

from pathlib import Path

import typer

from mlproject.cli._app import app, fail, mlflow_errors, require_champion
from mlproject.cli.loop import API_KEY, DOCROOT, FROM_NAME, LEASE, MODEL, PROJECT, STATE, URL, _open, _state_dir

IMAGES = typer.Option(..., "--images", exists=True, file_okay=False,
                      help="the folder new images arrive in (under Label Studio's local-files document root)")
SETTLE = typer.Option(1.0, "--settle-seconds", min=0.0, help="a file is read once unchanged this long")
ATTEMPTS = typer.Option(3, "--attempts", min=1, help="decoding attempts at a file before it is reported as failed")
RETRY = typer.Option(2.0, "--retry-seconds", min=0.0, help="pause before re-reading a file that did not decode "
                     "(times the attempts so far)")
BATCH = typer.Option(32, "--batch-size", min=1, help="images per model call")
WAIT = typer.Option(60.0, "--wait", metavar="SECONDS", help="when another ingestion of this project is in a pass, "
                    "wait up to this long for it")


def _setup(images, project, model_name, url, api_key, document_root, from_name, state_dir, settle, attempts, retry,
           batch_size, wait, lease):
    from mlproject.loop.ingest import IngestOptions
    from mlproject.loop.ingest_ledger import IngestRules
    from mlproject.loop.sources import LocalFolderSource

    require_champion(model_name)
    loop_project = _open(project, url, api_key, document_root, from_name)
    source = LocalFolderSource(images, loop_project.document_root)
    options = IngestOptions(model_name=model_name, state_dir=_state_dir(state_dir),
                            rules=IngestRules(settle_s=settle, max_attempts=attempts, retry_s=retry),
                            batch_size=batch_size, wait_s=wait, lease_s=lease)
    return loop_project, source, options


def _errors():
    from integrations.labelstudio.settings import LabelStudioError
    from mlproject.loop.round_lock import RoundLockError
    from mlproject.loop.round_report import SyncError
    from mlproject.loop.sources import SourceError

    return LabelStudioError, RoundLockError, SyncError, SourceError


@app.command()
def ingest(
    images: Path = IMAGES, project: str = PROJECT, model_name: str = MODEL, url: str = URL, api_key: str = API_KEY,
    document_root: str = DOCROOT, from_name: str = FROM_NAME, state_dir: Path = STATE, settle: float = SETTLE,
    attempts: int = ATTEMPTS, retry: float = RETRY, batch_size: int = BATCH, wait: float = WAIT, lease: float = LEASE,
    max_wait: float = typer.Option(60.0, "--max-wait", min=0.0, help="give files that are still changing this long"),
):
    """One pass: every image in --images without a task gets one, with the champion's prediction.

    Files already ingested (by this or any earlier run, or by `alloop init`) are skipped; a file that
    does not decode is retried --attempts times, then named with the reason (exit status 1).
    """
    from mlproject.loop.ingest import ingest_folder_once

    try:
        with mlflow_errors():
            loop_project, source, options = _setup(images, project, model_name, url, api_key, document_root,
                                                   from_name, state_dir, settle, attempts, retry, batch_size,
                                                   wait, lease)
            done = ingest_folder_once(loop_project, source, options, max_wait_s=max_wait, say=typer.echo)
    except _errors() as exc:
        fail(str(exc))
    for line in done.lines():
        typer.echo(line)
    if done.failed:
        fail(f"{len(done.failed)} file(s) could not be ingested (named above); fix or replace them and run "
             "`alloop ingest` again")


@app.command()
def watch(
    images: Path = IMAGES, project: str = PROJECT, model_name: str = MODEL, url: str = URL, api_key: str = API_KEY,
    document_root: str = DOCROOT, from_name: str = FROM_NAME, state_dir: Path = STATE, settle: float = SETTLE,
    attempts: int = ATTEMPTS, retry: float = RETRY, batch_size: int = BATCH, wait: float = WAIT, lease: float = LEASE,
    interval: float = typer.Option(2.0, "--interval", min=0.1, max=60.0,
                                   help="look at least this often (file events wake it sooner)"),
    max_seconds: float = typer.Option(0.0, "--max-seconds", min=0.0, help="stop after this long (0: until Ctrl-C)"),
):
    """Keep ingesting: new images in --images become tasks with predictions within seconds, a line per burst.

    Safe to stop and restart at any time, and to run next to `alloop sync`, `alloop ingest` or a second
    watcher: no file ever becomes two tasks.
    """
    import signal
    import time

    from mlproject.loop.ingest import watch_folder

    deadline = time.monotonic() + max_seconds if max_seconds else None
    stopping = []

    def finish_the_pass(signum, frame):  # a pass cut short is safe, but one that ends is cheaper to resume
        if stopping:
            raise KeyboardInterrupt
        stopping.append(signum)
        typer.echo("stopping after this pass (Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, finish_the_pass) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with mlflow_errors():
            loop_project, source, options = _setup(images, project, model_name, url, api_key, document_root,
                                                   from_name, state_dir, settle, attempts, retry, batch_size,
                                                   wait, lease)
            typer.echo(f"watching {source.folder} for project {loop_project.tasks.project_id} (Ctrl-C stops)")
            watch_folder(loop_project, source, options, interval_s=interval,
                         say=lambda line: typer.echo(line),
                         stop=lambda: bool(stopping) or (deadline is not None and time.monotonic() >= deadline))
        typer.echo("stopped")
    except KeyboardInterrupt:
        typer.echo("stopped")
    except _errors() as exc:
        fail(str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
