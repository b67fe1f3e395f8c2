"""Platt scaling: ``p' = sigmoid(a * logit(p) + b)``, fitted on the validation split of a training run.

The risk bands are fixed thresholds on the score, so the score must be a calibrated probability; the
parameters travel in the model card and both evaluation and serving apply them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_platt", "apply_platt", "IDENTITY"]

IDENTITY = {"a": 1.0, "b": 0.0}
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def apply_platt(scores: np.ndarray, params: dict[str, float] | None) -> np.ndarray:
    if not params or params == IDENTITY:
        return np.asarray(scores, np.float64)
    z = params["a"] * _logit(scores) + params["b"]
    return 1.0 / (1.0 + np.exp(-z))


def fit_platt(scores: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3, iterations: int = 100) -> dict[str, float]:
    """Logistic regression of ``labels`` on ``logit(scores)`` by damped Newton steps.

    Uses Platt's smoothed targets ((N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for negatives), so the
    fit stays finite when the validation scores separate the classes perfectly."""
    x = _logit(scores)
    labels = np.asarray(labels, np.float64)
    if len(np.unique(labels)) < 2:
        return dict(IDENTITY)
    n_pos, n_neg = labels.sum(), (1 - labels).sum()
    y = np.where(labels > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        w = p * (1 - p)
        grad = np.array([np.sum((p - y) * x) + l2 * (a - 1.0), np.sum(p - y)])
        hess = np.array([[np.sum(w * x * x) + l2, np.sum(w * x)], [np.sum(w * x), np.sum(w) + 1e-9]])
        step = np.linalg.solve(hess, grad)
        norm = float(np.abs(step).max())
        if norm > 5.0:  # damp big Newton steps
            step *= 5.0 / norm
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return {"a": float(a), "b": float(b)}
