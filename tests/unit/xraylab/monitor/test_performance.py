import math

import numpy as np
import pytest

from xraylab.classification_metrics import binary_metrics
from xraylab.monitor.performance import Estimate, disagreement, estimate_performance, realised

NAMES = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


def test_realised_is_binary_metrics() -> None:
    y = np.array([1, 0, 1, 1, 0])
    s = np.array([0.9, 0.6, 0.4, 0.7, 0.1])
    assert realised(y, s) == binary_metrics(y, s)
    assert realised(y, s, 0.65)["tp"] == 2


def test_expected_confusion_matrix_by_hand() -> None:
    p = np.array([0.9, 0.8, 0.3, 0.1])
    est = estimate_performance(p, n_draws=200)
    # y_hat = [1, 1, 0, 0]: TP = 1.7, FP = 0.3, FN = 0.4, TN = 1.6
    assert est["accuracy"].value == pytest.approx(3.3 / 4)
    assert est["precision"].value == pytest.approx(1.7 / 2.0)
    assert est["recall"].value == pytest.approx(1.7 / 2.1)
    assert est["specificity"].value == pytest.approx(1.6 / 1.9)
    prec, rec = 1.7 / 2.0, 1.7 / 2.1
    assert est["f1"].value == pytest.approx(2 * prec * rec / (prec + rec))
    assert set(est) == set(NAMES)
    for e in est.values():
        assert e.low <= e.high


def test_intervals_cover_realised_metrics() -> None:
    inside = {name: 0 for name in NAMES}
    gaps = {name: [] for name in NAMES}
    seeds = 200  # coverage is ~95% per metric; 200 windows keep a 90% floor clear of chance misses
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        p = rng.beta(2.0, 2.0, 150)
        labels = (rng.random(150) < p).astype(int)
        est = estimate_performance(p, n_draws=400, seed=seed + 1000)
        real = realised(labels, p)
        for name in NAMES:
            inside[name] += est[name].contains(real[name])
            gaps[name].append(real[name] - est[name].value)
        assert set(disagreement(est, real)) == {n for n in NAMES if not est[n].contains(real[n])}
    for name in NAMES:
        assert inside[name] >= 0.9 * seeds, (name, inside[name])
        assert abs(np.mean(gaps[name])) < 0.02, (name, np.mean(gaps[name]))  # value ~ mean realised


def test_disagreement_flags_miscalibrated_scores() -> None:
    rng = np.random.default_rng(11)
    p = rng.beta(2.0, 2.0, 300)
    labels = (rng.random(300) < 0.15).astype(int)  # far fewer positives than the scores claim
    est = estimate_performance(p)
    outside = disagreement(est, realised(labels, p))
    assert "precision" in outside and "accuracy" in outside
    assert disagreement(est, {"accuracy": float("nan"), "recall": est["recall"].value}) == []


def test_edge_cases() -> None:
    with pytest.raises(ValueError):
        estimate_performance(np.array([]))
    with pytest.raises(ValueError):
        estimate_performance(np.array([0.2, 1.5]))
    est = estimate_performance(np.ones(10), n_draws=50)  # every draw all positive: no AUC
    assert math.isnan(est["auc"].value) and est["recall"] == Estimate(1.0, 1.0, 1.0)
    assert estimate_performance(np.array([0.3, 0.7]), seed=4) == estimate_performance(np.array([0.3, 0.7]), seed=4)
