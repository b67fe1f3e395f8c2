import numpy as np
import pytest

from train.metrics import classification_report, roc_auc, roc_curve


def test_auc_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5  # ties count half
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_roc_curve_ends() -> None:
    fpr, tpr = roc_curve(np.array([0, 1, 0, 1]), np.array([0.2, 0.9, 0.6, 0.4]))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_report_counts_and_derived_metrics() -> None:
    y = np.array([1, 1, 1, 0, 0, 1])
    s = np.array([0.9, 0.7, 0.3, 0.2, 0.85, 0.65])
    r = classification_report(y, s)
    assert r["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 3}
    assert r["sensitivity"] == pytest.approx(0.75) and r["specificity"] == pytest.approx(0.5)
    assert r["precision"] == pytest.approx(0.75) and r["f1"] == pytest.approx(0.75)
    assert r["mcc"] == pytest.approx((3 * 1 - 1 * 1) / np.sqrt(4 * 4 * 2 * 2))
    assert r["bands"]["Pneumonia"] == {"count": 2, "pneumonia": 1, "normal": 1}
    assert r["bands"]["Unsure"]["count"] == 2 and r["bands"]["Normal"]["count"] == 2
    assert sum(b["count"] for b in r["calibration"]["bins"]) == 6
    assert 0.0 <= r["calibration"]["ece"] <= 1.0
