"""Thin adapter: a named lock kept in MLflow's model registry (for ``alloop sync``'s round lock).

Registered model names are unique in the registry's database, so ``create`` is an atomic
test-and-set that works for every machine sharing the tracking server; ``rename`` is atomic too,
and ``delete`` removes the name for good. The lock's facts (holder, heartbeat) are its tags.
What those facts mean (is a lock stale?) is decided elsewhere (:mod:`mlproject.loop.round_lock`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

_EXISTS = "RESOURCE_ALREADY_EXISTS"
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


@dataclass(frozen=True)
class LockRecord:
    name: str
    tags: dict
    created_ms: int


def create(name: str, tags: dict, description: str) -> bool:
    """True when this call made the lock; False when a lock of that name exists already."""
    try:
        MlflowClient().create_registered_model(name, tags={k: str(v) for k, v in tags.items()},
                                               description=description)
    except MlflowException as exc:
        if exc.error_code == _EXISTS:
            return False
        raise
    return True


def read(name: str) -> LockRecord | None:
    try:
        model = MlflowClient().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise
    return LockRecord(model.name, dict(model.tags), int(model.creation_timestamp or 0))


def set_tags(name: str, tags: dict) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_registered_model_tag(name, key, str(value))


# PostgreSQL (not SQLite, which serialises writers) lets two renames of one row run at once: the loser's
# UPDATE matches no row and MLflow reports SQLAlchemy's stale-data error as a bad request.
_LOST_UPDATE = "0 were matched"


def rename(name: str, new_name: str) -> bool:
    """True when renamed; False when ``name`` is gone (another rename got there first) or ``new_name`` is taken."""
    try:
        MlflowClient().rename_registered_model(name, new_name)
    except MlflowException as exc:
        if exc.error_code == _EXISTS or exc.error_code in _MISSING or _LOST_UPDATE in str(exc):
            return False
        raise
    return True


def delete(name: str) -> bool:
    """True when deleted; False when it was gone already."""
    try:
        MlflowClient().delete_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return False
        raise
    return True
