"""Binary classification metrics on numpy arrays (no scikit-learn needed).

Shared by training (``train.metrics``, the evaluation report) and the model monitor
(``xraylab.monitor.performance``, realised metrics on reviewed studies), so both count the
confusion matrix and compute AUC the same way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["roc_auc", "roc_curve", "confusion_counts", "binary_metrics", "safe_div"]


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


def safe_div(a: float, b: float) -> float:
    """``a / b``, 0.0 when ``b`` is 0."""
    return float(a / b) if b else 0.0


def confusion_counts(y: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, int]:
    """``{"tp", "tn", "fp", "fn"}`` with a study predicted positive when ``score >= threshold``."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(scores, np.float64) >= threshold
    if y.shape != pred.shape:
        raise ValueError(f"labels and scores differ in shape: {y.shape} vs {pred.shape}")
    return {
        "tp": int((pred & y).sum()),
        "tn": int((~pred & ~y).sum()),
        "fp": int((pred & ~y).sum()),
        "fn": int((~pred & y).sum()),
    }


def binary_metrics(y: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float | int]:
    """Accuracy, precision, recall, specificity, F1 and AUC at ``threshold``, with the counts behind them.

    A metric whose denominator is zero is 0.0; ``auc`` is NaN when one class is absent. Keys: accuracy,
    precision, recall, specificity, f1, auc, n, n_positive, tp, tn, fp, fn."""
    counts = confusion_counts(y, scores, threshold)
    tp, tn, fp, fn = counts["tp"], counts["tn"], counts["fp"], counts["fn"]
    n = tp + tn + fp + fn
    precision = safe_div(tp, tp + fp)
    recall = safe_div(tp, tp + fn)
    return {
        "accuracy": safe_div(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "specificity": safe_div(tn, tn + fp),
        "f1": safe_div(2 * precision * recall, precision + recall),
        "auc": roc_auc(y, scores),
        "n": n,
        "n_positive": tp + fn,
        **counts,
    }
