"""Scoring a loaded pyfunc model on labelled images read from disk."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mlproject.data.records import LabeledImage


def read_image_bytes(path: str) -> bytes:
    local = path[len("file://"):] if path.startswith("file://") else path
    return Path(local).read_bytes()


def score_records(model, records: list[LabeledImage], *, batch_size: int = 64, progress: bool = True):
    """P(defect) per record (NaN where unreadable) and ``{index: error}`` for the unreadable ones."""
    p_defect = np.full(len(records), np.nan)
    errors: dict[int, str] = {}
    for start in tqdm(range(0, len(records), batch_size), total=math.ceil(len(records) / batch_size),
                      desc="scoring", unit="batch", disable=not progress):
        chunk = records[start : start + batch_size]
        payload = []
        for offset, record in enumerate(chunk):
            try:
                payload.append(read_image_bytes(record.path))
            except OSError as exc:
                errors[start + offset] = f"cannot read {record.path}: {exc}"
                payload.append(b"")
        out = model.predict(pd.DataFrame({"image": payload, "source": [record.path for record in chunk]}))
        p_defect[start : start + len(chunk)] = out["p_defect"].to_numpy(dtype=float)
        for offset, message in enumerate(out["error"].tolist()):
            if message and (start + offset) not in errors:
                errors[start + offset] = message  # names the file (the source column)
    return p_defect, errors
