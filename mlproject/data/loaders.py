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
from collections import Counter
from pathlib import Path

from integrations.files import atomic_write

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
    """Rows of DAGM's ``Labels.txt`` as ``(line number, defective, image name, mask name or None)``.

    Format: a header line, then one tab-separated row per image: ``id, 0|1, image, 0, mask-or-0``
    (the real file ends some rows with an extra tab, so trailing empty fields are ignored).
    """
    expected = "'id <tab> 0|1 <tab> image <tab> 0 <tab> mask|0'"
    rows, seen = [], {}
    lines = labels_file.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        while fields and not fields[-1]:
            fields.pop()
        if len(fields) < 3 or not fields[0].isdigit() or fields[1] not in ("0", "1") or not fields[2]:
            raise DatasetError(f"{labels_file}, line {number}: expected {expected}, got {line!r}")
        defective, image_name = fields[1] == "1", fields[2]
        mask_name = fields[4] if len(fields) >= 5 and fields[4] != "0" else None
        if image_name in seen:
            raise DatasetError(f"{labels_file}, line {number}: {image_name} is already listed on line {seen[image_name]}")
        seen[image_name] = number
        rows.append((number, defective, image_name, mask_name))
    return rows


def _dagm_split(split_dir: Path) -> list[LabeledImage]:
    labels_file = split_dir / "Label" / "Labels.txt"
    if not labels_file.is_file():
        raise DatasetError(f"{split_dir}: no Label/Labels.txt, so this is not a DAGM 2007 split folder")
    records = []
    for number, defective, image_name, mask_name in _parse_labels_txt(labels_file):
        image = split_dir / image_name
        if not image.is_file():
            raise DatasetError(f"{labels_file}, line {number}: image {image_name} does not exist in {split_dir}")
        mask = split_dir / "Label" / mask_name if mask_name else None
        if mask is not None and not mask.is_file():
            raise DatasetError(f"{labels_file}, line {number}: mask {mask_name} does not exist in {mask.parent}")
        records.append(LabeledImage(str(image.resolve()), DEFECT if defective else OK,
                                    mask_path=str(mask.resolve()) if mask else None))
    listed = {Path(r.path).name for r in records}
    unlisted = [p.name for p in _images_in(split_dir) if p.name not in listed]
    if unlisted:
        # Never drop an image silently: it may be a defect someone forgot to label.
        raise DatasetError(f"{split_dir}: {len(unlisted)} image(s) are not in {labels_file}: "
                           f"{', '.join(unlisted[:5])}{' ...' if len(unlisted) > 5 else ''}; "
                           "add them to Labels.txt or move them out of the folder")
    return records


def _is_dagm_split(folder: Path) -> bool:
    return (folder / "Label" / "Labels.txt").is_file()


def load_dagm(root, pattern: str = "Class1", splits=DAGM_SPLITS) -> list[LabeledImage]:
    """DAGM 2007 layout ``root/ClassN/{Train,Test}/`` with ``Label/Labels.txt``; absolute paths.

    ``root`` may also be the ``ClassN`` folder itself or one split folder. Only the splits that exist
    are read; a split folder without its ``Label/Labels.txt`` is an error, not skipped.
    """
    root = Path(root)
    if _is_dagm_split(root):
        return _dagm_split(root)
    class_dir = root / pattern if (root / pattern).is_dir() else root
    found = [class_dir / s for s in splits if (class_dir / s).is_dir()]
    if not found:
        raise DatasetError(f"{root}: no DAGM 2007 split folder ({', '.join(splits)}) under {class_dir}; "
                           f"expected {pattern}/Train/Label/Labels.txt or similar")
    return [record for split_dir in found for record in _dagm_split(split_dir)]


def _dev_masks(defect_dir: Path) -> dict[str, Path]:
    """Masks a user may keep next to development-layout defects (the original has none): image stem -> mask."""
    masks = {}
    for folder in (defect_dir, defect_dir / "Label"):
        for candidate in _images_in(folder) if folder.is_dir() else []:
            if candidate.stem.lower().endswith("_label"):
                masks[candidate.stem[: -len("_label")].lower()] = candidate
    return masks


def load_dagm_dev(root, pattern: str = "Class1") -> list[LabeledImage]:
    """The older development layout: ``root/ClassN/`` normal ("ok"), ``root/ClassN_def/`` defective.

    Masks are optional: ``ClassN_def/<name>_label.<ext>`` (or in ``ClassN_def/Label/``) if present.
    """
    root = Path(root)
    normal_dir, defect_dir = root / pattern, root / f"{pattern}_def"
    if not normal_dir.is_dir() or not defect_dir.is_dir():
        raise DatasetError(f"{root}: the development layout needs both {pattern}/ and {pattern}_def/")
    records = [LabeledImage(str(p.resolve()), OK) for p in _images_in(normal_dir)]
    masks = _dev_masks(defect_dir)
    for image in _images_in(defect_dir):
        if image.stem.lower().endswith("_label"):
            continue  # a mask, not a defect image
        mask = masks.get(image.stem.lower())
        records.append(LabeledImage(str(image.resolve()), DEFECT, mask_path=str(mask.resolve()) if mask else None))
    if not records:
        raise DatasetError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {pattern}/ or {pattern}_def/")
    return records


def load_folders(root) -> list[LabeledImage]:
    """One folder per label: ``root/<label>/*.png|jpg|jpeg|bmp|tif|tiff``; label = folder name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        others = sorted(p.name for p in folder.iterdir()
                        if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES and not p.name.startswith("."))
        if others:
            log.warning("%s: skipping %d file(s) that are not images by extension: %s%s", folder, len(others),
                        ", ".join(others[:10]), " ..." if len(others) > 10 else "")
        records += [LabeledImage(str(p.resolve()), folder.name) for p in _images_in(folder)]
    if not records:
        raise DatasetError(f"{root}: no <label>/ folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return records


# --- the labels manifest ---------------------------------------------------------------------------

def _manifest_kind(path: Path) -> str:
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "jsonl"):
        raise DatasetError(f"{path}: a manifest must end in .csv or .jsonl")
    return kind


def manifest_rows(path: Path, required: tuple[str, ...] = ("image", "label")):
    """``(line number, row dict)`` for each row of a CSV or JSONL manifest whose CSV header names the
    ``required`` columns; errors name the file and the line."""
    kind = _manifest_kind(path)
    if not path.is_file():
        raise DatasetError(f"{path}: manifest file does not exist")
    if kind == "jsonl":
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}, line {number}: expected a JSON object with {', '.join(MANIFEST_FIELDS)}")
            yield number, row
    else:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = sorted(set(required) - set(reader.fieldnames or []))
            if missing:
                raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (no "
                                   f"{' or '.join(repr(m) for m in missing)} column); expected a header "
                                   f"{','.join(MANIFEST_FIELDS)}")
            for row in reader:
                yield reader.line_num, row  # the line the row ends on (header is line 1)


def _parse_round(value, where: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or isinstance(value, float):
        raise DatasetError(f"{where}: field 'round' must be an integer, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise DatasetError(f"{where}: field 'round' must be an integer, got {value!r}") from None


def resolve_manifest_image(image: str, manifest: Path) -> str:
    """A manifest's image path: relative ones against the manifest's folder; URIs and absolute paths kept."""
    if "://" in image or os.path.isabs(image):
        return image
    return str((Path(manifest).parent / image).resolve())


def read_manifest(path) -> list[LabeledImage]:
    """Manifest rows ``image,label,source,round`` (CSV or JSONL, by extension).

    ``source`` defaults to "import" and ``round`` to 0; relative image paths are resolved against the
    manifest's folder, URIs are kept as they are. Errors name the file, the line and the field.
    """
    path = Path(path)
    records, seen = [], {}
    for number, row in manifest_rows(path):
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
        round_ = _parse_round(row.get("round"), where)
        image = resolve_manifest_image(image, path)
        if image in seen:
            first_line, first_label = seen[image]
            if first_label != label:
                raise DatasetError(f"{where}: {image} is listed again with label {label!r} "
                                   f"(line {first_line} says {first_label!r})")
            raise DatasetError(f"{where}: {image} is listed twice (also on line {first_line})")
        seen[image] = (number, label)
        records.append(LabeledImage(image, label, source, round_))
    if not records:
        raise DatasetError(f"{path}: the manifest has no rows")
    return records


def _manifest_text(kind: str, records: list[LabeledImage]) -> str:
    rows = [{"image": r.path, "label": r.label, "source": r.source, "round": int(r.round)} for r in records]
    if kind == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_manifest(path, records: list[LabeledImage]) -> Path:
    """Write ``records`` (paths as given) atomically: a crash never leaves half a manifest."""
    path = Path(path)
    text = _manifest_text(_manifest_kind(path), records)
    atomic_write(path, text)
    return path


def manifest_hash(records: list[LabeledImage]) -> str:
    """sha256 hex of the sorted (image, label, source, round) rows: the dataset's identity, order-independent."""
    rows = sorted([r.path, r.label, r.source, int(r.round)] for r in records)
    canonical = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))  # unambiguous, unlike joining with tabs
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def label_counts(records) -> dict[str, int]:
    return dict(sorted(Counter(r.label for r in records).items()))


def source_counts(records) -> dict[str, int]:
    return dict(sorted(Counter(r.source for r in records).items()))


# --- choosing a layout -----------------------------------------------------------------------------

SUPPORTED_LAYOUTS_HELP = (
    "Supported: dagm (DAGM 2007: ClassN/Train|Test/ with Label/Labels.txt), dagm-dev (the development "
    "layout: ClassN/ + ClassN_def/), folders (one <label>/ folder of images per label), or manifest "
    "(a .csv/.jsonl file with columns image,label,source,round)"
)


def detect_layout(root, pattern: str = "Class1") -> str:
    """One of :data:`LAYOUTS` for ``root``; :class:`DatasetError` listing the supported ones if none fits."""
    root = Path(root)
    if root.suffix.lower() in (".csv", ".jsonl") and not root.is_dir():
        return "manifest"
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder or manifest file. {SUPPORTED_LAYOUTS_HELP}")
    class_dir = root / pattern if (root / pattern).is_dir() else root
    if _is_dagm_split(root) or any(_is_dagm_split(class_dir / s) for s in DAGM_SPLITS):
        return "dagm"
    if (root / pattern).is_dir() and (root / f"{pattern}_def").is_dir():
        return "dagm-dev"
    if any(p.is_dir() and not p.name.startswith(".") and _images_in(p) for p in root.iterdir()):
        return "folders"
    raise DatasetError(f"{root}: not a dataset layout alloop knows (pattern {pattern!r}). {SUPPORTED_LAYOUTS_HELP}")


def load_dataset(path, *, pattern: str = "Class1", layout: str = "auto") -> list[LabeledImage]:
    """Records of the dataset at ``path`` (folder or manifest), in the given or detected layout."""
    if layout == "auto":
        layout = detect_layout(path, pattern)
    if layout == "dagm":
        return load_dagm(path, pattern)
    if layout == "dagm-dev":
        return load_dagm_dev(path, pattern)
    if layout == "folders":
        return load_folders(path)
    if layout == "manifest":
        return read_manifest(path)
    raise DatasetError(f"layout must be auto or one of {', '.join(LAYOUTS)}, got {layout!r}. {SUPPORTED_LAYOUTS_HELP}")
