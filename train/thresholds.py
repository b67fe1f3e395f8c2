"""Risk bands chosen on the validation split, for a model trained on real X-rays.

A triage tool must not bury sick children: the Unsure threshold is the highest score at which "Pneumonia or
Unsure" still catches ``sensitivity`` of the validation split's pneumonia cases, so Normal keeps as much
specificity as that allows. The Pneumonia threshold is the lowest score above which at most ``1 - specificity``
of the validation normals fall (the top band is one a reader can trust), and never under the Unsure one.
Both are chosen on calibrated scores, the ones serving bands, and never on the test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xraylab.bands import Bands

__all__ = ["choose_bands", "rates_at"]


def rates_at(y: np.ndarray, scores: np.ndarray, threshold: float, *, strict: bool = False) -> dict[str, float]:
    """Sensitivity and specificity of "score >= threshold" (``strict``: ">", as the Pneumonia band is)."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, np.float64)
    positive = scores > threshold if strict else scores >= threshold
    return {"threshold": float(threshold),
            "sensitivity": float(positive[y].mean()) if y.any() else float("nan"),
            "specificity": float((~positive[~y]).mean()) if (~y).any() else float("nan")}


def choose_bands(y: np.ndarray, scores: np.ndarray, *, sensitivity: float = 0.95,
                 specificity: float = 0.95) -> tuple[Bands, dict[str, Any]]:
    """(bands, how they were chosen: the targets and the validation rates at each threshold)."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, np.float64)
    if not y.any() or y.all():
        raise ValueError("the validation split needs both classes to choose bands")
    positives = np.sort(scores[y])
    # the k-th lowest pneumonia score, k = the misses allowed: thresholding there keeps >= sensitivity of them
    allowed_misses = int(np.floor((1.0 - sensitivity) * len(positives) + 1e-9))
    unsure = float(np.clip(np.floor(positives[allowed_misses] * 1e4) / 1e4, 0.0, 1.0))  # down: none fewer caught
    negatives = np.sort(scores[~y])
    # the score that at most (1 - specificity) of the normals exceed
    allowed_false = int(np.floor((1.0 - specificity) * len(negatives) + 1e-9))
    pneumonia = float(negatives[len(negatives) - 1 - allowed_false])
    pneumonia = float(np.clip(np.ceil(pneumonia * 1e4) / 1e4, unsure, 1.0))  # rounded up: never more normals in
    bands = Bands(pneumonia=pneumonia, unsure=unsure)
    chosen = {"on": "validation split (calibrated scores)", "n": int(len(y)),
              "target_sensitivity_pneumonia_or_unsure": sensitivity,
              "target_specificity_pneumonia_band": specificity,
              "unsure": rates_at(y, scores, unsure), "pneumonia": rates_at(y, scores, pneumonia, strict=True)}
    return bands, chosen
