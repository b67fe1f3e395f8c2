from pathlib import Path

import numpy as np
import pytest

from xraylab.imaging import PreprocessSpec
from xraylab.registry import (
    ModelCard,
    ModelNotFoundError,
    list_cards,
    load_model,
    promote,
    promoted_version,
    publish,
    resolve_version,
)

pytestmark = pytest.mark.usefixtures("model_keys")  # every version is signed (tests/conftest.py's key pair)


def tiny_model(spec: PreprocessSpec):
    import keras

    return keras.Sequential([keras.Input((spec.height, spec.width, 1)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(1, activation="sigmoid")])


def card(version: str, spec: PreprocessSpec, created: str) -> ModelCard:
    return ModelCard(version=version, architecture="test", preprocess=spec.to_dict(),
                     bands={"pneumonia": 0.8, "unsure": 0.6}, created_at=created)


def test_publish_load_promote(tmp_path: Path) -> None:
    spec = PreprocessSpec(height=16, width=16)
    with pytest.raises(ModelNotFoundError):
        resolve_version(tmp_path)
    model = tiny_model(spec)
    publish(model, tmp_path, card("v1", spec, "2026-01-01T00:00:00"))
    publish(tiny_model(spec), tmp_path, card("v2", spec, "2026-01-02T00:00:00"))
    assert (tmp_path / "v1" / "signature.json").is_file()
    assert [c.version for c in list_cards(tmp_path)] == ["v1", "v2"]
    assert resolve_version(tmp_path) == "v2"  # newest when none promoted
    promote(tmp_path, "v1")
    assert promoted_version(tmp_path) == "v1" and resolve_version(tmp_path) == "v1"
    loaded, loaded_card = load_model(tmp_path)
    assert loaded_card.version == "v1" and loaded_card.synthetic and loaded_card.preprocess_spec() == spec
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5)
    with pytest.raises(FileExistsError):
        publish(model, tmp_path, card("v1", spec, "x"))
    with pytest.raises(ModelNotFoundError):
        promote(tmp_path, "nope")
    with pytest.raises(ValueError):
        promote(tmp_path, "../escape")


def test_card_notice_says_synthetic_or_research_use() -> None:
    from xraylab.registry import SYNTHETIC_NOTICE

    spec = PreprocessSpec(height=16, width=16)
    assert card("s", spec, "x").notice == SYNTHETIC_NOTICE
    real = ModelCard(version="r", architecture="t", preprocess=spec.to_dict(), bands={}, trained_on="Kermany 2018")
    assert "Kermany 2018" in real.notice and "research use only, not a medical device" in real.notice
    assert not real.synthetic


def test_install_shipped_imports_once_and_promotes_over_a_bootstrap_only(tmp_path: Path) -> None:
    from xraylab.registry import FolderRegistry, ShippedRegistry
    from xraylab.registry.signing import write_checksums

    spec = PreprocessSpec(height=16, width=16)
    real = ModelCard(version="real-1", architecture="t", preprocess=spec.to_dict(), bands={"pneumonia": 0.8,
                     "unsure": 0.6}, trained_on="Kermany 2018")
    publish(tiny_model(spec), tmp_path / "trained", real)
    (tmp_path / "shipped").mkdir()  # committed as models/ is: the files, their SHA256SUMS, no signature
    (tmp_path / "trained" / "real-1").rename(tmp_path / "shipped" / "real-1")
    (tmp_path / "shipped" / "real-1" / "signature.json").unlink()
    write_checksums(tmp_path / "shipped" / "real-1")
    (tmp_path / "shipped" / "PROMOTED").write_text("real-1\n")
    shipped = ShippedRegistry(tmp_path / "shipped")
    target = FolderRegistry(tmp_path / "registry")
    publish(tiny_model(spec), target, card("bootstrap-1", spec, "2026-01-01T00:00:00"), promote_it=True)

    installed, done = target.install_shipped(shipped)
    assert installed.version == "real-1" and done == ["imported", "promoted"]
    assert target.promoted_version() == "real-1" and not installed.synthetic
    assert target.install_shipped(shipped)[1] == []  # a second set-up changes nothing

    own = ModelCard(version="own-2", architecture="t", preprocess=spec.to_dict(), bands=real.bands,
                    trained_on="our hospital's films")
    publish(tiny_model(spec), target, own, promote_it=True)
    assert target.install_shipped(shipped)[1] == [] and target.promoted_version() == "own-2"  # theirs stays

    fresh = FolderRegistry(tmp_path / "fresh")
    assert fresh.install_shipped(shipped)[1] == ["imported", "promoted"]
    with pytest.raises(ModelNotFoundError):
        fresh.install_shipped(ShippedRegistry(tmp_path / "nothing-shipped"))
