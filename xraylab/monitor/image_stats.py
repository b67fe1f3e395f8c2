"""Readable statistics of an image: what a person can check when the image-drift monitor fires.

The model's embeddings say *that* the images changed; these six numbers say *how* in words a reviewer
understands (darker, blurrier, smaller, a different shape). They are computed on the preprocessed pixels
the model sees, plus the original image's size, which preprocessing throws away.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["READABLE_STATS", "SIZE_STATS", "readable_statistics", "readable_statistics_batch"]

READABLE_STATS = ("brightness", "contrast", "sharpness", "width", "height", "aspect")
SIZE_STATS = ("width", "height", "aspect")  # of the original image, before preprocessing resized it

_LAPLACE_1D = np.array([1.0, -2.0, 1.0])


def _as_2d(pixels: np.ndarray) -> np.ndarray:
    x = np.asarray(pixels, np.float64)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D image or one of shape (H, W, 1), got shape {np.shape(pixels)}")
    return x


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got width {width}, height {height}")


def readable_statistics(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """``READABLE_STATS`` of one image as a float64 vector.

    ``pixels`` is the preprocessed image in [0, 1] (``(H, W)`` or ``(H, W, 1)``); ``width`` and ``height``
    are the original image's size in pixels. Brightness is the mean, contrast the standard deviation,
    sharpness the variance of the Laplacian (the usual variance-of-Laplacian focus measure: blur removes
    the fine edges the Laplacian responds to, so the variance drops), aspect is width / height."""
    _check_size(width, height)
    x = _as_2d(pixels)
    sharpness = float(ndimage.laplace(x).var())
    return np.array([x.mean(), x.std(), sharpness, float(width), float(height), width / height], np.float64)


def readable_statistics_batch(pixels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``READABLE_STATS`` of N images, shape ``(N, 6)``.

    ``pixels`` has shape ``(N, H, W)`` or ``(N, H, W, 1)``; ``sizes`` has shape ``(N, 2)`` of the original
    (width, height). Same numbers as ``readable_statistics`` row by row, computed in one pass."""
    x = np.asarray(pixels, np.float64)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, 1), got shape {np.shape(pixels)}")
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    if len(sizes) != len(x):
        raise ValueError(f"{len(x)} images but {len(sizes)} sizes")
    if not len(x):
        return np.empty((0, len(READABLE_STATS)), np.float64)
    width, height = sizes[:, 0], sizes[:, 1]
    if not np.all((width > 0) & (height > 0)):
        raise ValueError("image sizes must be positive")
    # ndimage.laplace is the sum of [1, -2, 1] along every axis (mode "reflect"); along H and W only here,
    # so the images of the batch do not mix.
    laplacian = sum(ndimage.correlate1d(x, _LAPLACE_1D, axis=axis, mode="reflect") for axis in (1, 2))
    flat = x.reshape(len(x), -1)
    sharpness = np.asarray(laplacian).reshape(len(x), -1).var(axis=1)
    return np.column_stack([flat.mean(axis=1), flat.std(axis=1), sharpness, width, height, width / height])
