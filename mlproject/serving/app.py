"""The ML backend's FastAPI app: the protocol Label Studio 1.23 speaks.

``GET /health``, ``POST /setup``, ``POST /predict``, ``POST /webhook``, ``GET /versions``, with
optional basic auth. The model is ``models:/NAME@champion`` (:mod:`mlproject.serving.holder`).
"""

from __future__ import annotations

import base64
import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from integrations.labelstudio.images import ImageFetcher
from integrations.labelstudio.label_config import LabelConfigError
from mlproject.serving.champion import Champion
from mlproject.serving.follower import ProjectFollower
from mlproject.serving.holder import ChampionHolder
from mlproject.serving.predictions import NO_CHAMPION, predict_tasks, target_for
from mlproject.serving.settings import BackendSettings

logger = logging.getLogger("alloop.serving")

MODEL_CLASS = "alloop"
SETUP_WAIT_SECONDS = 2.0  # Label Studio gives /setup 3 s


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
    from integrations import mlflow_registry

    return [f"{name}/{v}" for v in sorted(int(v.version) for v in mlflow_registry.all_versions(name))]


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
                    champion.choices_for(target, settings.label_map)
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
