"""Where the local Label Studio lives and how to reach it: the saved connection settings.

`alloop labelstudio start` writes them to `<state_dir>/labelstudio.json` (for Python) and
`<state_dir>/labelstudio.env` (for shells); every other command reads them from here.

Environment overrides:
    ALLOOP_STATE_DIR  where settings, data and files live (default `<repo>/.alloop`)
    ALLOOP_LS_VENV    the Label Studio venv (default `<repo>/.venv-labelstudio`)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, Optional

from integrations.files import atomic_write
from mlproject.state import REPO_ROOT, state_dir

log = logging.getLogger(__name__)

TokenKind = Literal["pat", "legacy"]


class LabelStudioError(RuntimeError):
    """A problem the user can act on; the message says what to do."""


def venv_dir() -> Path:
    return Path(os.environ.get("ALLOOP_LS_VENV") or REPO_ROOT / ".venv-labelstudio").resolve()


def default_settings_path() -> Path:
    return state_dir() / "labelstudio.json"


def default_data_dir() -> Path:
    return state_dir() / "labelstudio-data"


def default_document_root() -> Path:
    return state_dir() / "files"


def label_studio_executable(venv: Optional[Path] = None) -> Path:
    return Path(venv or venv_dir()) / "bin" / "label-studio"


@dataclass
class LabelStudioSettings:
    """How to reach the running server. Holds secrets: written with mode 0600."""

    url: str
    api_key: str
    token_kind: TokenKind
    username: str
    data_dir: str
    document_root: str
    pid: Optional[int]
    port: int
    # Kept so a restarted server (same data dir) can be logged into again for a new token.
    password: str = ""

    def save(self, path: Optional[Path] = None) -> Path:
        """Write the JSON settings and, next to them, a `.env` file with shell exports."""
        path = Path(path or default_settings_path())
        atomic_write(path, json.dumps(asdict(self), indent=2) + "\n", private=True)
        atomic_write(env_file_path(path), self.env_exports(), private=True)
        return path

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "LabelStudioSettings":
        path = Path(path or default_settings_path())
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def env_exports(self) -> str:
        # The variable names the SDK and Label Studio's own tools read.
        return (
            f"export LABEL_STUDIO_URL={_shell_quote(self.url)}\n"
            f"export LABEL_STUDIO_API_KEY={_shell_quote(self.api_key)}\n"
        )


def env_file_path(settings_path: Optional[Path] = None) -> Path:
    return Path(settings_path or default_settings_path()).with_suffix(".env")


def load_settings(path: Optional[Path] = None) -> Optional[LabelStudioSettings]:
    """The saved settings, or None when there are none (or they cannot be read)."""
    path = Path(path or default_settings_path())
    if not path.exists():
        return None
    try:
        return LabelStudioSettings.load(path)
    except (ValueError, TypeError) as exc:
        log.warning("Ignoring unreadable settings file %s: %s", path, exc)
        return None


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"
