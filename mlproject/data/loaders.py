"""Loaders for the dataset layouts users point alloop at, and the labels manifest the loop writes.

Every loader returns ``list[LabeledImage]`` with absolute paths. Nothing is dropped silently:
an image a label file names but that is missing, or an image on disk no label file mentions, is an
error that names the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

from mlproject.data.records import DEFECT, OK, SOURCES, LabeledImage

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MANIFEST_FIELDS = ("image", "label", "source", "round")
LAYOUTS = ("dagm", "dagm-dev", "folders", "manifest")
DAGM_SPLITS = ("Train", "Test")


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the message names the file and what to fix."""


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --- DAGM 2007 -------------------------------------------------------------------------------------

def _parse_labels_txt(labels_file: Path) -> list[tuple[int, bool, str, str | None]]:
    """Rows of DAGM's ``Labels.txt``: header line, then ``id  flag  image  0  mask-or-0`` (tabs)."""
    rows = []
    lines = labels_file.read_text().splitlines()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 3 or fields[1] not in ("0", "1"):
            raise DatasetError(
                f"{labels_file}, line {number}: expected 'id <tab> 0|1 <tab> image <tab> 0 <tab> mask|0', got {line!r}"
            )
        mask = fields[4] if len(fields) >= 5 and fields[4] != "0" else None
        rows.append((number, fields[1] == "1", fields[2], mask))
    return rows


def _dagm_split(split_dir: Path) -> list[LabeledImage]:
    labels_file = split_dir / "Label" / "Labels.txt"
    if not labels_file.is_file():
        raise DatasetError(f"{split_dir}: no Label/Labels.txt, so this is not a DAGM 2007 split folder")
    records, listed = [], set()
    for number, defective, image_name, mask_name in _parse_labels_txt(labels_file):
        image = split_dir / image_name
        if not image.is_file():
            raise DatasetError(f"{labels_file}, line {number}: image {image_name} does not exist in {split_dir}")
        mask = split_dir / "Label" / mask_name if mask_name else None
        if mask is not None and not mask.is_file():
            raise DatasetError(f"{labels_file}, line {number}: mask {mask_name} does not exist")
        listed.add(image.name)
        records.append(LabeledImage(str(image.resolve()), DEFECT if defective else OK,
                                    mask_path=str(mask.resolve()) if mask else None))
    unlisted = [p.name for p in _images_in(split_dir) if p.name not in listed]
    if unlisted:
        raise DatasetError(f"{split_dir}: {len(unlisted)} images are not in {labels_file} "
                           f"(e.g. {', '.join(unlisted[:3])}); add them to Labels.txt or move them out")
    return records


def load_dagm(root, pattern: str = "Class1", splits=DAGM_SPLITS) -> list[LabeledImage]:
    """DAGM 2007 10-class layout ``root/ClassN/{Train,Test}/``; ``root`` may also be ``ClassN`` or a split folder."""
    root = Path(root)
    if (root / "Label" / "Labels.txt").is_file():
        return _dagm_split(root)
    class_dir = root / pattern if (root / pattern).is_dir() else root
    found = [class_dir / s for s in splits if (class_dir / s / "Label" / "Labels.txt").is_file()]
    if not found:
        raise DatasetError(f"{root}: no DAGM split ({'/'.join(splits)} with Label/Labels.txt) under {class_dir}")
    return [record for split_dir in found for record in _dagm_split(split_dir)]


def load_dagm_dev(root, pattern: str = "Class1") -> list[LabeledImage]:
    """The older development layout: ``root/ClassN/`` normal images, ``root/ClassN_def/`` defective."""
    root = Path(root)
    normal_dir, defect_dir = root / pattern, root / f"{pattern}_def"
    if not normal_dir.is_dir() or not defect_dir.is_dir():
        raise DatasetError(f"{root}: the development layout needs both {pattern}/ and {pattern}_def/")
    records = [LabeledImage(str(p.resolve()), OK) for p in _images_in(normal_dir)]
    records += [LabeledImage(str(p.resolve()), DEFECT) for p in _images_in(defect_dir)]
    return records


def load_folders(root) -> list[LabeledImage]:
    """One folder per label: ``root/<label>/*.png|jpg|jpeg|bmp|tif|tiff``."""
    root = Path(root)
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        others = [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            log.warning("%s: ignoring %d files that are not images by extension: %s", folder, len(others),
                        ", ".join(others[:5]))
        records += [LabeledImage(str(p.resolve()), folder.name) for p in _images_in(folder)]
    if not records:
        raise DatasetError(f"{root}: no <label>/ folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return records


# --- the labels manifest ---------------------------------------------------------------------------

def _manifest_rows(path: Path):
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"image", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{path}: missing column(s) {sorted(missing)}; expected {','.join(MANIFEST_FIELDS)}")
            for number, row in enumerate(reader, start=2):
                yield number, row
    else:
        raise DatasetError(f"{path}: a manifest must end in .csv or .jsonl")


def read_manifest(path) -> list[LabeledImage]:
    """Manifest rows ``image,label,source,round``; relative image paths are relative to the manifest."""
    path = Path(path)
    records, seen = [], {}
    for number, row in _manifest_rows(path):
        where = f"{path}, line {number}"
        image = str(row.get("image") or "").strip()
        label = str(row.get("label") or "").strip()
        source = str(row.get("source") or "import").strip()
        if not image:
            raise DatasetError(f"{where}: field 'image' is empty")
        if not label:
            raise DatasetError(f"{where}: field 'label' is empty for {image}")
        if source not in SOURCES:
            raise DatasetError(f"{where}: field 'source' must be one of {', '.join(SOURCES)}, got {source!r}")
        try:
            round_ = int(str(row.get("round") if row.get("round") not in (None, "") else 0))
        except ValueError:
            raise DatasetError(f"{where}: field 'round' must be an integer, got {row.get('round')!r}") from None
        if "://" not in image and not image.startswith("/data/") and not os.path.isabs(image):
            image = str((path.parent / image).resolve())
        if image in seen:
            if seen[image] != label:
                raise DatasetError(f"{where}: {image} is listed again with label {label!r} (was {seen[image]!r})")
            raise DatasetError(f"{where}: {image} is listed twice")
        seen[image] = label
        records.append(LabeledImage(image, label, source, round_))
    if not records:
        raise DatasetError(f"{path}: the manifest has no rows")
    return records


def write_manifest(path, records: list[LabeledImage]) -> Path:
    """Write ``records`` atomically (a crash never leaves half a manifest)."""
    path = Path(path)
    rows = [{"image": r.path, "label": r.label, "source": r.source, "round": r.round} for r in records]
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(row) + "\n" for row in rows)
    elif path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        raise DatasetError(f"{path}: a manifest must end in .csv or .jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def manifest_hash(records: list[LabeledImage]) -> str:
    """sha256 of the sorted (image, label, source, round) rows: the dataset's identity, order-independent."""
    lines = sorted(f"{r.path}\t{r.label}\t{r.source}\t{r.round}" for r in records)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def label_counts(records) -> dict[str, int]:
    return dict(sorted(Counter(r.label for r in records).items()))


def source_counts(records) -> dict[str, int]:
    return dict(sorted(Counter(r.source for r in records).items()))


# --- choosing a layout -----------------------------------------------------------------------------

def detect_layout(path, pattern: str = "Class1") -> str:
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl"):
        return "manifest"
    if not path.is_dir():
        raise DatasetError(f"{path}: no such folder or manifest file")
    if (path / "Label" / "Labels.txt").is_file() or any(
        (d / "Label" / "Labels.txt").is_file() for base in (path, path / pattern) for d in
        ([base / s for s in DAGM_SPLITS] if base.is_dir() else [])
    ):
        return "dagm"
    if (path / pattern).is_dir() and (path / f"{pattern}_def").is_dir():
        return "dagm-dev"
    if any(p.is_dir() and _images_in(p) for p in path.iterdir()):
        return "folders"
    raise DatasetError(
        f"{path}: not a dataset alloop knows. Supported: DAGM 2007 (ClassN/Train|Test/Label/Labels.txt), "
        "the development layout (ClassN/ + ClassN_def/), one folder per label, or a manifest .csv/.jsonl"
    )


def load_dataset(path, *, pattern: str = "Class1", layout: str = "auto") -> list[LabeledImage]:
    layout = detect_layout(path, pattern) if layout == "auto" else layout
    if layout == "dagm":
        return load_dagm(path, pattern)
    if layout == "dagm-dev":
        return load_dagm_dev(path, pattern)
    if layout == "folders":
        return load_folders(path)
    if layout == "manifest":
        return read_manifest(path)
    raise DatasetError(f"layout must be auto or one of {', '.join(LAYOUTS)}, got {layout!r}")
