import numpy as np
import pytest

from train.metrics import classification_report
from train.thresholds import choose_bands, rates_at


def scores_and_labels(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(600) < 0.7).astype(int)
    scores = np.clip(np.where(y == 1, rng.normal(0.8, 0.15, 600), rng.normal(0.3, 0.15, 600)), 0, 1)
    return y, scores


@pytest.mark.parametrize("sensitivity", [0.9, 0.95, 0.99])
def test_unsure_catches_the_target_share_and_no_lower_threshold_is_needed(sensitivity: float) -> None:
    y, scores = scores_and_labels()
    bands, chosen = choose_bands(y, scores, sensitivity=sensitivity, specificity=0.95)
    caught = rates_at(y, scores, bands.unsure)["sensitivity"]
    assert caught >= sensitivity
    # the highest such threshold (to the 4 decimals it is rounded to): a little higher misses the target
    assert rates_at(y, scores, bands.unsure + 2e-4)["sensitivity"] < sensitivity
    assert chosen["unsure"]["sensitivity"] == caught and chosen["target_sensitivity_pneumonia_or_unsure"] == sensitivity


def test_the_pneumonia_band_holds_few_normals_and_sits_above_unsure() -> None:
    y, scores = scores_and_labels(1)
    bands, chosen = choose_bands(y, scores, sensitivity=0.95, specificity=0.97)
    assert bands.pneumonia >= bands.unsure
    assert rates_at(y, scores, bands.pneumonia, strict=True)["specificity"] >= 0.97
    assert rates_at(y, scores, bands.pneumonia - 2e-3, strict=True)["specificity"] < 0.97
    report = classification_report(y, scores, bands=bands)
    assert report["band_thresholds"]["pneumonia_or_unsure"] == rates_at(y, scores, bands.unsure)
    assert report["band_thresholds"]["pneumonia"]["specificity"] == chosen["pneumonia"]["specificity"]
    assert report["bands"]["Normal"]["pneumonia"] <= round(0.05 * y.sum())  # what the Normal band buries


def test_pneumonia_never_under_unsure_when_the_classes_overlap() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.95])  # a model worse than chance
    bands, _ = choose_bands(y, scores, sensitivity=0.95, specificity=0.95)
    assert bands.unsure <= 0.1 and bands.pneumonia >= bands.unsure


def test_one_class_cannot_choose_bands() -> None:
    with pytest.raises(ValueError, match="both classes"):
        choose_bands(np.ones(5), np.linspace(0, 1, 5))
