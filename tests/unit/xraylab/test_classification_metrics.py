import math

import numpy as np
import pytest

import train.metrics
from xraylab.classification_metrics import binary_metrics, confusion_counts, roc_auc, roc_curve


def test_binary_metrics_hand_checked() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.5, 0.2, 0.49, 0.7, 0.1, 0.3, 0.8])
    # predicted positive (score >= 0.5): rows 0, 1, 4, 7 -> tp rows 0, 1, 7; fp row 4; fn row 2; tn rows 3, 5, 6
    m = binary_metrics(y, s)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (3, 3, 1, 1)
    assert (m["n"], m["n_positive"]) == (8, 4)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # AUC by counting pairs: positives 0.9, 0.5, 0.2, 0.8 against negatives 0.49, 0.7, 0.1, 0.3
    pairs = sum((p > q) + 0.5 * (p == q) for p in (0.9, 0.5, 0.2, 0.8) for q in (0.49, 0.7, 0.1, 0.3))
    assert m["auc"] == pytest.approx(pairs / 16) == pytest.approx(12 / 16)


def test_threshold_moves_the_counts() -> None:
    y = np.array([1, 0, 1, 0])
    s = np.array([0.6, 0.6, 0.4, 0.1])
    assert confusion_counts(y, s, 0.5) == {"tp": 1, "tn": 1, "fp": 1, "fn": 1}
    assert confusion_counts(y, s, 0.6) == {"tp": 1, "tn": 1, "fp": 1, "fn": 1}  # >= threshold is positive
    assert confusion_counts(y, s, 0.61) == {"tp": 0, "tn": 2, "fp": 0, "fn": 2}
    assert confusion_counts(y, s, 0.0) == {"tp": 2, "tn": 0, "fp": 2, "fn": 0}


def test_zero_division_is_zero_and_one_class_auc_is_nan() -> None:
    m = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3]))
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (0, 3, 0, 0)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["specificity"] == 1.0 and m["accuracy"] == 1.0
    assert math.isnan(m["auc"])


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))


def test_train_metrics_reexports_the_same_functions() -> None:
    assert train.metrics.roc_auc is roc_auc and train.metrics.roc_curve is roc_curve
    assert {"roc_auc", "roc_curve"} <= set(train.metrics.__all__)


def test_report_agrees_with_binary_metrics() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.4).astype(int)
    s = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    m = binary_metrics(y, s, 0.45)
    r = train.metrics.classification_report(y, s, threshold=0.45)
    assert r["confusion_matrix"] == {k: m[k] for k in ("tn", "fp", "fn", "tp")}
    assert r["sensitivity"] == m["recall"] and r["f1"] == m["f1"] and r["auc"] == m["auc"]
