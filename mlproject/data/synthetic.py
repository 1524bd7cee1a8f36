"""The embedded default data set: SYNTHETIC DAGM-like textures with elliptical defects.

Generated from a seed and written in the DAGM 2007 layout, so the same loader reads it; fast enough
for tests and the demo. It is not real inspection data and is called synthetic wherever it appears.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

README_NAME = "README.txt"
_README_TITLE = "SYNTHETIC DAGM-like data made by alloop (not real inspection images)."


def _gaussian_blur(image: np.ndarray, sigma_along: float, sigma_across: float, angle: float = 0.0) -> np.ndarray:
    """Oriented Gaussian blur in the frequency domain (periodic borders; fine for a texture)."""
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.fftfreq(image.shape[1])[None, :]
    along = fx * np.cos(angle) + fy * np.sin(angle)
    across = -fx * np.sin(angle) + fy * np.cos(angle)
    response = np.exp(-2 * np.pi**2 * ((sigma_along * along) ** 2 + (sigma_across * across) ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(image) * response))


def _texture(rng: np.random.Generator, size: int, grain_angle: float) -> np.ndarray:
    """Noisy background with an oriented grain (streaks along ``grain_angle``), like DAGM class 1."""
    grain = _gaussian_blur(rng.normal(size=(size, size)), 2.5, 0.6, grain_angle + rng.normal(scale=0.05))
    fine = rng.normal(scale=0.6, size=(size, size))
    return 128 + 28 * (grain / grain.std() + fine)


def _ellipse_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A filled ellipse with random center, axes and angle, like DAGM's weak defect labels."""
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.25, 0.75, size=2) * size
    a, b = rng.uniform(0.10, 0.22, size=2) * size
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _add_defect(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inside the ellipse the texture is smoothed and its brightness shifted: a local change of texture."""
    smooth = _gaussian_blur(image, 3.0, 3.0)
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(25, 45)
    soft = np.clip(_gaussian_blur(mask.astype(np.float64), 1.5, 1.5), 0, 1)  # no hard seam at the border
    return image * (1 - soft) + (smooth + shift) * soft


def _write_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L").save(path)


def _write_split(split_dir: Path, rng: np.random.Generator, defective: np.ndarray, size: int,
                 grain_angle: float) -> None:
    """Images, masks and ``Label/Labels.txt`` of one split, in the real DAGM 2007 format."""
    (split_dir / "Label").mkdir(parents=True)
    rows = ["1"]
    for number, is_defect in enumerate(defective, start=1):
        name = f"{number:04d}.PNG"
        image = _texture(rng, size, grain_angle)
        if is_defect:
            mask = _ellipse_mask(rng, size)
            image = _add_defect(image, mask, rng)
            mask_name = f"{number:04d}_label.PNG"
            _write_png(mask * 255.0, split_dir / "Label" / mask_name)
            rows.append(f"{number:04d}\t1\t{name}\t0\t{mask_name}")
        else:
            rows.append(f"{number:04d}\t0\t{name}\t0\t0\t")  # the real file ends "ok" rows with a tab
        _write_png(image, split_dir / name)
    (split_dir / "Label" / "Labels.txt").write_text("\n".join(rows) + "\n")


def _readme(params: dict) -> str:
    return (f"{_README_TITLE}\n"
            f"Textures from seeded Gaussian noise with an oriented grain; defects are elliptical patches\n"
            f"where the texture is smoothed and its brightness shifted. seed: {params['seed']}\n"
            f"params: {json.dumps(params, sort_keys=True)}\n")


def generate_synthetic_dagm(out_dir, *, n_images: int = 120, defect_fraction: float = 0.2, size: int = 128,
                            seed: int = 0, pattern: str = "Class1") -> Path:
    """Write ``out_dir/<pattern>/{Train,Test}/`` in the DAGM 2007 layout; return ``out_dir/<pattern>``.

    Same arguments -> the same bytes. Half the images go to Train, half to Test, each with its share
    of defects. An existing folder generated with the same parameters is reused (idempotent); one
    generated with other parameters is replaced; a folder this function did not make is never touched.
    """
    if n_images < 2 or not 0 <= defect_fraction <= 1 or size < 8:
        raise ValueError(f"need n_images >= 2, 0 <= defect_fraction <= 1 and size >= 8; got "
                         f"{n_images}, {defect_fraction}, {size}")
    out_dir = Path(out_dir)
    class_dir = out_dir / pattern
    readme = out_dir / README_NAME
    params = {"n_images": n_images, "defect_fraction": defect_fraction, "size": size, "seed": seed,
              "pattern": pattern}
    text = _readme(params)
    existing = readme.read_text() if readme.is_file() else None
    if existing == text and class_dir.is_dir():
        return class_dir
    # Any README starting "SYNTHETIC" is ours (older versions of alloop worded the rest differently).
    if class_dir.exists() and not (existing or "").startswith("SYNTHETIC"):
        raise FileExistsError(f"{class_dir} exists and is not synthetic data made by alloop; "
                              "choose another folder for the synthetic data set")

    rng = np.random.default_rng(seed)
    grain_angle = rng.uniform(0, np.pi)  # one surface orientation for the whole data set
    # At least 3 defects so that a stratified train/val/test split is possible.
    n_defects = min(n_images, max(3, round(n_images * defect_fraction)))
    n_train = n_images // 2
    n_train_defects = round(n_defects * n_train / n_images)
    halves = {"Train": (n_train, n_train_defects), "Test": (n_images - n_train, n_defects - n_train_defects)}

    out_dir.mkdir(parents=True, exist_ok=True)
    # Build next to the target and move it in at the end: an interrupted run leaves no half data set.
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".synthetic-"))
    try:
        for split, (count, count_defects) in halves.items():
            defective = np.zeros(count, dtype=bool)
            defective[rng.choice(count, size=count_defects, replace=False)] = True
            _write_split(staging / pattern / split, rng, defective, size, grain_angle)
        if class_dir.exists():
            shutil.rmtree(class_dir)  # synthetic data made with other parameters
        os.replace(staging / pattern, class_dir)
        readme_tmp = staging / README_NAME
        readme_tmp.write_text(text)
        os.replace(readme_tmp, readme)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return class_dir
