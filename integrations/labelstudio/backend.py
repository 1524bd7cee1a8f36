"""The alloop ML backend: the current champion's predictions as Label Studio pre-annotations.

Run it (a uvicorn server, one process):

    python -m integrations.labelstudio.backend --host 127.0.0.1 --port 9090 --model-name NAME

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
import base64
import ipaddress
import json
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from integrations.labelstudio.follower import ProjectFollower
from integrations.labelstudio.images import DEFAULT_MAX_BYTES, ImageFetcher
from integrations.labelstudio.label_config import LabelConfigError, map_classes
from integrations.labelstudio.predictions import (
    DEFAULT_MAX_REQUEST_BYTES,
    NO_CHAMPION,
    PredictLimits,
    predict_tasks,
    target_for,
)

logger = logging.getLogger("alloop.backend")

MODEL_CLASS = "alloop"
DEFAULT_CLASS_NAMES = ("ok", "defect")
SETUP_WAIT_SECONDS = 2.0  # Label Studio gives /setup 3 s


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def _bytes(env, name: str, default: int) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number of bytes") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive number of bytes, got {value}")
    return value


def parse_label_map(text: str | None) -> dict[str, str]:
    """``ok=Good,defect=Scratch`` or a JSON object -> dict."""
    if not text or not text.strip():
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            mapping = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"ALLOOP_LABEL_MAP is not valid JSON: {exc}") from None
        return {str(k): str(v) for k, v in mapping.items()}
    mapping = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"ALLOOP_LABEL_MAP entry {item!r} is not class=choice")
        key, value = item.split("=", 1)
        mapping[key.strip()] = value.strip()
    return mapping


@dataclass
class BackendSettings:
    model_name: str
    tracking_uri: str | None = None
    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    document_root: str | None = None
    allowed_roots: list[str] = field(default_factory=list)
    basic_auth_user: str | None = None
    basic_auth_password: str | None = field(default=None, repr=False)
    refresh_seconds: float = 30.0
    from_name: str | None = None
    label_map: dict[str, str] = field(default_factory=dict)
    allow_external_urls: bool = False
    max_image_bytes: int = DEFAULT_MAX_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    def __post_init__(self):
        self.limits.check(self.max_image_bytes)

    @property
    def limits(self) -> PredictLimits:
        return PredictLimits(max_request_bytes=self.max_request_bytes)

    @property
    def basic_auth(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_password)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "BackendSettings":
        env = os.environ if environ is None else environ
        roots = [r for r in (env.get("ALLOOP_ALLOWED_ROOTS") or "").split(os.pathsep) if r.strip()]
        values: dict[str, Any] = {
            "model_name": env.get("ALLOOP_MODEL_NAME") or "",
            "tracking_uri": env.get("MLFLOW_TRACKING_URI") or None,
            "label_studio_url": env.get("LABEL_STUDIO_URL") or None,
            "label_studio_api_key": env.get("LABEL_STUDIO_API_KEY") or None,
            "document_root": env.get("LOCAL_FILES_DOCUMENT_ROOT") or None,
            "allowed_roots": roots,
            "basic_auth_user": env.get("ALLOOP_BACKEND_BASIC_AUTH_USER") or None,
            "basic_auth_password": env.get("ALLOOP_BACKEND_BASIC_AUTH_PASSWORD") or None,
            "refresh_seconds": float(env.get("ALLOOP_REFRESH_SECONDS") or 30),
            "from_name": env.get("ALLOOP_CHOICES_FROM_NAME") or None,
            "label_map": parse_label_map(env.get("ALLOOP_LABEL_MAP")),
            "allow_external_urls": _truthy(env.get("ALLOOP_ALLOW_EXTERNAL_URLS")),
            "max_image_bytes": _bytes(env, "ALLOOP_MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES),
            "max_request_bytes": _bytes(env, "ALLOOP_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# The champion
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Champion:
    ref: Any  # mlflow_registry.VersionRef (str(ref) == "NAME/VERSION")
    model: Any  # an mlflow pyfunc
    class_names: tuple[str, str]
    threshold: float | None = None

    @property
    def version(self) -> str:
        return str(self.ref)


def _model_config(model) -> dict:
    try:
        return dict(model.unwrap_python_model().config)
    except Exception:  # another flavour, or no config: fall back to the defaults
        return {}


def load_champion(ref) -> Champion:
    from integrations import mlflow_registry

    model = mlflow_registry.load_pyfunc(ref)
    config = _model_config(model)
    names = tuple(config.get("class_names") or DEFAULT_CLASS_NAMES)
    threshold = config.get("threshold")
    return Champion(ref=ref, model=model, class_names=(str(names[0]), str(names[1])),
                    threshold=float(threshold) if threshold is not None else None)


def resolve_champion(name: str):
    from integrations import mlflow_registry

    return mlflow_registry.resolve(name, mlflow_registry.CHAMPION)


class ChampionHolder:
    """Follows ``models:/NAME@champion``; hands out the current (model, ref) pair without blocking on loads.

    ``snapshot()`` is one attribute read: a request that took it keeps using that model even when
    a newer one is swapped in meanwhile. Only one refresh runs at a time (in a worker thread),
    so a slow load never runs twice and never holds up ``/health``.
    """

    def __init__(self, model_name: str, refresh_seconds: float = 30.0, *,
                 resolver: Callable[[str], Any] | None = None, loader: Callable[[Any], Champion] | None = None,
                 clock: Callable[[], float] = time.monotonic, tracking_uri: str | None = None,
                 on_change: Callable[[Champion], None] | None = None):
        self.model_name = model_name
        self.on_change = on_change  # called (in its own thread) after a new champion is swapped in
        self.refresh_seconds = max(0.0, float(refresh_seconds))
        self._resolver = resolver or resolve_champion
        self._loader = loader or load_champion
        self._clock = clock
        self._tracking_uri = tracking_uri
        self._lock = threading.Lock()
        self._champion: Champion | None = None
        self._target = None  # what the alias pointed at when last read
        self._checked_at = -math.inf
        self._message = "not checked yet"
        self._worker: threading.Thread | None = None

    # -- reading -----------------------------------------------------------------------------------

    def snapshot(self) -> Champion | None:
        return self._champion

    @property
    def message(self) -> str:
        return self._message

    @property
    def target(self):
        return self._target

    def loading(self) -> bool:
        worker = self._worker
        return worker is not None and worker.is_alive()

    def stale(self) -> bool:
        return self._clock() - self._checked_at >= self.refresh_seconds

    # -- refreshing --------------------------------------------------------------------------------

    def start_refresh(self, *, force: bool = False) -> threading.Thread | None:
        """Start a refresh in a worker thread when due (or forced); returns the running worker, if any."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return self._worker
            if not force and not self.stale():
                return None
            self._worker = threading.Thread(target=self._refresh, name="champion-refresh", daemon=True)
            self._worker.start()
            return self._worker

    def current(self, *, force: bool = False, timeout: float | None = None) -> Champion | None:
        """The champion after a due (or forced) refresh, waiting up to ``timeout`` s for it (None: no limit)."""
        worker = self.start_refresh(force=force)
        if worker is not None:
            worker.join(timeout)
        return self.snapshot()

    def peek(self) -> Champion | None:
        """The champion now; starts a due refresh in the background without waiting for it."""
        self.start_refresh()
        return self.snapshot()

    def _refresh(self) -> None:
        name = self.model_name
        try:
            ref = self._resolver(name)
        except Exception as exc:  # registry unreachable: keep serving what we have
            self._message = (f"cannot read the model registry ({self._tracking_uri or 'MLFLOW_TRACKING_URI'}): "
                             f"{exc.__class__.__name__}: {str(exc)[:200]}")
            logger.error("champion check failed: %s", self._message)
            self._checked_at = self._clock()
            return
        self._target = ref
        current = self._champion
        if ref is None:
            if current is not None:
                logger.warning("the champion alias of %s is gone; no longer serving %s", name, current.version)
            self._champion = None
            self._message = (f"registered model {name!r} has no 'champion' alias in "
                             f"{self._tracking_uri or 'the tracking store'}; train and promote a model "
                             f"(`mlflow run . -e promote ...`, or set the alias), predictions stay empty until then")
            self._checked_at = self._clock()
            return
        if current is not None and current.ref == ref:
            self._message = f"serving {current.version}"
            self._checked_at = self._clock()
            return
        logger.info("loading champion %s (was %s)", ref, current.version if current else None)
        started = time.monotonic()
        try:
            champion = self._loader(ref)
        except Exception as exc:
            self._message = (f"could not load {ref}: {exc.__class__.__name__}: {str(exc)[:200]}"
                             + (f"; still serving {current.version}" if current else ""))
            logger.error("%s", self._message)
            self._checked_at = self._clock()
            return
        with self._lock:
            self._champion = champion  # the swap: one assignment, readers hold their own reference
        self._message = f"serving {champion.version}"
        self._checked_at = self._clock()
        logger.info("champion is now %s (loaded in %.1f s)", champion.version, time.monotonic() - started)
        if self.on_change is not None:
            threading.Thread(target=self.on_change, args=(champion,), name="champion-follow", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


def _unauthorized() -> JSONResponse:
    return JSONResponse({"detail": "authentication required"}, status_code=401,
                        headers={"WWW-Authenticate": 'Basic realm="alloop"'})


def _basic_auth_ok(header: str | None, user: str, password: str) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given_user, _, given_password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    # compare both always (constant time, no early exit on the user name)
    user_ok = secrets.compare_digest(given_user.encode(), user.encode())
    password_ok = secrets.compare_digest(given_password.encode(), password.encode())
    return user_ok and password_ok


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def list_versions(name: str) -> list[str]:
    from mlflow import MlflowClient

    escaped = name.replace("'", "\\'")
    versions = MlflowClient().search_model_versions(f"name='{escaped}'")
    return [f"{name}/{v}" for v in sorted((int(v.version) for v in versions))]


def watch_champion(holder: ChampionHolder, stop: threading.Event | None = None) -> threading.Thread:
    """Re-read the alias every ``refresh_seconds`` even when no request comes (a daemon thread)."""
    stop = stop or threading.Event()

    def loop():
        while not stop.wait(max(holder.refresh_seconds, 0.5)):
            holder.start_refresh()

    thread = threading.Thread(target=loop, name="champion-watch", daemon=True)
    thread.start()
    return thread


def create_app(settings: BackendSettings, *, holder: ChampionHolder | None = None,
               fetcher: ImageFetcher | None = None, load_now: bool = True) -> FastAPI:
    """The backend app; ``holder``/``fetcher`` can be injected (tests). Reads the champion now unless told not to.

    The server (``main``) also runs :func:`watch_champion`, so a promotion is picked up without traffic.
    """
    if not settings.model_name:
        raise ValueError("no model name: pass --model-name or set ALLOOP_MODEL_NAME")
    follower = ProjectFollower(settings.label_studio_url, settings.label_studio_api_key)
    holder = holder or ChampionHolder(settings.model_name, settings.refresh_seconds,
                                      tracking_uri=settings.tracking_uri, on_change=follower)
    fetcher = fetcher or ImageFetcher(settings.document_root, settings.label_studio_url,
                                      settings.label_studio_api_key, settings.allowed_roots,
                                      allow_external=settings.allow_external_urls,
                                      max_bytes=settings.max_image_bytes)
    schemas: dict[str, str] = {}  # project uid -> label config, from /setup
    if load_now:
        holder.current(force=True)

    app = FastAPI(title="alloop ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.holder = holder
    app.state.settings = settings
    app.state.follower = follower

    if settings.basic_auth:
        user, password = settings.basic_auth_user, settings.basic_auth_password

        @app.middleware("http")
        async def basic_auth(request: Request, call_next):
            if not _basic_auth_ok(request.headers.get("authorization"), user, password):
                logger.warning("refused %s %s: missing or wrong credentials", request.method, request.url.path)
                return _unauthorized()
            return await call_next(request)

    def message_for(champion: Champion | None) -> str:
        if holder.loading() and holder.target is not None and (champion is None or champion.ref != holder.target):
            return f"loading {holder.target}" + (f"; serving {champion.version} meanwhile" if champion else "")
        return holder.message

    @app.get("/health")
    async def health():
        champion = holder.peek()
        return {"status": "UP", "model_class": MODEL_CLASS,
                "champion": champion.version if champion else None, "message": message_for(champion)}

    @app.post("/setup")
    async def setup(request: Request):
        body = await _json_body(request)
        project = str(body.get("project") or "")
        schema = body.get("schema")
        # Re-read the alias; wait a little for a load (Label Studio gives /setup 3 s). A load that
        # takes longer goes on in the background and /predict waits for it.
        import anyio

        champion = await anyio.to_thread.run_sync(lambda: holder.current(force=True, timeout=SETUP_WAIT_SECONDS))
        if champion is None:
            version = str(holder.target) if holder.loading() and holder.target else NO_CHAMPION
        elif holder.loading() and holder.target is not None and holder.target != champion.ref:
            version = str(holder.target)
        else:
            version = champion.version
        if schema:
            try:
                target = target_for(str(schema), settings.from_name)
                if champion is not None:
                    map_classes(list(champion.class_names), target.choices, settings.label_map)
            except LabelConfigError as exc:
                logger.error("setup: project %s: the labeling config cannot be served: %s", project or "?", exc)
                return JSONResponse({"error": f"alloop backend: {exc}", "model_version": version}, status_code=422)
            if project:
                schemas[project] = str(schema)
        follower.saw(project)
        logger.info("setup: project %s -> model_version %s", project or "?", version)
        return {"model_version": version}

    @app.post("/predict")
    def predict(body: dict):
        tasks = body.get("tasks") or []
        if not isinstance(tasks, list):
            return JSONResponse({"error": "'tasks' must be a list"}, status_code=400)
        label_config = body.get("label_config") or schemas.get(str(body.get("project") or ""))
        follower.saw(body.get("project"))
        champion = holder.current()  # waits for a due refresh or a load /setup started
        results = predict_tasks(tasks, label_config, champion, fetcher, from_name=settings.from_name,
                                label_map=settings.label_map, reason_no_champion=holder.message,
                                limits=settings.limits)
        return {"results": results}

    @app.post("/webhook")
    async def webhook(request: Request):
        body = await _json_body(request)
        action = body.get("action") or "?"
        project = body.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if action == "START_TRAINING":
            logger.info("webhook: START_TRAINING for project %s ignored: train with `alloop` / mlflow run", project_id)
        else:
            logger.info("webhook: %s (project %s)", action, project_id)
        return {"status": "ok"}

    @app.get("/versions")
    def versions():
        champion = holder.peek()
        try:
            found = list_versions(settings.model_name)
            message = None
        except Exception as exc:
            found, message = [], f"cannot list versions: {exc.__class__.__name__}: {str(exc)[:200]}"
            logger.error("versions: %s", message)
        answer = {"versions": found, "champion": champion.version if champion else None}
        if message:
            answer["message"] = message
        return answer

    return app


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m integrations.labelstudio.backend",
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
    parser.add_argument("--no-auth", action="store_true", default=_truthy(os.environ.get("ALLOOP_BACKEND_NO_AUTH")),
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
