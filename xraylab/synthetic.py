"""Generated chest radiographs, because no real labelled X-rays can be downloaded here.

Each image has a body outline, two darker lung fields, ribs, a spine and a heart shadow, film
grain and blur. PNEUMONIA images add one to three patchy opacities inside a lung field: a
learnable but non-trivial pattern. ``write_dataset`` writes the Kaggle chest-xray layout
``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` with about 3:1 PNEUMONIA:NORMAL.

These images are synthetic: a model trained on them says nothing about real patients.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from xraylab.labels import NORMAL_CLASS, PNEUMONIA_CLASS

__all__ = ["generate_xray", "encode_jpeg", "write_dataset", "DRIFT_KINDS", "apply_drift"]

# Drift the uploader can inject, as the reference monitor's data generator does (``apply_drift``).
DRIFT_KINDS = ("blur", "transpose", "brightness", "noise")


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def generate_xray(rng: np.random.Generator, pneumonia: bool, size: int = 224) -> np.ndarray:
    """One synthetic frontal chest radiograph, ``uint8 (size, size)``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.full((size, size), 0.08, np.float32)
    # Body (soft tissue) and lung fields.
    img += 0.45 * (_ellipse(yy, xx, 0.55, 0.5, 0.55, 0.42 + rng.normal(0, 0.02)) < 1)
    lung_y = 0.48 + rng.normal(0, 0.02)
    lungs = []
    for side in (-1, 1):
        cx = 0.5 + side * (0.17 + rng.normal(0, 0.01))
        d = _ellipse(yy, xx, lung_y, cx, 0.28 + rng.normal(0, 0.02), 0.12 + rng.normal(0, 0.01))
        lung = np.clip(1.2 - d, 0, 1) ** 0.5
        lungs.append((cx, lung))
        img -= 0.30 * lung
    # Ribs: bright bands across the lungs.
    phase = rng.uniform(0, 2 * np.pi)
    rib_freq = rng.uniform(9, 12)
    ribs = np.clip(np.sin(2 * np.pi * rib_freq * (yy + 0.15 * (xx - 0.5) ** 2 * 4) + phase), 0, 1) ** 3
    img += 0.10 * ribs * (lungs[0][1] + lungs[1][1])
    # Spine and heart.
    img += 0.25 * np.exp(-((xx - 0.5) / 0.035) ** 2) * (yy > 0.15)
    img += 0.22 * (_ellipse(yy, xx, 0.62, 0.46, 0.13, 0.12 + rng.normal(0, 0.01)) < 1)
    if pneumonia:
        for _ in range(rng.integers(1, 4)):
            cx, lung = lungs[rng.integers(0, 2)]
            cy = lung_y + rng.uniform(-0.12, 0.2)
            ox = cx + rng.uniform(-0.06, 0.06)
            r = rng.uniform(0.05, 0.11)
            blob = np.exp(-(((yy - cy) ** 2 + (xx - ox) ** 2) / (2 * r**2)))
            mottle = rng.random((size // 8, size // 8)).astype(np.float32)
            mottle = np.asarray(Image.fromarray(mottle, "F").resize((size, size), Image.Resampling.BILINEAR))
            img += rng.uniform(0.18, 0.32) * blob * (0.5 + mottle) * (lung > 0.05)
    img *= rng.uniform(0.85, 1.15)
    img += rng.normal(0, 0.035, img.shape).astype(np.float32)
    out = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8), "L")
    out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.6, 1.4))))
    return np.asarray(out)


def encode_jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_dataset(root: Path, n_per_split: dict[str, int] | None = None, *, pneumonia_ratio: float = 0.75,
                  size: int = 224, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write ``root/{split}/{NORMAL,PNEUMONIA}/*.jpeg``; returns counts per split and class."""
    n_per_split = n_per_split or {"train": 400, "val": 80, "test": 120}
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    for split, total in n_per_split.items():
        n_pneu = int(round(total * pneumonia_ratio))
        counts[split] = {NORMAL_CLASS: total - n_pneu, PNEUMONIA_CLASS: n_pneu}
        for cls, n in counts[split].items():
            folder = Path(root) / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = generate_xray(rng, cls == PNEUMONIA_CLASS, size)
                (folder / f"{split}-{cls.lower()}-{i:05d}.jpeg").write_bytes(encode_jpeg(arr))
    return counts


def apply_drift(arr: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """``arr`` (uint8 grey) as a changed scanner or protocol would make it; ``strength`` in (0, 1].

    blur: a Gaussian blur of radius 1 + 5 * strength px; transpose: rows and columns swapped (a rotated
    acquisition) for a share ``strength`` of the images; brightness: + 90 * strength grey levels; noise: Gaussian
    noise of sd 40 * strength grey levels."""
    if kind not in DRIFT_KINDS:
        raise ValueError(f"unknown drift {kind!r}: one of {', '.join(DRIFT_KINDS)}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"drift strength {strength} is not in (0, 1]")
    if kind == "blur":
        return np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(radius=1 + 5 * strength)))
    if kind == "transpose":
        return np.ascontiguousarray(arr.T) if rng.random() < strength else arr
    if kind == "brightness":
        return np.clip(arr.astype(np.float32) + 90 * strength, 0, 255).astype(np.uint8)
    noisy = arr.astype(np.float32) + rng.normal(0, 40 * strength, arr.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)
