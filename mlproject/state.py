"""Where alloop keeps its local state (Label Studio settings and data, caches, locks, service records).

One folder, ``$ALLOOP_STATE_DIR`` or ``.alloop/`` in the checkout, so a user can see, back up or
delete everything alloop wrote outside MLflow in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    return Path(os.environ.get("ALLOOP_STATE_DIR") or REPO_ROOT / ".alloop").resolve()
