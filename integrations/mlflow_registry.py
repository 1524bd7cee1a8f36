"""Thin adapter over MLflow's tracking store and model registry.

Everything that names a registered model goes through here: the entry points (register, set
aliases), promotion, and later the Label Studio backend and the ``alloop`` loop (load the champion).
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


WAIT_ENV = "ALLOOP_MLFLOW_TIMEOUT"  # seconds one MLflow call may take to give up on a server that is down
DEFAULT_WAIT_S = 30.0
# MLflow's own defaults (7 retries, backoff factor 2, 120 s per request) spend about 250 s retrying a
# closed port before they fail: bounded here unless the user set them.
_RETRY_VARS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")
_set_by_us: set[str] = set()


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached; the message says where and what to check."""


def configure_tracking() -> str:
    """Use ``MLFLOW_TRACKING_URI`` if set, else a local SQLite store ``./mlflow.db``; bound MLflow's
    HTTP retries by :func:`wait_seconds` (the ``MLFLOW_HTTP_REQUEST_*`` variables a user set win).

    Set explicitly because a leftover ``./mlruns/`` would otherwise switch MLflow to its
    deprecated file store.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    for key, value in http_retry_env(wait_seconds()).items():
        if key not in os.environ or key in _set_by_us:  # child `mlflow run`s inherit them too
            os.environ[key] = value
            _set_by_us.add(key)
    mlflow.set_tracking_uri(uri)
    return uri


def wait_seconds() -> float:
    """``ALLOOP_MLFLOW_TIMEOUT`` (default 30 s)."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_WAIT_S
    except ValueError:
        value = -1.0
    if not value >= 1.0:
        raise ValueError(f"{WAIT_ENV}={raw!r}: give the seconds an MLflow call may wait, at least 1 (default 30)")
    return value


def _backoff_s(retries: int, factor: int, jitter: float) -> float:
    """urllib3's worst-case sleeps over ``retries`` retries: none before the first, then factor * 2**(k-1) + jitter."""
    return sum(factor * 2 ** (k - 1) + jitter for k in range(2, retries + 1))


def http_retry_env(wait_s: float) -> dict[str, str]:
    """``MLFLOW_HTTP_REQUEST_*`` values under which one MLflow HTTP call gives up within ``wait_s``,
    whether the server refuses connections or hangs: (retries + 1) * timeout + backoff <= wait_s.

    A few retries (a sixth of the wait at most goes to sleeping) ride out a server restart; the rest
    of the wait is shared by the attempts as their timeout (MLflow takes whole seconds).
    """
    factor, jitter = 1, 0.5
    for retries in range(7, -1, -1):
        backoff = _backoff_s(retries, factor, jitter)
        timeout = int((wait_s - backoff) / (retries + 1))
        if backoff <= wait_s / 6 and timeout >= 1:
            break
    else:
        retries, timeout = 0, 1
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(factor),
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(jitter), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}


def worst_case_seconds(env: dict[str, str]) -> float:
    """How long one call may take under ``env`` (the :func:`http_retry_env` values) before it gives up."""
    retries = int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    backoff = _backoff_s(retries, int(env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]),
                         float(env["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"]))
    return (retries + 1) * float(env["MLFLOW_HTTP_REQUEST_TIMEOUT"]) + backoff


def redact(uri: str) -> str:
    """The URI without a user:password part, for messages."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def check_tracking_server(uri: str | None = None, wait_s: float | None = None) -> None:
    """For an http(s) tracking URI: raise :class:`TrackingUnavailable` unless the server answers within
    ``wait_s`` (default :func:`wait_seconds`). Any HTTP answer counts (a path prefix may 404 /health)."""
    import requests

    uri = uri or mlflow.get_tracking_uri()
    if not str(uri).lower().startswith(("http://", "https://")):
        return
    wait_s = wait_seconds() if wait_s is None else wait_s
    started = time.monotonic()
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=wait_s)
        reason = f"it answered {response.status_code}" if response.status_code in (502, 503, 504) else None
    except requests.exceptions.SSLError:
        reason = None  # it is there; MLflow's own TLS settings (MLFLOW_TRACKING_INSECURE_TLS, ...) decide
    except requests.exceptions.Timeout:
        reason = "no answer"
    except requests.exceptions.ConnectionError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    if reason is None:
        return
    raise TrackingUnavailable(
        f"cannot reach the MLflow tracking server at {redact(uri)} ({reason}, {time.monotonic() - started:.0f} s; "
        f"{WAIT_ENV}={wait_s:g}): start it (`mlflow server --host HOST --port PORT`) or point MLFLOW_TRACKING_URI "
        "at a running one")


def one_line(exc: Exception) -> str:
    """An MLflow error as one line for the user: what failed, where, and what to check."""
    uri = redact(mlflow.get_tracking_uri())
    text = str(exc)
    first = next((line.strip() for line in text.splitlines() if line.strip()), exc.__class__.__name__)
    if "Max retries exceeded" in text or "NewConnectionError" in text:  # urllib3's wording says little
        first = "the server could not be reached" + (" (connection refused)" if "refused" in text.lower() else "")
    first = re.sub(r"(https?://)[^@\s/]+@", r"\1", first)  # never echo credentials in a URL
    return (f"MLflow at {uri} failed: {first[:300]}. Check that the tracking server is up and MLFLOW_TRACKING_URI "
            f"points at it ({WAIT_ENV} sets how long a call waits)")


@dataclass(frozen=True)
class VersionRef:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:  # what predictions report as their model_version
        return f"{self.name}/{self.version}"


def resolve(name: str, ref: str) -> VersionRef | None:
    """``ref`` is an alias (``champion``) or a version number; ``None`` if it does not exist."""
    client = MlflowClient()
    try:
        if str(ref).isdigit():
            return VersionRef(name, str(client.get_model_version(name, str(ref)).version))
        return VersionRef(name, str(client.get_model_version_by_alias(name, ref).version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def require(name: str, ref: str) -> VersionRef:
    found = resolve(name, ref)
    if found is None:
        raise LookupError(
            f"registered model {name!r} has no version or alias {ref!r} in {mlflow.get_tracking_uri()}. "
            f"Train one first (`mlflow run . -e finetune -P registered_model_name={name}`) or check "
            "MLFLOW_TRACKING_URI."
        )
    return found


def register(model_uri: str, name: str, *, tags: dict[str, str], aliases: tuple[str, ...] = (CHALLENGER,)) -> VersionRef:
    """Register ``model_uri`` as a new version of ``name``, tag it and point ``aliases`` at it."""
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    client = MlflowClient()
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return VersionRef(name, str(version.version))


def set_alias(ref: VersionRef, alias: str) -> None:
    MlflowClient().set_registered_model_alias(ref.name, alias, ref.version)


def tag_version(ref: VersionRef, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(ref.name, ref.version, key, str(value))


def version_tags(ref: VersionRef) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(ref.name, ref.version).tags)


def load_pyfunc(ref: VersionRef):
    """Load a registered version; its predictions report ``NAME/VERSION`` as their model version."""
    return mlflow.pyfunc.load_model(ref.uri, model_config={"model_version": str(ref)})


def find_version(name: str, tags: dict[str, str]) -> VersionRef | None:
    """The newest version of ``name`` carrying all of ``tags`` (e.g. the one a resumed round trained)."""
    matching = [v for v in all_versions(name) if all(v.tags.get(k) == str(val) for k, val in tags.items())]
    if not matching:
        return None
    return VersionRef(name, str(max(int(v.version) for v in matching)))


CHOSEN_SUFFIX = "_chosen"  # a param a search chose: ``C=auto`` was run, ``C_chosen`` is what won


def training_params(ref: VersionRef) -> dict[str, str]:
    """The params of the run that trained ``ref`` (empty when it has no run), with what its search chose
    in place of ``auto``: a retrain then reuses the winner instead of searching again."""
    run_id = version_tags(ref).get("run_id")
    if not run_id:
        return {}
    try:
        params = dict(MlflowClient().get_run(run_id).data.params)
    except MlflowException:
        return {}
    for key, value in list(params.items()):
        if key.endswith(CHOSEN_SUFFIX) and key[: -len(CHOSEN_SUFFIX)] in params:
            params[key[: -len(CHOSEN_SUFFIX)]] = value
    return params


TRAINING_SPLIT_ARTIFACT = "data/split.csv"  # every training run logs the records it split, one row each


def training_rows(ref: VersionRef) -> list[dict[str, str]]:
    """The rows (image, label, source, round, split) of the data that trained ``ref``; empty when its run
    is gone or logged none."""
    run_id = version_tags(ref).get("run_id")
    if not run_id:
        return []
    with tempfile.TemporaryDirectory(prefix="alloop-split-") as tmp:
        try:
            local = MlflowClient().download_artifacts(run_id, TRAINING_SPLIT_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return []
        with open(local, newline="") as handle:
            return list(csv.DictReader(handle))


def versions_tag_values(name: str, key: str) -> list[str]:
    """The values of tag ``key`` over all versions of ``name`` that carry it."""
    return [v.tags[key] for v in all_versions(name) if key in v.tags]


def all_versions(name: str) -> list:
    """Every version of registered model ``name`` (MLflow ModelVersion objects)."""
    escaped = name.replace("'", "\\'")
    return list(MlflowClient().search_model_versions(f"name='{escaped}'"))
