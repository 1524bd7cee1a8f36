"""The backend's settings: flags, else environment variables (see :mod:`mlproject.serving.server`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from integrations.labelstudio.images import DEFAULT_MAX_BYTES
from mlproject.serving.predictions import DEFAULT_MAX_REQUEST_BYTES, PredictLimits


def truthy(value: str | None) -> bool:
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
            "allow_external_urls": truthy(env.get("ALLOOP_ALLOW_EXTERNAL_URLS")),
            "max_image_bytes": _bytes(env, "ALLOOP_MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES),
            "max_request_bytes": _bytes(env, "ALLOOP_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
