from pathlib import Path

from ui.review_app import trained_on_synthetic
from xraylab.registry import ModelCard, promote


def write_card(root: Path, version: str, trained_on: str) -> None:
    (root / version).mkdir(parents=True)
    card = ModelCard(version=version, architecture="t", preprocess={}, bands={}, trained_on=trained_on)
    import json

    (root / version / "card.json").write_text(json.dumps(card.to_dict()))


def test_warning_follows_the_model_that_scored(tmp_path: Path) -> None:
    assert trained_on_synthetic(None, "anything")  # no registry: always warn
    assert trained_on_synthetic(tmp_path, None)  # empty registry: warn
    write_card(tmp_path, "synth-1", "synthetic")
    write_card(tmp_path, "real-1", "Kaggle chest-xray (real)")
    promote(tmp_path, "synth-1")
    assert trained_on_synthetic(tmp_path, None)
    assert trained_on_synthetic(tmp_path, "synth-1") and not trained_on_synthetic(tmp_path, "real-1")
    promote(tmp_path, "real-1")
    assert not trained_on_synthetic(tmp_path, None)
    assert trained_on_synthetic(tmp_path, "unknown-version")  # unknown: warn
