"""The labelled folder layout of the chest X-ray pneumonia set, read with the serving preprocessing.

``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.{jpeg,jpg,png}`` (any size, grayscale or RGB). Label 1 is
PNEUMONIA. A missing split or class folder, or an empty one, is an error (never a silently wrong
dataset); an unreadable image is skipped and counted.

A layout without ``val/`` (the Kermany set as shared here has only train and test; Kaggle's own ``val/`` holds
16 images) gets a validation split carved from ``train/``: ``val_fraction`` of each class, chosen by a seeded
permutation of the sorted file list, so every worker and every later run carves the same one
(``DatasetIndex.val_split`` records how, for the model card).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xraylab.imaging import InvalidImageError, PreprocessSpec, inference_transforms
from xraylab.labels import CLASSES

__all__ = ["DatasetLayoutError", "DatasetIndex", "scan_layout", "load_images", "original_sizes", "SPLITS",
           "IMAGE_SUFFIXES"]

log = logging.getLogger("xraylab.train.dataset")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class DatasetLayoutError(ValueError):
    """The folder does not have the expected layout."""


DEFAULT_VAL_FRACTION = 0.1


@dataclass
class DatasetIndex:
    root: Path
    files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # split -> [(path, label)]
    # how the val split was made: {"source": "folder"} or {"source": "carved from train", "fraction", "seed", ...}
    val_split: dict[str, object] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        return {split: {cls: sum(1 for _, y in items if y == i) for i, cls in enumerate(CLASSES)}
                for split, items in self.files.items()}

    def class_weights(self, split: str = "train") -> dict[int, float]:
        """``n / (2 * n_c)``: each class contributes equally to the loss."""
        labels = [y for _, y in self.files[split]]
        n = len(labels)
        return {c: n / (2.0 * max(1, labels.count(c))) for c in (0, 1)}

    def fingerprint(self) -> str:
        """sha256 over (relative path, size) of every file: which data a model was trained on."""
        digest = hashlib.sha256()
        for split in sorted(self.files):
            for path, label in sorted(self.files[split]):
                p = Path(path)
                digest.update(f"{p.relative_to(self.root)}\t{label}\t{p.stat().st_size}\n".encode())
        return digest.hexdigest()


def _scan_split(root: Path, split: str) -> list[tuple[str, int]]:
    items: list[tuple[str, int]] = []
    if not (root / split).is_dir():
        raise DatasetLayoutError(f"missing split folder {root / split} (expected {'/'.join(SPLITS)}; "
                                 "val may be left out, then it is carved from train)")
    for label, cls in enumerate(CLASSES):
        folder = root / split / cls
        if not folder.is_dir():
            raise DatasetLayoutError(f"missing class folder {folder} (expected {' and '.join(CLASSES)})")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetLayoutError(f"no JPEG/PNG images in {folder}")
        items.extend((str(p), label) for p in files)  # under the resolved root; a linked file stays a link
    return items


def carve_val(items: list[tuple[str, int]], fraction: float, seed: int) -> tuple[list[tuple[str, int]],
                                                                                    list[tuple[str, int]]]:
    """(train, val): ``fraction`` of each class (at least one image) to val, by a permutation seeded with ``seed``;
    both keep the input's order."""
    if not 0.0 < fraction < 1.0:
        raise DatasetLayoutError(f"val fraction must be between 0 and 1, not {fraction}")
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for label in (0, 1):
        members = [i for i, (_, y) in enumerate(items) if y == label]
        if len(members) < 2:
            raise DatasetLayoutError(f"too few {CLASSES[label]} images in train to carve a val split from")
        take = min(len(members) - 1, max(1, round(fraction * len(members))))
        chosen.update(members[i] for i in rng.permutation(len(members))[:take])
    return ([item for i, item in enumerate(items) if i not in chosen],
            [item for i, item in enumerate(items) if i in chosen])


def scan_layout(root: Path | str, splits: tuple[str, ...] = SPLITS, *, val_fraction: float = DEFAULT_VAL_FRACTION,
                seed: int = 0) -> DatasetIndex:
    """The files of ``splits``; without a ``val/`` folder, val (and train) come from ``carve_val`` of train."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder")
    index = DatasetIndex(root=root.resolve())
    root = index.root
    carve = "val" in splits and not (root / "val").exists()
    for split in splits:
        if not (carve and split == "val"):
            index.files[split] = _scan_split(root, split)
    if carve:
        train = index.files.get("train") or _scan_split(root, "train")
        remaining, index.files["val"] = carve_val(train, val_fraction, seed)
        if "train" in splits:
            index.files["train"] = remaining
        index.val_split = {"source": "carved from train (stratified)", "fraction": val_fraction, "seed": seed,
                           "n": len(index.files["val"])}
    elif "val" in splits:
        index.val_split = {"source": "folder", "n": len(index.files["val"])}
    index.files = {split: index.files[split] for split in splits}
    return index


def load_images(items: list[tuple[str, int]], spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images ``float32 (N, H, W, 1)``, labels ``float32 (N,)``, skipped paths) through the serving chain."""
    transform = inference_transforms(spec)
    images, labels, skipped = [], [], []
    for path, label in items:
        try:
            images.append(transform(Path(path).read_bytes()))
            labels.append(label)
        except (InvalidImageError, OSError) as exc:
            log.warning("skipping unreadable image %s: %s", Path(path).name, exc)
            skipped.append(path)
    if not images:
        return np.zeros((0, spec.height, spec.width, 1), np.float32), np.zeros((0,), np.float32), skipped
    return np.stack(images), np.asarray(labels, np.float32), skipped


def original_sizes(paths: list[str]) -> np.ndarray:
    """``(width, height)`` of each image file from its header (no decoding), as the drift monitor records them."""
    from PIL import Image

    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append(image.size)
    return np.asarray(sizes, np.float64).reshape(-1, 2)
