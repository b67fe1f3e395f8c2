"""The evaluation report of a trained model (no scikit-learn needed).

``roc_auc`` and ``roc_curve`` live in ``xraylab.classification_metrics`` (the monitor uses them too) and are
re-exported here so that existing imports keep working.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xraylab.bands import NORMAL, PNEUMONIA, UNSURE, Bands
from xraylab.classification_metrics import binary_metrics, roc_auc, roc_curve, safe_div

from .thresholds import rates_at

__all__ = ["roc_auc", "roc_curve", "classification_report"]


def classification_report(y: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5,
                          bands: Bands | None = None, n_bins: int = 10) -> dict[str, Any]:
    """Accuracy, AUC, sensitivity, specificity, precision, F1, MCC, confusion matrix, the risk-band
    table, sensitivity and specificity at each band threshold ("Pneumonia or Unsure" at ``unsure``, "Pneumonia"
    at ``pneumonia``) and a calibration check (expected calibration error with reliability bins)."""
    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, np.float64)
    metrics = binary_metrics(y, scores, threshold)
    tp, tn, fp, fn = (int(metrics[key]) for key in ("tp", "tn", "fp", "fn"))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    bands = bands or Bands()
    band_of = [bands.band(float(s)) for s in scores]
    band_table = {}
    for band in (PNEUMONIA, UNSURE, NORMAL):
        members = [i for i, b in enumerate(band_of) if b == band]
        band_table[band] = {"count": len(members), "pneumonia": int(sum(y[i] for i in members)),
                            "normal": int(sum(1 - y[i] for i in members))}
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (scores >= lo) & ((scores < hi) if hi < 1.0 else (scores <= hi))
        if mask.any():
            confidence, observed = float(scores[mask].mean()), float(y[mask].mean())
            ece += mask.mean() * abs(confidence - observed)
            bins.append({"lo": round(float(lo), 2), "hi": round(float(hi), 2), "count": int(mask.sum()),
                         "mean_score": round(confidence, 4), "pneumonia_rate": round(observed, 4)})
    return {
        "n": int(len(y)),
        "threshold": threshold,
        "accuracy": metrics["accuracy"],
        "auc": metrics["auc"],
        "sensitivity": metrics["recall"],
        "specificity": metrics["specificity"],
        "precision": metrics["precision"],
        "f1": metrics["f1"],
        "mcc": safe_div(tp * tn - fp * fn, denominator),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "bands": band_table,
        "band_thresholds": {"pneumonia_or_unsure": rates_at(y, scores, bands.unsure),
                            "pneumonia": rates_at(y, scores, bands.pneumonia, strict=True)},
        "calibration": {"ece": float(ece), "bins": bins},
    }
