"""A short Ray Train run on a few hundred real X-rays, through `xraylab train run` as a user runs it: the
validation split is carved from train, the model learns (validation AUC clearly above chance), the bands are
chosen on validation, and the card says what data it learnt from, with its attribution and limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import xraylab
from tests.realdata.conftest import KAGGLE_224
from xraylab.labels import CLASSES
from xraylab.registry import FolderRegistry

pytestmark = pytest.mark.realdata


def subset(root: Path, per_class: dict[str, int]) -> Path:
    """A Kaggle-layout folder of symbolic links to the first images of each split and class (no copies)."""
    for split, n in per_class.items():
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for path in sorted((KAGGLE_224 / split / cls).iterdir())[:n]:
                (folder / path.name).symlink_to(path)
    return root


def test_a_short_ray_train_run_on_real_xrays_learns(tmp_path: Path, model_keys) -> None:
    data = subset(tmp_path / "data", {"train": 160, "test": 40})
    env = {"XRAYLAB_STATE_DIR": str(tmp_path / "state"), "XRAYLAB_MODEL_DIR": str(tmp_path / "models")}
    result = xraylab("train", "run", "--data", str(data), "--arch", "xray-cnn", "--image-size", "64", "--epochs", "4",
                     "--batch-size", "16", "--learning-rate", "2e-3", "--lr-schedule", "cosine", "--patience", "4",
                     "--val-fraction", "0.2", "--trained-on", "kermany", "--bands-sensitivity", "0.95",
                     "--version", "real-short", env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    card = FolderRegistry(tmp_path / "models").read_card("real-short")
    metrics = card.metrics
    assert metrics["best_val_auc"] >= 0.8, f"validation AUC {metrics['best_val_auc']:.3f}: it did not learn"
    assert metrics["val_split"] == {"source": "carved from train (stratified)", "fraction": 0.2, "seed": 0, "n": 64}
    assert metrics["counts"]["train"] == {"NORMAL": 128, "PNEUMONIA": 128}
    assert metrics["counts"]["val"] == {"NORMAL": 32, "PNEUMONIA": 32} and metrics["test"]["n"] == 80
    chosen = metrics["bands_chosen"]
    assert chosen["unsure"]["sensitivity"] >= 0.95 and card.bands == {"pneumonia": chosen["pneumonia"]["threshold"],
                                                                      "unsure": chosen["unsure"]["threshold"]}
    assert set(metrics["test"]["band_thresholds"]) == {"pneumonia_or_unsure", "pneumonia"}
    assert "Kermany" in card.trained_on and not card.synthetic
    assert "CC BY 4.0" in card.notes and "not a medical device" in card.notes
    assert "research use only, not a medical device" in card.notice
    assert len(metrics["epoch_seconds"]) == len(metrics["history"]) >= 1
    version_dir = tmp_path / "models" / "real-short"
    for name in ("model.keras", "metrics.json", "roc.png", "confusion_matrix.png", "reliability.png", "reference.npz"):
        assert (version_dir / name).stat().st_size > 0, name
    printed = json.loads(result.stdout[result.stdout.index("{"): result.stdout.rindex("}") + 1])
    assert printed["version"] == "real-short" and printed["bands"] == card.bands
