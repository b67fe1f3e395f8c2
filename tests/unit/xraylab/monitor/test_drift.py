import json

import numpy as np
import pytest

from xraylab.monitor.drift import (
    FeatureShift,
    atypicality,
    image_drift,
    ks_bonferroni,
    mmd_permutation,
    prediction_drift,
)
from xraylab.monitor.image_stats import READABLE_STATS

N_REF, N_LIVE, DIM = 256, 100, 16


def _sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (n x 16) and the six readable statistics of n images from one distribution."""
    embeddings = rng.standard_normal((n, DIM))
    brightness = rng.normal(0.5, 0.05, n)
    contrast = rng.normal(0.2, 0.03, n)
    sharpness = rng.gamma(4.0, 0.002, n)
    width = rng.choice([1024, 2048, 2500], n).astype(float)
    height = rng.choice([1024, 2048, 2000], n).astype(float)
    return embeddings, np.column_stack([brightness, contrast, sharpness, width, height, width / height])


def test_clean_windows_score_low() -> None:
    scores, drifted = [], 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ref, live = _sample(rng, N_REF), _sample(rng, N_LIVE)
        result = image_drift(*ref[:1], *live[:1], ref[1], live[1], READABLE_STATS, n_permutations=50, seed=seed)
        scores.append(result.score)
        drifted += result.drifted
    assert sum(s < 0.42 for s in scores) >= 19
    assert drifted <= 4  # two tests at 5% each: about one in ten clean windows at most
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_shifted_embeddings_score_high() -> None:
    rng = np.random.default_rng(1)
    (ref_emb, ref_st), (live_emb, live_st) = _sample(rng, N_REF), _sample(rng, N_LIVE)
    live_emb[:, :3] += 2.0  # two standard deviations in three components
    result = image_drift(ref_emb, live_emb, ref_st, live_st, READABLE_STATS)
    assert result.score > 0.55 and result.drifted
    assert result.p_value < 1e-6
    assert result.mmd_p_value < 0.05
    assert result.moved == []  # embedding components are not readable statistics
    assert (result.n_reference, result.n_live) == (N_REF, N_LIVE)


def test_one_sd_shift_is_detected_with_a_moderate_score() -> None:
    # A 1-sd mean shift of a Gaussian moves the CDFs apart by at most 2 * Phi(0.5) - 1 = 0.38: the score is an
    # effect size, so this is detected (drifted) but stays below the hard limit.
    rng = np.random.default_rng(2)
    (ref_emb, ref_st), (live_emb, live_st) = _sample(rng, N_REF), _sample(rng, N_LIVE)
    live_emb[:, :3] += 1.0
    result = image_drift(ref_emb, live_emb, ref_st, live_st, READABLE_STATS)
    assert result.drifted and result.mmd_p_value < 0.05
    assert 0.25 < result.score < 0.6


def test_brightness_shift_is_named() -> None:
    rng = np.random.default_rng(3)
    (ref_emb, ref_st), (live_emb, live_st) = _sample(rng, N_REF), _sample(rng, N_LIVE)
    live_st[:, 0] += 0.1  # two standard deviations brighter
    result = image_drift(ref_emb, live_emb, ref_st, live_st, READABLE_STATS)
    assert result.score > 0.55 and result.drifted
    assert [m.name for m in result.moved][:1] == ["brightness"]
    assert result.moved[0].live_median > result.moved[0].reference_median + 0.05
    assert all(m.p_value < 0.05 for m in result.moved)
    assert [m.ks for m in result.moved] == sorted((m.ks for m in result.moved), reverse=True)
    d = result.to_dict()
    assert d["moved"][0]["name"] == "brightness"
    json.dumps(d)


def test_image_drift_refuses_bad_input() -> None:
    rng = np.random.default_rng(4)
    (ref_emb, ref_st), (live_emb, live_st) = _sample(rng, 10), _sample(rng, 10)
    with pytest.raises(ValueError, match="rows"):
        image_drift(ref_emb, live_emb[:1], ref_st, live_st[:1], READABLE_STATS)
    with pytest.raises(ValueError, match="columns"):
        image_drift(ref_emb, live_emb[:, :5], ref_st, live_st, READABLE_STATS)
    with pytest.raises(ValueError, match="columns"):
        image_drift(ref_emb, live_emb, ref_st, live_st[:, :5], READABLE_STATS)


def test_ks_bonferroni_corrects_and_handles_constant_columns() -> None:
    rng = np.random.default_rng(5)
    ref = np.column_stack([rng.standard_normal(200), np.ones(200), rng.standard_normal(200)])
    live = np.column_stack([rng.standard_normal(80) + 1.5, np.ones(80), rng.standard_normal(80)])
    shifts = ks_bonferroni(ref, live, ["a", "flat", "c"])
    assert [s.name for s in shifts] == ["a", "flat", "c"]
    assert shifts[1] == FeatureShift("flat", 1.0, 1.0, 0.0, 1.0)
    assert shifts[0].ks > 0.4 and shifts[0].p_value < 1e-6
    from scipy.stats import ks_2samp

    raw = ks_2samp(ref[:, 2], live[:, 2]).pvalue
    assert shifts[2].p_value == pytest.approx(min(1.0, 3 * raw))
    with pytest.raises(ValueError):
        ks_bonferroni(ref, live, ["a", "b"])


def test_mmd_permutation_p_values() -> None:
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((200, 8))
    same = [mmd_permutation(ref, rng.standard_normal((80, 8)), seed=s)[1] for s in range(10)]
    assert all(0.0 < p <= 1.0 for p in same)
    assert np.median(same) > 0.2
    shifted = rng.standard_normal((80, 8))
    shifted[:, 0] += 1.0
    mmd2, p = mmd_permutation(ref, shifted, n_permutations=100)
    assert p == pytest.approx(1 / 101) and mmd2 > 0
    assert mmd_permutation(ref, shifted, seed=3) == mmd_permutation(ref, shifted, seed=3)  # seeded
    # subsampling: bigger inputs than max_samples still give a valid answer
    mmd2_sub, p_sub = mmd_permutation(rng.standard_normal((900, 8)), rng.standard_normal((700, 8)), max_samples=100)
    assert 0.0 < p_sub <= 1.0 and abs(mmd2_sub) < 0.1
    # all reference rows equal: the bandwidth falls back and nothing breaks
    _, p_const = mmd_permutation(np.zeros((20, 3)), rng.standard_normal((20, 3)))
    assert 0.0 < p_const <= 1.0


def test_atypicality_flags_outliers() -> None:
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((300, 8))
    live = rng.standard_normal((200, 8))
    live[0] = 8.0
    a = atypicality(ref, live, k=5)
    assert a.shape == (200,) and ((a >= 0) & (a <= 1)).all()
    assert a[0] > 0.95
    assert abs(a[1:].mean() - 0.5) < 0.08
    with pytest.raises(ValueError):
        atypicality(ref[:5], live, k=5)


def _scores(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.beta(1.2, 2.0, n)


def test_prediction_drift_is_low_on_clean_windows() -> None:
    results = [prediction_drift(_scores(rng, 100), _scores(rng, 80))
               for rng in (np.random.default_rng(seed) for seed in range(40))]
    scores = np.array([r.score for r in results])
    assert (scores < 0.2).mean() >= 0.95  # the distance counts only past the KS test at 1 %
    assert np.median(scores) == 0.0
    assert all(r.score == (max(r.js_scores, r.js_bands) if r.drifted else 0.0) for r in results)
    assert all(r.drifted == (r.p_value < 0.01) for r in results)


def test_prediction_drift_is_high_when_scores_move() -> None:
    rng = np.random.default_rng(8)
    ref = _scores(rng, 100)
    live = rng.uniform(0.81, 1.0, 80)
    r = prediction_drift(ref, live)
    assert r.score > 0.34 and r.js_bands > 0.34 and r.psi > 1.0 and r.drifted and r.p_value < 1e-6
    assert np.isfinite(r.psi)
    assert sum(r.reference_hist) == pytest.approx(1.0) and sum(r.live_hist) == pytest.approx(1.0)
    assert r.live_hist[-1] == 1.0 and (r.n_reference, r.n_live) == (100, 80)
    json.dumps(r.to_dict())
    assert prediction_drift(ref, ref).score == pytest.approx(0.0, abs=1e-6)


def test_prediction_drift_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        prediction_drift(np.array([]), np.array([0.5]))
    with pytest.raises(ValueError):
        prediction_drift(np.array([0.5, 1.2]), np.array([0.5]))
    with pytest.raises(ValueError):
        prediction_drift(np.array([0.5]), np.array([0.5]), band_edges=(0.9, 0.6))
