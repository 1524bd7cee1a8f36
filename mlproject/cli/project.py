"""``alloop init`` and ``alloop serve``: the Label Studio project and the ML backend."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mlproject.cli._app import app, fail, require_champion


@app.command()
def init(
    images: Path = typer.Option(..., exists=True, file_okay=False, help="folder of images to label"),
    title: str = typer.Option("alloop defect inspection", help="Label Studio project title (found or created)"),
    labels: str = typer.Option("defect,ok", help="choices of the labeling config, comma-separated"),
    backend_url: str = typer.Option(None, envvar="ALLOOP_BACKEND_URL",
                                    help="URL of the alloop ML backend to connect (`alloop serve`)"),
    model_name: str = typer.Option("alloop-defect-classifier", envvar="ALLOOP_MODEL_NAME"),
    url: str = typer.Option(None, envvar="LABEL_STUDIO_URL", help="Label Studio URL"),
    api_key: str = typer.Option(None, envvar="LABEL_STUDIO_API_KEY", show_default=False),
    document_root: str = typer.Option(None, envvar="LOCAL_FILES_DOCUMENT_ROOT",
                                      help="the server's local-files root; images under it are served, not uploaded"),
    upload: bool = typer.Option(False, help="upload the images even when the server could read them from disk"),
):
    """Create (or find) the Label Studio project, import images, connect the backend, add views and the bot user."""
    from integrations.labelstudio import project as lsp
    from integrations.labelstudio.settings import LabelStudioError

    champion = require_champion(model_name)
    choices = [c.strip() for c in labels.split(",") if c.strip()]
    if len(choices) < 2:
        fail("--labels needs at least two comma-separated choices, e.g. defect,ok")
    try:
        connection = lsp.connection_from_env(url, api_key, document_root)
        client = lsp.connect(connection)
        project, created = lsp.ensure_project(client, title, lsp.image_choices_config(choices))
        report = [f"project {project.id} '{title}': {'created' if created else 'reused'}"]
        files = lsp.image_files(images)
        if not files:
            fail(f"{images} holds no images ({', '.join(sorted(lsp.IMAGE_SUFFIXES))})")
        root = Path(connection.document_root) if connection.document_root else None
        if root is not None and not upload and lsp.is_under(images, root) and images.resolve() != root.resolve():
            storage_id, storage_state = lsp.ensure_local_storage(client, project.id, images, root)
            report.append(f"local-files storage {storage_id} on {images}: " + (
                f"{storage_state}, synced" if storage_state != "serve-only" else
                "serves the files only (`alloop watch`/`ingest` make this folder's tasks; run `alloop ingest "
                f"--images {images}` for files not yet ingested)"))
        else:
            added = lsp.upload_images(connection, client, project.id, files)
            report.append(f"uploaded {added} new images ({len(files) - added} already there)")
        bot_id, bot_created = lsp.ensure_bot_user(client)
        report.append(f"bot user {lsp.BOT_EMAIL} (id {bot_id}): {'created' if bot_created else 'reused'}")
        views = lsp.ensure_views(client, project.id, bot_id)
        report.append(f"views created: {', '.join(views) if views else 'none (all present)'}")
        if backend_url:
            # the backend's own basic auth, when it runs with it (as it must off loopback)
            auth_user, auth_password = (os.environ.get("ALLOOP_BACKEND_BASIC_AUTH_USER"),
                                        os.environ.get("ALLOOP_BACKEND_BASIC_AUTH_PASSWORD"))
            backend_id, backend_created = lsp.ensure_ml_backend(
                client, project.id, backend_url,
                basic_auth=(auth_user, auth_password) if auth_user and auth_password else None)
            report.append(f"ML backend {backend_url} (id {backend_id}): {'connected' if backend_created else 'already connected'}")
        else:
            report.append("ML backend: not connected (pass --backend-url; start it with `alloop serve`)")
        state = lsp.set_model_version(client, project.id, str(champion))
        if state == "pending":
            report.append(f"project model_version: {champion} once a backend serving it is connected "
                          "(Label Studio accepts only versions it has seen)")
        else:
            report.append(f"project model_version = {champion} ({state})")
    except LabelStudioError as exc:
        fail(str(exc))
    for line in report:
        typer.echo(line)
    typer.secho(f"Open {connection.url}/projects/{project.id}/data", fg="green")


@app.command()
def serve(
    model_name: str = typer.Option("alloop-defect-classifier", envvar="ALLOOP_MODEL_NAME", help="registered model"),
    host: str = typer.Option("127.0.0.1", envvar="ALLOOP_BACKEND_HOST"),
    port: int = typer.Option(9090, envvar="ALLOOP_BACKEND_PORT"),
    document_root: str = typer.Option(None, envvar="LOCAL_FILES_DOCUMENT_ROOT",
                                      help="Label Studio's local-files root: such images are read from disk"),
    refresh_seconds: float = typer.Option(30.0, envvar="ALLOOP_REFRESH_SECONDS",
                                          help="re-read the champion alias at most this often"),
    log_level: str = typer.Option("info"),
    no_auth: bool = typer.Option(False, "--no-auth", envvar="ALLOOP_BACKEND_NO_AUTH",
                                 help="listen on a non-loopback --host without basic auth (refused otherwise)"),
):
    """Run the ML backend: Label Studio gets the champion's predictions as pre-annotations.

    Label Studio's URL and API key (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, or the settings of
    `alloop labelstudio start`) let it fetch uploaded images; basic auth: ALLOOP_BACKEND_BASIC_AUTH_USER
    and ALLOOP_BACKEND_BASIC_AUTH_PASSWORD.
    """
    from mlproject.serving.server import main as backend_main
    from integrations.labelstudio.settings import load_settings

    saved = load_settings()
    if saved is not None:  # the local server's connection, unless the environment says otherwise
        os.environ.setdefault("LABEL_STUDIO_URL", saved.url)
        os.environ.setdefault("LABEL_STUDIO_API_KEY", saved.api_key)
        document_root = document_root or saved.document_root
    args = ["--host", host, "--port", str(port), "--model-name", model_name, "--refresh-seconds",
            str(refresh_seconds), "--log-level", log_level]
    if document_root:
        args += ["--document-root", document_root]
    if no_auth:
        args.append("--no-auth")
    backend_main(args)
