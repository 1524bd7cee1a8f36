"""Thin adapter over MLflow's tracking store and model registry.

Everything that names a registered model goes through here: the entry points (register, set
aliases), promotion, and later the Label Studio backend and the ``alloop`` loop (load the champion).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def configure_tracking() -> str:
    """Use ``MLFLOW_TRACKING_URI`` if set, else a local SQLite store ``./mlflow.db``.

    Set explicitly because a leftover ``./mlruns/`` would otherwise switch MLflow to its
    deprecated file store.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


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


def training_params(ref: VersionRef) -> dict[str, str]:
    """The params of the run that trained ``ref`` (empty when it has no run)."""
    run_id = version_tags(ref).get("run_id")
    if not run_id:
        return {}
    try:
        return dict(MlflowClient().get_run(run_id).data.params)
    except MlflowException:
        return {}


def versions_tag_values(name: str, key: str) -> list[str]:
    """The values of tag ``key`` over all versions of ``name`` that carry it."""
    return [v.tags[key] for v in all_versions(name) if key in v.tags]


def all_versions(name: str) -> list:
    """Every version of registered model ``name`` (MLflow ModelVersion objects)."""
    escaped = name.replace("'", "\\'")
    return list(MlflowClient().search_model_versions(f"name='{escaped}'"))
