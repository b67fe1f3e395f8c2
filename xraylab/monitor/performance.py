"""Model performance for the monitor: realised where radiologists have given verdicts, estimated where not.

Verdicts arrive late and only for some studies, so the monitor also estimates performance from the scores
alone, as NannyML's confidence-based performance estimation (CBPE) does: if the scores are calibrated
probabilities, each study is a positive with probability equal to its score, which gives an expected
confusion matrix and, by drawing labels from the scores, an interval for what the realised metrics should
be. A realised metric outside its interval (``disagreement``) means the scores are no longer calibrated
for these studies, or the labels disagree with the model in a way the scores do not admit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from xraylab.classification_metrics import binary_metrics

__all__ = ["realised", "Estimate", "estimate_performance", "disagreement", "METRICS"]

METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")

# Labels drawn per chunk of draws are at most this many values, to bound memory on large windows.
_CHUNK_VALUES = 2_000_000


def realised(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float | int | None]:
    """The metrics on studies with a verdict (``labels`` 0/1): ``binary_metrics`` of
    ``xraylab.classification_metrics`` (accuracy, precision, recall, specificity, f1, auc and the counts), with
    None where a metric is undefined (no predicted positives for precision, no positives for recall, no
    negatives for specificity, no class mix for AUC) rather than a 0 that would cross a limit."""
    out: dict[str, float | int | None] = dict(binary_metrics(labels, scores, threshold))
    tp, tn, fp, fn = (int(out[k]) for k in ("tp", "tn", "fp", "fn"))  # type: ignore[arg-type]
    undefined = {"precision": tp + fp == 0, "recall": tp + fn == 0, "specificity": tn + fp == 0,
                 "f1": tp + fp == 0 or tp + fn == 0, "auc": tp + fn == 0 or tn + fp == 0}
    for name, missing in undefined.items():
        if missing:
            out[name] = None
    return out


@dataclass(frozen=True)
class Estimate:
    """An estimated metric and the interval its realised value is expected to fall in."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` elementwise, 0.0 where ``b`` is 0 (as ``binary_metrics`` does)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _from_counts(tp: np.ndarray, tn: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * precision * recall, precision + recall),
    }


def estimate_performance(scores: np.ndarray, *, threshold: float = 0.5, n_draws: int = 1000, seed: int = 0,
                         level: float = 0.95) -> dict[str, Estimate]:
    """Expected accuracy, precision, recall, specificity, f1 and auc from calibrated scores alone (CBPE).

    With ``y_hat = score >= threshold`` the expected confusion matrix is TP = sum(p * y_hat),
    FP = sum((1 - p) * y_hat), FN = sum(p * (1 - y_hat)), TN = sum((1 - p) * (1 - y_hat)), and each
    ``value`` except AUC is the metric of that matrix; the AUC value is the mean AUC over the draws. The
    interval is a parametric bootstrap: labels are drawn ``n_draws`` times as Bernoulli(p), each metric is
    computed per draw, and ``low``/``high`` are its (1 - level) / 2 and 1 - (1 - level) / 2 quantiles, so
    the interval is where the realised metric of these studies should fall if the scores are calibrated.
    Draws with one class only have no AUC and are left out of it (AUC is NaN if every draw has one class)."""
    p = np.asarray(scores, np.float64).ravel()
    if not len(p):
        raise ValueError("no scores to estimate performance from")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("scores must be finite probabilities in [0, 1]")
    if n_draws < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_draws >= 1 and 0 < level < 1, got {n_draws} and {level}")
    n = len(p)
    predicted = (p >= threshold).astype(np.float64)
    expected = _from_counts(tp=(p * predicted).sum(), tn=((1 - p) * (1 - predicted)).sum(),
                            fp=((1 - p) * predicted).sum(), fn=(p * (1 - predicted)).sum())

    rng = np.random.default_rng(seed)
    ranks = stats.rankdata(p)  # ties share their average rank: ties count half, as roc_auc does
    n_predicted = predicted.sum()
    tp, positives, rank_sums = (np.empty(n_draws) for _ in range(3))
    chunk = max(1, _CHUNK_VALUES // n)
    for start in range(0, n_draws, chunk):
        stop = min(n_draws, start + chunk)
        labels = (rng.random((stop - start, n)) < p).astype(np.float64)
        tp[start:stop] = labels @ predicted
        positives[start:stop] = labels.sum(axis=1)
        rank_sums[start:stop] = labels @ ranks
    fp = n_predicted - tp
    fn = positives - tp
    tn = n - tp - fp - fn
    drawn = _from_counts(tp, tn, fp, fn)
    negatives = n - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sums - positives * (positives + 1) / 2.0) / (positives * negatives)
    auc = auc[(positives > 0) & (negatives > 0)]
    drawn["auc"] = auc

    quantiles = ((1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0)
    result = {}
    for name in METRICS:
        values = drawn[name]
        if not len(values):
            result[name] = Estimate(math.nan, math.nan, math.nan)
            continue
        low, high = np.quantile(values, quantiles)
        value = float(values.mean()) if name == "auc" else float(expected[name])
        result[name] = Estimate(value=value, low=float(low), high=float(high))
    return result


def disagreement(estimate: Mapping[str, Estimate], realised: Mapping[str, Any]) -> list[str]:
    """The metrics whose realised value lies outside the estimated interval ``[low, high]``, in the order of
    ``estimate``. Metrics missing on either side, or NaN there (AUC with one class), are not compared."""
    outside = []
    for name, est in estimate.items():
        value = realised.get(name)
        if value is None:
            continue
        value = float(value)
        if math.isnan(value) or math.isnan(est.low) or math.isnan(est.high):
            continue
        if not est.contains(value):
            outside.append(name)
    return outside
