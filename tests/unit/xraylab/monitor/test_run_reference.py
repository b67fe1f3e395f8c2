"""``MonitorRunner.image_drift`` against a reference that could not record every statistic: the sizes of a
training set resized before training are NaN in its reference and left out of the comparison."""

import numpy as np

from xraylab.monitor.image_stats import READABLE_STATS, SIZE_STATS
from xraylab.monitor.reference import Reference
from xraylab.monitor.run import MonitorRunner
from xraylab.settings import load_settings


def runner_with(reference: Reference) -> MonitorRunner:
    runner = MonitorRunner(load_settings(), db=None, model_version="v", sinks=[])  # type: ignore[arg-type]
    runner.reference = reference  # prepare() loads nothing when a reference is there
    return runner


def stats(rng: np.random.Generator, n: int, side: float) -> np.ndarray:
    pixels = rng.normal([0.5, 0.2, 0.01], 0.02, (n, 3))
    return np.column_stack([pixels, np.full(n, side), np.full(n, side * 1.1), np.full(n, 1 / 1.1)])


def test_sizes_the_reference_could_not_record_are_not_compared() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(200, 8))
    live_embeddings, live_stats = rng.normal(size=(100, 8)), stats(rng, 100, 2500.0)  # full-size films
    recorded = Reference(embeddings, stats(rng, 200, 224.0), rng.random(200))
    drift = runner_with(recorded).image_drift(live_embeddings, live_stats)
    assert drift.drifted and {"width", "height"} <= {m.name for m in drift.moved}  # recorded sizes are compared

    unknown = stats(rng, 200, 224.0)
    unknown[:, [READABLE_STATS.index(name) for name in SIZE_STATS]] = np.nan
    drift = runner_with(Reference(embeddings, unknown, rng.random(200))).image_drift(live_embeddings, live_stats)
    assert drift.score == 0.0 and not drift.moved  # only what the reference holds: pixels and embeddings agree
    shifted = live_stats.copy()
    shifted[:, 0] += 0.2  # brighter: still seen
    assert "brightness" in {m.name for m in runner_with(Reference(embeddings, unknown, rng.random(200)))
                            .image_drift(live_embeddings, shifted).moved}
