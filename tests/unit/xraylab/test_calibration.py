import numpy as np

from train.metrics import roc_auc
from xraylab.calibration import IDENTITY, apply_platt, fit_platt


def test_platt_fixes_a_shifted_model_and_keeps_ranking() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.75).astype(float)
    true_logit = np.where(y > 0, 1.5, -1.5) + rng.normal(0, 1.0, len(y))
    shifted = 1 / (1 + np.exp(-(0.5 * true_logit + 3.0)))  # a model whose scores sit far too high
    assert ((shifted >= 0.5) == y).mean() < 0.8
    params = fit_platt(shifted, y)
    calibrated = apply_platt(shifted, params)
    assert ((calibrated >= 0.5) == y).mean() > 0.85
    assert abs(calibrated.mean() - y.mean()) < 0.02  # calibrated: mean score matches prevalence
    assert roc_auc(y, calibrated) == roc_auc(y, shifted)  # monotonic: ranking (AUC) unchanged


def test_identity_and_one_class() -> None:
    s = np.array([0.2, 0.7])
    np.testing.assert_allclose(apply_platt(s, IDENTITY), s)
    np.testing.assert_allclose(apply_platt(s, None), s)
    assert fit_platt(s, np.array([1.0, 1.0])) == IDENTITY


def test_perfectly_separable_scores_stay_finite() -> None:
    y = np.array([0] * 12 + [1] * 36, float)
    scores = np.concatenate([np.linspace(0.70, 0.90, 12), np.linspace(0.95, 0.99999, 36)])
    params = fit_platt(scores, y)
    assert abs(params["a"]) < 100 and abs(params["b"]) < 1000
    calibrated = apply_platt(scores, params)
    assert roc_auc(y, calibrated) == 1.0
    assert ((calibrated >= 0.5) == y).mean() == 1.0
