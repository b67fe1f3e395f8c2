"""Batched prediction: one helper for every "predict images in chunks and concatenate" loop (evaluation,
reference embeddings, validation inside the Ray Train workers). Only numpy here, so the workers can use it
without importing the evaluation and publishing code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["predict_in_batches"]


def predict_in_batches(predict_fn: Callable[[np.ndarray], Any], images: np.ndarray, batch: int = 64, *,
                       flatten: bool = False) -> np.ndarray:
    """``predict_fn`` applied to ``images`` ``batch`` at a time, the outputs concatenated.

    ``predict_fn`` takes a batch of images and returns anything ``np.asarray`` accepts (a numpy array or a
    tensor). The result is 2-D, one row per image (each output flattened to a feature vector), or with
    ``flatten=True`` 1-D (one score per image for a single-output model). No images gives an empty float32
    array of shape ``(0,)`` or ``(0, 0)``."""
    if len(images) == 0:
        return np.zeros((0,) if flatten else (0, 0), np.float32)
    outputs = []
    for start in range(0, len(images), batch):
        out = np.asarray(predict_fn(images[start:start + batch]))
        outputs.append(out.reshape(-1) if flatten else out.reshape(len(out), -1))
    return np.concatenate(outputs)
