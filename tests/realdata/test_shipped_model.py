"""The model the project ships (``models/``, trained on the Kermany set): it is what its card says, on the 624
test images; a full-size film gets the band of its 224 copy; the monitor reads real X-rays as in-distribution and
generated or blurred ones as drift."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.realdata.conftest import FULL_RESOLUTION, KAGGLE_224
from train.evaluate import evaluate_model
from xraylab.bands import Bands
from xraylab.calibration import apply_platt
from xraylab.imaging import inference_transforms
from xraylab.labels import CLASSES
from xraylab.registry import FolderRegistry, ModelCard, ShippedRegistry
from xraylab.settings import load_settings, project_root

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def shipped() -> tuple[FolderRegistry, ModelCard]:
    settings = load_settings()
    assert settings.SHIPPED_MODELS is not None
    registry = ShippedRegistry(settings.SHIPPED_MODELS)
    return registry, registry.read_card(registry.resolve_version())


def test_the_shipped_model_is_small_and_says_what_it_learnt_from(shipped) -> None:
    registry, card = shipped
    folder = registry.local_dir(card.version)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 20e6
    for name in ("model.keras", "card.json", "metrics.json", "roc.png", "confusion_matrix.png", "reliability.png",
                 "reference.npz"):
        assert (folder / name).stat().st_size > 0, name
    assert not card.synthetic and "Kermany" in card.trained_on
    assert "CC BY 4.0" in card.notes and "doi:10.17632/rscbjbr9sj.2" in card.notes
    assert "paediatric" in card.notes and "not a medical device" in card.notes
    assert "research use only, not a medical device" in card.notice
    assert card.metrics["val_split"]["source"] == "carved from train (stratified)"
    assert card.metrics["counts"]["test"] == {"NORMAL": 234, "PNEUMONIA": 390}
    assert card.metrics["bands_chosen"]["unsure"]["sensitivity"] >= 0.95  # chosen on validation


def test_the_shipped_model_scores_the_test_split_as_its_card_claims(shipped, tmp_path: Path) -> None:
    registry, card = shipped
    report = evaluate_model(registry, card.version, KAGGLE_224, tmp_path, split="test")
    claimed = card.metrics["test"]
    assert report["n"] == claimed["n"] == 624 and report["skipped"] == 0
    assert abs(report["accuracy"] - claimed["accuracy"]) <= 0.005, (report["accuracy"], claimed["accuracy"])
    assert abs(report["auc"] - claimed["auc"]) <= 0.005, (report["auc"], claimed["auc"])
    assert report["confusion_matrix"] == claimed["confusion_matrix"]
    assert report["band_thresholds"] == claimed["band_thresholds"]
    for name in ("roc.png", "confusion_matrix.png", "reliability.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_a_full_size_film_gets_the_band_of_its_224_copy(shipped) -> None:
    """The 120 full-resolution films are training images (their 224 copies are in kaggle-224/train): this checks
    that serving's decoding and resizing of a 2-3k px film gives the model what the squashed copy gives it."""
    registry, card = shipped
    model, _ = registry.load_model(card.version)
    transform = inference_transforms(card.preprocess_spec())
    bands = Bands.from_card(card.bands)
    pairs = [(path, KAGGLE_224 / "train" / cls / path.name) for cls in CLASSES
             for path in sorted((FULL_RESOLUTION / cls).iterdir())]
    assert len(pairs) == 120 and all(copy.exists() for _, copy in pairs)

    def scores(paths: list[Path]) -> np.ndarray:
        x = np.stack([transform(p.read_bytes()) for p in paths])
        return apply_platt(model.predict_on_batch(x).ravel(), card.calibration)

    full, small = scores([p for p, _ in pairs]), scores([c for _, c in pairs])
    same = [bands.band(a) == bands.band(b) for a, b in zip(full, small, strict=True)]
    print(f"full size vs 224 copy: same band {sum(same)}/{len(same)}, mean |score difference| "
          f"{np.abs(full - small).mean():.4f}, max {np.abs(full - small).max():.4f}")
    assert sum(same) >= 0.95 * len(same)
    assert np.abs(full - small).mean() < 0.05


def test_the_monitor_reads_real_xrays_as_in_distribution_and_generated_ones_as_drift(tmp_path: Path) -> None:
    out = tmp_path / "monitor_real.json"
    script = project_root() / "benchmarks" / "monitor_real.py"
    result = subprocess.run([sys.executable, str(script), "--windows", "6", "--drift-windows", "2", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    kinds = json.loads(out.read_text())["kinds"]
    assert kinds["clean"]["image"]["critical_rate"] == 0.0, kinds["clean"]
    assert kinds["generated"]["image"]["critical_rate"] == 1.0, kinds["generated"]
    assert kinds["blurred"]["image"]["alarm_rate"] == 1.0, kinds["blurred"]
    assert "clean" in result.stdout and "held-back real images" in result.stdout


def test_full_size_films_read_as_in_distribution(shipped, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 model_keys) -> None:
    """Hospitals send 2-3k px films while the training copies were all 224 x 224: the reference leaves the size out
    (NaN), so the monitor judges these films by their pixels and embeddings, where they match the training set."""
    from xraylab.monitor.image_stats import SIZE_STATS
    from xraylab.monitor.run import MonitorRunner
    from xraylab.monitor.thresholds import default_thresholds

    registry, card = shipped
    FolderRegistry(tmp_path / "models").install_shipped(registry)  # signed with the test's key, as serving has it
    monkeypatch.setenv("XRAYLAB_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("XRAYLAB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("XRAYLAB_ENV_FILE", str(tmp_path / "none.env"))
    runner = MonitorRunner(load_settings(), db=None, model_version=card.version, sinks=[])  # type: ignore[arg-type]
    feats = runner.features([p.read_bytes() for p in sorted(FULL_RESOLUTION.rglob("*.jpeg"))])
    drift = runner.image_drift(feats.embeddings, feats.readable)
    print(f"full-size films: image drift {drift.score:.3f}, moved {[m.name for m in drift.moved]}")
    assert len(feats.kept) == 120 and default_thresholds().status("image", drift.score) == "ok"
    assert not {m.name for m in drift.moved} & set(SIZE_STATS)
