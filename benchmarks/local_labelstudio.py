"""A real Label Studio for a benchmark: its data, files and settings under the benchmark's out folder."""

from __future__ import annotations

from pathlib import Path


def start_label_studio(out: Path):
    """Install Label Studio if it is missing and start it on a free port; returns its settings."""
    from integrations.labelstudio.server import install, start
    from integrations.labelstudio.settings import label_studio_executable
    from integrations.processes import free_port

    if not label_studio_executable().exists():
        install(say=print)
    return start(port=free_port(), data_dir=out / "ls-data", document_root=out / "files",
                 settings_path=out / "labelstudio.json", timeout=900, say=print)
