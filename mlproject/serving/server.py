"""The alloop ML backend: the current champion's predictions as Label Studio pre-annotations.

Run it (a uvicorn server, one process):

    alloop serve  (or: python -m mlproject.serving.server) --host 127.0.0.1 --port 9090 --model-name NAME

Settings come from flags, else environment variables: ``ALLOOP_MODEL_NAME``, ``MLFLOW_TRACKING_URI``,
``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``, ``LOCAL_FILES_DOCUMENT_ROOT``, ``ALLOOP_ALLOWED_ROOTS``
(``os.pathsep``-separated), ``ALLOOP_BACKEND_BASIC_AUTH_USER``/``_PASSWORD``, ``ALLOOP_REFRESH_SECONDS``
(default 30), ``ALLOOP_CHOICES_FROM_NAME``, ``ALLOOP_LABEL_MAP`` (``ok=Good,defect=Scratch`` or JSON),
``ALLOOP_ALLOW_EXTERNAL_URLS``, ``ALLOOP_MAX_IMAGE_BYTES`` (64 MiB), ``ALLOOP_MAX_REQUEST_BYTES`` (512 MiB
of encoded images held by one request at a time), ``ALLOOP_BACKEND_NO_AUTH``.

It listens on 127.0.0.1 unless ``--host`` says otherwise, and refuses another address without basic
auth unless ``--no-auth`` is given (then it logs a warning).

Endpoints (the protocol Label Studio 1.23 speaks): ``GET /health``, ``POST /setup``,
``POST /predict``, ``POST /webhook``, ``GET /versions``. The model is ``models:/NAME@champion``:
the alias is re-read at startup, on ``/setup`` and every ``refresh_seconds``;
a new version is loaded only when the alias moved, and swapped in atomically (requests already
running finish on the model they started with).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from mlproject.serving.app import create_app
from mlproject.serving.holder import watch_champion
from mlproject.serving.settings import BackendSettings, truthy

logger = logging.getLogger("alloop.serving")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlproject.serving.server",
                                     description="Serve the champion's predictions to Label Studio (ML backend).")
    parser.add_argument("--host", default=os.environ.get("ALLOOP_BACKEND_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ALLOOP_BACKEND_PORT", "9090")))
    parser.add_argument("--model-name", default=None, help="registered model to serve (ALLOOP_MODEL_NAME)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (MLFLOW_TRACKING_URI)")
    parser.add_argument("--refresh-seconds", type=float, default=None,
                        help="re-read the champion alias at most this often (ALLOOP_REFRESH_SECONDS, default 30)")
    parser.add_argument("--document-root", default=None, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT")
    parser.add_argument("--from-name", default=None, help="the <Choices> tag to fill (ALLOOP_CHOICES_FROM_NAME)")
    parser.add_argument("--log-level", default=os.environ.get("ALLOOP_LOG_LEVEL", "info"))
    parser.add_argument("--no-auth", action="store_true", default=truthy(os.environ.get("ALLOOP_BACKEND_NO_AUTH")),
                        help="allow listening on a non-loopback address without basic auth (ALLOOP_BACKEND_NO_AUTH)")
    return parser.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(host: str, basic_auth: bool, no_auth: bool) -> str | None:
    """Refuse (SystemExit) to serve everyone on the network unasked; the warning to log when asked."""
    if is_loopback(host) or basic_auth:
        return None
    if not no_auth:
        raise SystemExit(
            f"error: refusing to listen on {host} without authentication: anyone who can reach it could read "
            "predictions and make the backend fetch images with its Label Studio credentials. Set "
            "ALLOOP_BACKEND_BASIC_AUTH_USER and ALLOOP_BACKEND_BASIC_AUTH_PASSWORD (and the same user/password "
            "in Label Studio's model settings), or pass --no-auth if the network is yours alone.")
    return (f"listening on {host} WITHOUT authentication (--no-auth): anyone who can reach this port can use "
            "the backend")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = BackendSettings.from_env(model_name=args.model_name or None, tracking_uri=args.tracking_uri,
                                            refresh_seconds=args.refresh_seconds, document_root=args.document_root,
                                            from_name=args.from_name)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not settings.model_name:
        raise SystemExit("error: no model name: pass --model-name or set ALLOOP_MODEL_NAME")
    if bool(settings.basic_auth_user) != bool(settings.basic_auth_password):
        raise SystemExit("error: set both ALLOOP_BACKEND_BASIC_AUTH_USER and ALLOOP_BACKEND_BASIC_AUTH_PASSWORD")
    warning = check_exposure(args.host, settings.basic_auth, args.no_auth)  # before anything slow is loaded
    if warning:
        logger.warning("%s", warning)
    import mlflow
    import uvicorn

    from integrations import mlflow_registry

    if settings.tracking_uri:
        mlflow.set_tracking_uri(settings.tracking_uri)
    else:
        settings.tracking_uri = mlflow_registry.configure_tracking()
    logger.info("alloop backend: %s", settings)  # secrets are repr=False
    app = create_app(settings)
    watch_champion(app.state.holder)
    champion = app.state.holder.snapshot()
    logger.info("serving %s on http://%s:%d (%s)", champion.version if champion else "no champion yet",
                args.host, args.port, app.state.holder.message)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
