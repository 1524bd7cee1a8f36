"""Pooled backbone features of a dataset, computed once and cached on disk.

One ``.npz`` per (dataset manifest hash, weights, image size, pooling, layers): the backbone does not
train in the simulation's fast variant, so a second simulation of the same data (other strategies,
seeds, thresholds) starts at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from integrations.files import atomic_write
from mlproject.data.decode import TRAINING_FIT
from mlproject.data.images import BadFile, BadImagesError, load_images
from mlproject.models.backbone import hed_weights_path
from mlproject.state import state_dir

log = logging.getLogger("alloop.simulate")

#: Bump when what is stored in a feature cache file changes: old files are then recomputed.
FEATURE_CACHE_VERSION = 2  # 2: non-square images padded, not stretched


def default_cache_dir() -> Path:
    """``$ALLOOP_STATE_DIR/features`` (default ``<repo>/.alloop/features``)."""
    return state_dir() / "features"


def weights_identity(weights: str) -> str:
    """What identifies the backbone's weights in the cache key.

    A weights file is named by its resolved path, size and modification time, so replacing the file
    invalidates the cached features; ``none`` (random init) is keyed as such, so its cached features
    stay the ones of the first random draw.
    """
    if weights in ("imagenet", "none"):
        return weights
    if weights == "hed":
        path = hed_weights_path()
    else:
        path = Path(weights)
        if not path.is_file():
            return f"file:{weights}"  # building the backbone reports the missing file
    stat = path.resolve().stat()
    return f"{weights if weights == 'hed' else 'file'}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def feature_cache_key(manifest_hash: str, weights: str, image_size: int, pooling: str,
                      feature_layers: tuple[str, ...], skip_bad_images: bool) -> str:
    """sha256 (first 24 hex digits) of everything the features depend on."""
    identity = {"version": FEATURE_CACHE_VERSION, "manifest_hash": manifest_hash,
                "weights": weights_identity(weights), "image_size": int(image_size), "pooling": pooling,
                "feature_layers": list(feature_layers), "skip_bad_images": bool(skip_bad_images)}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


@dataclass
class FeatureSet:
    features: np.ndarray  # N x D float32, one row per loaded record
    records: list  # the LabeledImage records actually loaded, in row order
    bad_files: list  # BadFile: skipped, with the reason
    cache_path: Path
    key: str
    from_cache: bool
    info: dict = field(default_factory=dict)


def _read_cache(path: Path, records: list, key: str):
    """``(features, kept records, bad files)`` from a cache file, or None if it is missing or unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key:
                return None
            features = np.asarray(stored["features"], dtype=np.float32)
            paths = [str(p) for p in stored["paths"]]
            bad = [BadFile(str(p), str(r)) for p, r in zip(stored["bad_paths"], stored["bad_reasons"])]
    except Exception as exc:  # a truncated or foreign file: recompute rather than fail
        log.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
        return None
    by_path = {r.path: r for r in records}
    if len(paths) != len(features) or any(p not in by_path for p in paths):
        log.warning("feature cache %s does not match the dataset; recomputing", path)
        return None
    return features, [by_path[p] for p in paths], bad


def backbone_features(records: list, *, weights: str, image_size: int, pooling: str,
                      feature_layers: tuple[str, ...], manifest_hash: str, skip_bad_images: bool = False,
                      cache_dir: Path | None = None, rebuild: bool = False, batch_size: int = 16,
                      progress: bool = True) -> FeatureSet:
    """Pooled VGG16 features of ``records``, computed once and cached as an ``.npz``.

    Images are read and pushed through the backbone one batch at a time, so memory stays flat at any
    image size. Bad images raise one :class:`~mlproject.data.images.BadImagesError` naming them all,
    unless ``skip_bad_images``: then they are left out and returned in ``bad_files``.
    """
    key = feature_cache_key(manifest_hash, weights, image_size, pooling, feature_layers, skip_bad_images)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"features-{key}.npz"
    info = {"weights": weights, "image_size": image_size, "pooling": pooling,
            "feature_layers": ",".join(feature_layers), "manifest_hash": manifest_hash}
    if not rebuild:
        cached = _read_cache(path, records, key)
        if cached is not None:
            features, kept, bad = cached
            log.info("backbone features: reusing cache %s (%d images x %d features)", path, *features.shape)
            return FeatureSet(features, kept, bad, path, key, True, info)

    # Keras loads only when features are computed, not for a cache hit.
    from mlproject.models.variants import build_feature_extractor
    from mlproject.training.batches import predict_in_batches

    log.info("backbone features: computing %s (%d images, %s weights, %d px, %s pooling of %s)",
             path, len(records), weights, image_size, pooling, ",".join(feature_layers))
    extractor = build_feature_extractor(weights, image_size, feature_layers=tuple(feature_layers), pooling=pooling)
    chunks, kept, bad = [], [], []
    with tqdm(total=len(records), desc=f"backbone features ({weights}, {image_size}px)", unit="img",
              disable=not progress) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            # Read on past a bad file so one error names them all; features only while none is bad.
            images, loaded, bad_here = load_images(chunk, image_size, skip_bad=True, progress=False,
                                                   fit=TRAINING_FIT)
            if len(images) and (skip_bad_images or not (bad or bad_here)):
                chunks.append(predict_in_batches(extractor, images, batch_size=batch_size, progress=False))
            kept.extend(loaded)
            bad.extend(bad_here)
            bar.update(len(chunk))
    if bad and not skip_bad_images:
        raise BadImagesError(bad)
    dim = int(extractor.output.shape[-1])
    features = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
    atomic_write(path, lambda handle: np.savez(
        handle, key=np.array(key), features=features, paths=np.array([r.path for r in kept], dtype=str),
        bad_paths=np.array([b.path for b in bad], dtype=str), bad_reasons=np.array([b.reason for b in bad], dtype=str),
        info=np.array(json.dumps(info))))
    log.info("backbone features: wrote %s", path)
    return FeatureSet(features, kept, bad, path, key, False, info)
