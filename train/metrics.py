"""Binary classification metrics on numpy arrays (no scikit-learn needed)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xraylab.bands import NORMAL, PNEUMONIA, UNSURE, Bands

__all__ = ["roc_auc", "roc_curve", "classification_report"]


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half). NaN if one class is absent."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0,0) to (1,1)."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    tps = np.cumsum(y[order])
    fps = np.cumsum(~y[order])
    fpr = np.concatenate([[0.0], fps / max(1, (~y).sum())])
    tpr = np.concatenate([[0.0], tps / max(1, y.sum())])
    return fpr, tpr


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def classification_report(y: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5,
                          bands: Bands | None = None, n_bins: int = 10) -> dict[str, Any]:
    """Accuracy, AUC, sensitivity, specificity, precision, F1, MCC, confusion matrix, the risk-band
    table and a calibration check (expected calibration error with reliability bins)."""
    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, np.float64)
    pred = (scores >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    sensitivity = _safe_div(tp, tp + fn)
    precision = _safe_div(tp, tp + fp)
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
        "accuracy": _safe_div(tp + tn, len(y)),
        "auc": roc_auc(y, scores),
        "sensitivity": sensitivity,
        "specificity": _safe_div(tn, tn + fp),
        "precision": precision,
        "f1": _safe_div(2 * precision * sensitivity, precision + sensitivity),
        "mcc": _safe_div(tp * tn - fp * fn, denominator),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "bands": band_table,
        "calibration": {"ece": float(ece), "bins": bins},
    }
