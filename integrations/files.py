"""The one atomic file write: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path, content: str | bytes | Callable[[IO[bytes]], None], *, private: bool = False) -> Path:
    """Write ``content`` (text, bytes, or a function writing to a binary handle) to ``path`` through
    a temporary file in the same folder, fsynced, then renamed over ``path``.

    ``private`` files are readable by their owner only, from creation on (secrets are never
    world-readable, even briefly); others get 0644. A failure leaves ``path`` as it was and no
    temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        if not private:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
