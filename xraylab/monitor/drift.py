"""Drift tests for the model monitor: have the images, or the scores, moved away from the reference?

The reference is what the model version saw when it was validated (embeddings, readable image statistics
and scores of its validation images); the live sample is a recent window of served studies. Windows are
small (tens to hundreds of studies), so every score here is built to stay near zero on clean windows of
that size and to rise with the size of a real change, and the tests that decide ``drifted`` are
corrected for the number of features they look at.

- ``image_drift``: two-sample Kolmogorov-Smirnov per embedding component and per readable statistic with
  a Bonferroni correction, plus an MMD permutation test on the embeddings (catches joint shifts that no
  single component shows); ``moved`` names the readable statistics that changed.
- ``atypicality``: per live image, how far it lies from the reference (k nearest neighbours).
- ``prediction_drift``: Jensen-Shannon distance between the score histograms and between the risk-band
  shares; the population stability index is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist, jensenshannon, pdist

from xraylab.bands import DEFAULT_BANDS, Bands

__all__ = [
    "FeatureShift",
    "ks_bonferroni",
    "mmd_permutation",
    "ImageDrift",
    "image_drift",
    "atypicality",
    "PredictionDrift",
    "prediction_drift",
]

# Pseudo-count added to every histogram bin (and band) before shares, JS and PSI are computed, so that an
# empty bin does not make PSI infinite.
_SMOOTHING = 0.5


def _matrix(name: str, a: np.ndarray, *, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(a, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x features), got shape {np.shape(a)}")
    if len(x) < min_rows:
        raise ValueError(f"{name} has {len(x)} rows; at least {min_rows} are needed")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _same_columns(reference: np.ndarray, live: np.ndarray, what: str) -> None:
    if reference.shape[1] != live.shape[1]:
        raise ValueError(f"{what}: reference has {reference.shape[1]} columns, live has {live.shape[1]}")


@dataclass(frozen=True)
class FeatureShift:
    """One feature's two-sample KS test; ``p_value`` is Bonferroni-corrected over the features tested."""

    name: str
    reference_median: float
    live_median: float
    ks: float
    p_value: float


def ks_bonferroni(reference: np.ndarray, live: np.ndarray, names: Sequence[str]) -> list[FeatureShift]:
    """Two-sample KS test per column (``scipy.stats.ks_2samp``), p-values times the number of columns
    (capped at 1). A column with one single value across both samples has ks 0 and p 1."""
    ref = _matrix("reference", reference, min_rows=1)
    cur = _matrix("live", live, min_rows=1)
    _same_columns(ref, cur, "ks_bonferroni")
    d = ref.shape[1]
    if len(names) != d:
        raise ValueError(f"{len(names)} names for {d} columns")
    shifts = []
    for j, name in enumerate(names):
        r, c = ref[:, j], cur[:, j]
        if r.min() == r.max() == c.min() == c.max():
            ks, p = 0.0, 1.0
        else:
            result = stats.ks_2samp(r, c)
            ks, p = float(result.statistic), float(result.pvalue)
        shifts.append(FeatureShift(name=str(name), reference_median=float(np.median(r)),
                                   live_median=float(np.median(c)), ks=ks, p_value=min(1.0, p * d)))
    return shifts


def _subsample(x: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= max_samples:
        return x
    return x[rng.choice(len(x), size=max_samples, replace=False)]


def _unbiased_mmd2(kernel: np.ndarray, in_x: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased squared MMD for each row of ``in_x`` (P x N, 1.0 where a pooled row belongs to the first
    sample). The kernel's diagonal is 1 (RBF), which is what the within-sample sums subtract."""
    kx = in_x @ kernel
    total = kernel.sum()
    sxx = (kx * in_x).sum(axis=1)
    sxy = (kx * (1.0 - in_x)).sum(axis=1)
    syy = total - sxx - 2.0 * sxy
    return (sxx - n) / (n * (n - 1)) + (syy - m) / (m * (m - 1)) - 2.0 * sxy / (n * m)


def mmd_permutation(reference: np.ndarray, live: np.ndarray, *, n_permutations: int = 100, seed: int = 0,
                    max_samples: int = 500) -> tuple[float, float]:
    """``(mmd2, p_value)``: unbiased squared maximum mean discrepancy with a Gaussian RBF kernel, and its
    permutation p-value ``(1 + #{permuted >= observed}) / (1 + n_permutations)``.

    The bandwidth is the median pairwise distance within the reference (median heuristic; when that is 0,
    the median non-zero pooled distance, else 1). Each side is first subsampled to ``max_samples`` rows with
    the seeded generator. The kernel matrix of the pooled sample is computed once; permutations only
    relabel its rows. The unbiased estimate can be slightly negative when the samples agree."""
    ref = _matrix("reference", reference)
    cur = _matrix("live", live)
    _same_columns(ref, cur, "mmd_permutation")
    if n_permutations < 0 or max_samples < 2:
        raise ValueError("n_permutations must be >= 0 and max_samples >= 2")
    rng = np.random.default_rng(seed)
    ref, cur = _subsample(ref, max_samples, rng), _subsample(cur, max_samples, rng)
    n, m = len(ref), len(cur)
    pooled = np.vstack([ref, cur])
    sq = cdist(pooled, pooled, "sqeuclidean")
    bandwidth = float(np.median(pdist(ref)))
    if not bandwidth > 0:
        distances = np.sqrt(sq[np.triu_indices(n + m, k=1)])
        distances = distances[distances > 0]
        bandwidth = float(np.median(distances)) if distances.size else 1.0
    kernel = np.exp(-sq / (2.0 * bandwidth**2))
    first = np.zeros((1, n + m))
    first[0, :n] = 1.0
    observed = float(_unbiased_mmd2(kernel, first, n, m)[0])
    if n_permutations == 0:
        return observed, 1.0
    order = rng.permuted(np.tile(np.arange(n + m), (n_permutations, 1)), axis=1)
    in_x = np.zeros((n_permutations, n + m))
    np.put_along_axis(in_x, order[:, :n], 1.0, axis=1)
    permuted = _unbiased_mmd2(kernel, in_x, n, m)
    p_value = (1 + int((permuted >= observed).sum())) / (1 + n_permutations)
    return observed, float(p_value)


@dataclass(frozen=True)
class ImageDrift:
    """Result of ``image_drift``; ``moved`` lists the readable statistics that changed, largest first."""

    score: float
    p_value: float
    drifted: bool
    mmd2: float
    mmd_p_value: float
    n_reference: int
    n_live: int
    moved: list[FeatureShift]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_drift(ref_embeddings: np.ndarray, live_embeddings: np.ndarray, ref_stats: np.ndarray,
                live_stats: np.ndarray, stat_names: Sequence[str], *, alpha: float = 0.05,
                n_permutations: int = 100, seed: int = 0) -> ImageDrift:
    """Have the live images moved away from the reference images?

    KS test per embedding component (named ``emb_0`` .. ``emb_k``) and per readable statistic, Bonferroni-
    corrected over all of them together; ``p_value`` is the smallest corrected p. ``score`` is the largest
    KS statistic among the features whose corrected p is below ``alpha``, else 0.0: an effect size in
    [0, 1] (the largest gap between the two cumulative distributions) that stays near 0 on clean windows
    and grows with the size of the shift. ``1 - p`` is not used as the score: a p-value is roughly uniform
    on clean data, so ``1 - p`` would cross a 0.55 limit on about 45% of clean windows (simulated: 50% for
    the MMD p, 38% for the smallest corrected KS p).

    Simulated with 256 reference and 100 live rows of 16-d Gaussian embeddings plus 6 statistics (200
    windows): clean, the score is 0.0 on 96% of windows and at most 0.25, never above 0.42. Shifted (50
    windows each, all with ``drifted`` true): a 1-sd mean shift in 3 components has median 0.46 and at most
    0.55 (the population KS of a 1-sd Gaussian shift is 0.38, the maximum over noisy components is higher),
    so it warns but is not critical; a 2-sd shift scores ~0.74 and a 2-sd brightness shift ~0.71.

    ``drifted`` is true when the KS p-value or the MMD permutation p-value on the embeddings
    (``mmd_permutation``) is below ``alpha``. ``moved`` holds the readable statistics (not the embedding
    components, which mean nothing to a reader) whose corrected p is below ``alpha``, by KS descending.
    Raises ``ValueError`` when a side has fewer than 2 rows or the column counts differ."""
    ref_emb = _matrix("reference embeddings", ref_embeddings)
    cur_emb = _matrix("live embeddings", live_embeddings)
    _same_columns(ref_emb, cur_emb, "embeddings")
    ref_st = _matrix("reference statistics", ref_stats)
    cur_st = _matrix("live statistics", live_stats)
    _same_columns(ref_st, cur_st, "readable statistics")
    if len(ref_st) != len(ref_emb) or len(cur_st) != len(cur_emb):
        raise ValueError(f"embeddings and statistics differ in rows: reference {len(ref_emb)} vs {len(ref_st)}, "
                         f"live {len(cur_emb)} vs {len(cur_st)}")
    if len(stat_names) != ref_st.shape[1]:
        raise ValueError(f"{len(stat_names)} statistic names for {ref_st.shape[1]} statistic columns")
    k = ref_emb.shape[1]
    names = [f"emb_{i}" for i in range(k)] + [str(s) for s in stat_names]
    shifts = ks_bonferroni(np.hstack([ref_emb, ref_st]), np.hstack([cur_emb, cur_st]), names)
    significant = [s for s in shifts if s.p_value < alpha]
    p_value = min(s.p_value for s in shifts)
    score = max((s.ks for s in significant), default=0.0)
    mmd2, mmd_p = mmd_permutation(ref_emb, cur_emb, n_permutations=n_permutations, seed=seed)
    moved = sorted((s for s in shifts[k:] if s.p_value < alpha), key=lambda s: s.ks, reverse=True)
    return ImageDrift(score=float(score), p_value=float(p_value), drifted=bool(p_value < alpha or mmd_p < alpha),
                      mmd2=mmd2, mmd_p_value=mmd_p, n_reference=len(ref_emb), n_live=len(cur_emb), moved=moved)


def atypicality(ref_embeddings: np.ndarray, live_embeddings: np.ndarray, *, k: int = 5) -> np.ndarray:
    """How unusual each live row is, in [0, 1]: the mean Euclidean distance to its ``k`` nearest reference
    rows, as the fraction of reference rows whose own leave-one-out k-NN mean distance is smaller.

    Roughly uniform on live rows from the reference distribution (mean ~0.5); near 1 for outliers."""
    ref = _matrix("reference embeddings", ref_embeddings)
    cur = _matrix("live embeddings", live_embeddings, min_rows=0)
    _same_columns(ref, cur, "embeddings")
    if k < 1 or len(ref) < k + 1:
        raise ValueError(f"k must be >= 1 and the reference needs more than k rows (k={k}, {len(ref)} rows)")
    tree = cKDTree(ref)
    if not len(cur):
        return np.empty(0, np.float64)
    ref_distances, _ = tree.query(ref, k=k + 1)  # the nearest is the row itself, at distance 0
    leave_one_out = np.sort(np.asarray(ref_distances)[:, 1:].mean(axis=1))
    live_distances, _ = tree.query(cur, k=k)
    live_mean = np.asarray(live_distances).reshape(len(cur), k).mean(axis=1)
    return np.searchsorted(leave_one_out, live_mean, side="left") / len(leave_one_out)


@dataclass(frozen=True)
class PredictionDrift:
    """Result of ``prediction_drift``; the histograms are the raw (unsmoothed) shares per score bin."""

    score: float
    js_scores: float
    js_bands: float
    psi: float
    p_value: float
    drifted: bool
    reference_hist: list[float]
    live_hist: list[float]
    n_reference: int
    n_live: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scores(name: str, s: np.ndarray) -> np.ndarray:
    x = np.asarray(s, np.float64).ravel()
    if not len(x):
        raise ValueError(f"{name} is empty")
    if not (np.isfinite(x).all() and (x >= 0).all() and (x <= 1).all()):
        raise ValueError(f"{name} must be finite scores in [0, 1]")
    return x


def _js_distance(p: np.ndarray, q: np.ndarray) -> float:
    value = float(jensenshannon(p, q, base=2))
    return value if np.isfinite(value) else 0.0  # rounding can leave sqrt of a tiny negative for p == q


def prediction_drift(ref_scores: np.ndarray, live_scores: np.ndarray, *,
                     band_edges: tuple[float, float] = (DEFAULT_BANDS.unsure, DEFAULT_BANDS.pneumonia),
                     bins: int = 5, alpha: float = 0.01) -> PredictionDrift:
    """Have the scores moved? Jensen-Shannon distance (base 2, in [0, 1]) between the score histograms on
    ``bins`` equal bins of [0, 1] (``js_scores``) and between the risk-band shares (``js_bands``: Normal
    below ``band_edges[0]``, Unsure up to ``band_edges[1]`` inclusive, Pneumonia above); ``score`` is the
    larger. Every bin and band gets a pseudo-count of 0.5 first, so an empty bin keeps PSI finite. The
    population stability index on the same histogram is reported (``psi``) but is not the score.

    Typical null values (simulated, 1000 windows of 100 reference vs 80 live scores from one distribution,
    for five Beta/uniform score shapes): with 5 bins the score has median 0.10-0.11 and 90th percentile
    ~0.17, and exceeds the 0.2 soft limit on 1-5% of clean windows (never the 0.34 hard one). With 10 bins
    the median is ~0.17 and the soft limit is crossed on 13-30% of clean windows: sampling noise alone gives
    a JS distance that grows like sqrt((bins - 1) / n), which is why the default is 5 bins. All live scores above 0.8
    score ~0.9; a 0.1 shift of every score ~0.21.

    Those 1-5 % of clean windows over the soft limit would still raise a warning somewhere every few runs once
    every hospital has its own figure, so the distance counts only when the scores differ beyond chance: a
    two-sample KS test on the raw scores (``p_value``) must reject at ``alpha`` (default 0.01), else the score is
    0 (``drifted`` False); the distances are reported either way."""
    ref = _scores("reference scores", ref_scores)
    cur = _scores("live scores", live_scores)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    bands = Bands(unsure=float(band_edges[0]), pneumonia=float(band_edges[1]))  # validates the order
    edges = np.linspace(0.0, 1.0, bins + 1)
    ref_counts = np.histogram(ref, edges)[0].astype(np.float64)
    cur_counts = np.histogram(cur, edges)[0].astype(np.float64)
    p = (ref_counts + _SMOOTHING) / (ref_counts + _SMOOTHING).sum()
    q = (cur_counts + _SMOOTHING) / (cur_counts + _SMOOTHING).sum()

    def band_shares(s: np.ndarray) -> np.ndarray:
        pneumonia = s > bands.pneumonia
        normal = s < bands.unsure
        counts = np.array([normal.sum(), (~pneumonia & ~normal).sum(), pneumonia.sum()], np.float64)
        return (counts + _SMOOTHING) / (counts + _SMOOTHING).sum()

    js_scores = _js_distance(p, q)
    js_bands = _js_distance(band_shares(ref), band_shares(cur))
    psi = float(((q - p) * np.log(q / p)).sum())
    p_value = float(stats.ks_2samp(ref, cur).pvalue)
    drifted = p_value < alpha
    return PredictionDrift(score=max(js_scores, js_bands) if drifted else 0.0, js_scores=js_scores, js_bands=js_bands,
                           psi=psi, p_value=p_value, drifted=drifted,
                           reference_hist=(ref_counts / len(ref)).tolist(), live_hist=(cur_counts / len(cur)).tolist(),
                           n_reference=len(ref), n_live=len(cur))
