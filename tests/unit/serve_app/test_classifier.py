"""The classifier's batch split by model version (a hot swap in progress), with stand-in models."""

import threading

import numpy as np
import pytest

from serve_app.classifier import ActiveModel, ClassifierConfig, score_batch
from xraylab.bands import Bands
from xraylab.registry import ModelCard


class RecordingModel:
    """``predict_on_batch`` returns ``base + mean pixel`` per image and records each batch it saw."""

    def __init__(self, base: float) -> None:
        self.base, self.batches = base, []

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        return (self.base + batch.reshape(len(batch), -1).mean(axis=1)).reshape(-1, 1)


def active(version: str, base: float, calibration: dict | None = None) -> ActiveModel:
    card = ModelCard(version=version, architecture="t", preprocess={}, bands=Bands().to_dict(),
                     calibration=calibration or {"a": 1.0, "b": 0.0})
    return ActiveModel(model=RecordingModel(base), card=card, transform=None, bands=Bands())  # type: ignore[arg-type]


def image(value: float) -> np.ndarray:
    return np.full((4, 4, 1), value, np.float32)


def test_each_model_scores_only_its_own_images_in_one_pass() -> None:
    old, new = active("v1", 0.1), active("v2", 0.5)
    values = [0.01, 0.02, 0.03, 0.04, 0.05]
    owners = [old, new, old, new, old]
    scores = score_batch([image(v) for v in values], owners)
    assert scores == pytest.approx([(0.1 if m is old else 0.5) + v for v, m in zip(values, owners, strict=True)])
    assert len(old.model.batches) == len(new.model.batches) == 1, "one forward pass per model"
    assert [float(b.mean()) for b in old.model.batches[0]] == pytest.approx([0.01, 0.03, 0.05])
    assert [float(b.mean()) for b in new.model.batches[0]] == pytest.approx([0.02, 0.04])


def test_each_model_applies_its_own_calibration() -> None:
    plain, calibrated = active("v1", 0.4), active("v2", 0.4, calibration={"a": 1.0, "b": 2.0})
    raw, cal = score_batch([image(0.1), image(0.1)], [plain, calibrated])
    assert raw == pytest.approx(0.5)
    assert cal == pytest.approx(1 / (1 + np.exp(-2.0)))  # logit(0.5) = 0, plus b = 2


def test_config_is_validated() -> None:
    assert ClassifierConfig().max_batch_size >= 1
    with pytest.raises(ValueError):
        ClassifierConfig(max_batch_size=0)


def test_padding_to_buckets_keeps_each_images_own_score() -> None:
    padded = active("v1", 0.0)
    padded = ActiveModel(padded.model, padded.card, None, Bands(), pad_to_buckets=True)  # type: ignore[arg-type]
    batch = np.stack([image(v) for v in (0.1, 0.2, 0.3, 0.4, 0.5)])
    raw = padded.forward(batch)
    assert raw.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert [len(b) for b in padded.model.batches] == [8], "five images run as one padded batch of eight"
    padded.forward(batch[:4])
    assert len(padded.model.batches[-1]) == 4, "a power of two runs as it is"
    plain = active("v1", 0.0)
    plain.forward(batch)
    assert [len(b) for b in plain.model.batches] == [5], "without padding (TensorFlow), the batch as formed"


def test_an_input_decoded_at_the_edge_is_scored_by_the_model_of_its_chain_or_refused() -> None:
    """During a swap the model before keeps scoring inputs prepared for its chain; an input of a chain no served
    model has is refused with the chain to prepare it with (SpecChangedError)."""
    from serve_app.classifier import Classifier
    from xraylab.imaging import PreprocessSpec
    from xraylab.messages import ModelInput
    from xraylab.model_input import SpecChangedError

    def served(version: str, spec: PreprocessSpec) -> ActiveModel:
        card = ModelCard(version=version, architecture="t", preprocess=spec.to_dict(), bands=Bands().to_dict())
        return ActiveModel(model=RecordingModel(0.0), card=card, transform=None, bands=Bands())  # type: ignore[arg-type]

    small, large = PreprocessSpec(height=64, width=64), PreprocessSpec(height=128, width=128)
    replica = Classifier.func_or_class.__new__(Classifier.func_or_class)
    replica._stop = threading.Event()  # what __del__ sets
    replica.active, replica.previous = served("v2", large), served("v1", small)
    assert replica._model_for(ModelInput(image(0.1), large.key())) is replica.active
    assert replica._model_for(ModelInput(image(0.1), small.key())) is replica.previous
    assert replica.preprocess_spec() == large.to_dict()
    with pytest.raises(SpecChangedError) as refused:
        replica._model_for(ModelInput(image(0.1), PreprocessSpec(height=32, width=32).key()))
    assert refused.value.spec == large.to_dict()


@pytest.mark.usefixtures("model_keys")  # publishing signs, loading checks (tests/conftest.py's key pair)
def test_a_hot_swap_to_a_version_no_trusted_key_signed_is_refused_and_the_old_model_keeps_serving(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    import keras

    from serve_app.classifier import Classifier, load_active
    from xraylab.imaging import PreprocessSpec
    from xraylab.registry import FolderRegistry

    spec = PreprocessSpec(height=16, width=16)

    def model():
        return keras.Sequential([keras.Input((16, 16, 1)), keras.layers.GlobalAveragePooling2D(),
                                 keras.layers.Dense(1, activation="sigmoid")])

    def card(version: str) -> ModelCard:
        return ModelCard(version=version, architecture="t", preprocess=spec.to_dict(), bands=Bands().to_dict())

    registry = FolderRegistry(tmp_path / "models")
    registry.publish(model(), card("v1"), promote_it=True)
    # What someone with write access to the registry, but not the training key, can do: a whole version (a real
    # Keras model, a card) and the promoted pointer.
    forged = tmp_path / "forged"
    forged.mkdir()
    model().save(forged / "model.keras")
    (forged / "card.json").write_text(card("v2").to_json())
    registry.publish_dir(forged, "v2")
    (registry.root / "PROMOTED").write_text("v2\n")

    replica = Classifier.func_or_class.__new__(Classifier.func_or_class)
    replica._stop = threading.Event()
    replica.registry, replica.limits, replica.poll_s = registry, None, 0.01
    replica.active, replica.previous = load_active(registry, "v1"), None
    caplog.set_level(logging.INFO, logger="xraylab.classifier")
    watcher = threading.Thread(target=replica._follow_promotions, daemon=True)
    watcher.start()
    try:
        def wait_for(condition, what: str) -> None:
            deadline = time.monotonic() + 30
            while not condition():
                assert time.monotonic() < deadline, what
                time.sleep(0.01)

        wait_for(lambda: "refusing promoted model v2" in caplog.text, "the watcher to refuse v2")
        assert "unsigned" in caplog.text and replica.active.card.version == "v1", "the old model keeps serving"
        assert replica.previous is None
        registry.publish(model(), card("v3"), promote_it=True)  # a signed one is swapped in as before
        wait_for(lambda: replica.active.card.version == "v3", "the watcher to swap to v3")
        assert replica.previous is not None and replica.previous.card.version == "v1"
    finally:
        replica._stop.set()
        watcher.join(5)
