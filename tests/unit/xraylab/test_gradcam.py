"""Grad-CAM: shapes and ranges for the three architectures, and a trained model that looks where the
evidence is (generated images, a bright blob in the top-left quadrant for the positive class)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.models import build_model
from xraylab.gradcam import explain, grad_cam, heat_from_png, heat_to_png, last_conv_layer, overlay
from xraylab.imaging import PreprocessSpec, inference_transforms
from xraylab.registry import ModelCard, load_model, publish

SPEC = PreprocessSpec(height=64, width=64)
EXPECTED_LAYER_CLASS = {"seed-cnn": "MaxPooling2D", "tiny-cnn": "Conv2D", "xray-resnet": "Activation"}


def blob_images(n: int, rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Noisy grey images; the positive half has a bright Gaussian blob somewhere in the top-left quadrant."""
    images = rng.uniform(0.1, 0.4, (n, size, size)).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    q = size // 2
    for i in np.flatnonzero(labels):
        cy, cx = rng.integers(6, q - 6, 2)
        images[i] += 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    return np.clip(images, 0, 1)[..., np.newaxis], labels


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(arr[..., 0] * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", params=["tiny-cnn", "seed-cnn"])
def trained(request: pytest.FixtureRequest) -> tuple[object, np.ndarray, np.ndarray]:
    """A model trained for a few epochs on blob images: (model, held-out images, their labels). seed-cnn's
    Flatten-Dense head is where plain Grad-CAM goes blank and the HiResCAM fallback answers."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = blob_images(192, rng)
    model = build_model(request.param, SPEC)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", jit_compile=False)
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    x_test, y_test = blob_images(64, rng)
    accuracy = float(np.mean((np.asarray(model(x_test, training=False))[:, 0] > 0.5) == y_test))
    assert accuracy >= 0.9, f"the blob model did not learn (accuracy {accuracy:.2f})"
    return model, x_test, y_test


@pytest.mark.parametrize("name", ["seed-cnn", "tiny-cnn", "xray-resnet"])
def test_each_architecture(name: str) -> None:
    model = build_model(name, SPEC)
    layer = last_conv_layer(model)
    assert model.get_layer(layer).__class__.__name__ == EXPECTED_LAYER_CLASS[name]
    assert len(model.get_layer(layer).output.shape) == 4
    batch = np.random.default_rng(1).uniform(0, 1, (3, SPEC.height, SPEC.width, 1)).astype(np.float32)
    heat = grad_cam(model, batch)
    assert heat.shape == (3, SPEC.height, SPEC.width) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    for one in heat:  # each map is scaled to its own maximum, or all zero
        assert one.max() == pytest.approx(1.0) or not one.any()
    # an explicit layer gives the same map; a layer without a feature map is refused
    np.testing.assert_allclose(grad_cam(model, batch, layer), heat, atol=1e-6)
    with pytest.raises(ValueError, match="4-D"):
        grad_cam(model, batch, model.layers[-1].name)


def test_no_evidence_gives_zero_map_not_nan() -> None:
    model = build_model("tiny-cnn", SPEC)  # zero biases: a black image has all-zero feature maps
    heat = grad_cam(model, np.zeros((2, SPEC.height, SPEC.width, 1), np.float32))
    assert np.isfinite(heat).all() and not heat.any()


def test_model_without_feature_map_is_refused() -> None:
    import keras

    dense = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1, "sigmoid")])
    with pytest.raises(ValueError, match="no layer with a 4-D"):
        last_conv_layer(dense)


def test_sequential_without_input_is_built_from_the_batch() -> None:
    import keras

    model = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(1, activation="sigmoid")])
    heat = grad_cam(model, np.random.default_rng(2).uniform(0, 1, (2, 20, 20, 1)).astype(np.float32))
    assert heat.shape == (2, 20, 20) and np.isfinite(heat).all()


def test_trained_model_looks_at_the_blob(trained) -> None:
    model, x_test, y_test = trained
    heat = grad_cam(model, x_test[y_test == 1])
    q = SPEC.height // 2
    top_left = heat[:, :q, :q].sum(axis=(1, 2))
    bottom_right = heat[:, q:, q:].sum(axis=(1, 2))
    total = heat.sum(axis=(1, 2))
    assert (total > 0).all(), "a confidently positive image should have some evidence"
    assert (top_left > bottom_right).mean() >= 0.9, "Grad-CAM mass should sit in the blob's quadrant"
    assert (top_left > 2 * bottom_right).mean() >= 0.8
    assert np.median(top_left / total) > 0.5  # of four quadrants, the blob's holds most of the mass


def test_saved_and_reloaded_model_gives_the_same_map(trained, tmp_path: Path) -> None:
    import keras

    model, x_test, _ = trained
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    assert last_conv_layer(reloaded) == last_conv_layer(model)
    np.testing.assert_allclose(grad_cam(reloaded, x_test[:8]), grad_cam(model, x_test[:8]), atol=1e-5)


@pytest.mark.parametrize("name", ["seed-cnn", "xray-resnet"])
def test_reloaded_architectures_give_the_same_map(name: str, tmp_path: Path) -> None:
    import keras

    model = build_model(name, SPEC)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    batch = np.random.default_rng(5).uniform(0, 1, (2, SPEC.height, SPEC.width, 1)).astype(np.float32)
    np.testing.assert_allclose(grad_cam(reloaded, batch), grad_cam(model, batch), atol=1e-5)


@pytest.mark.usefixtures("model_keys")  # publishing signs (tests/conftest.py's key pair)
def test_explain_runs_the_models_own_preprocessing(trained, tmp_path: Path) -> None:
    model, x_test, y_test = trained
    card = ModelCard(version="v1", architecture="tiny-cnn", preprocess=SPEC.to_dict(),
                     bands={"pneumonia": 0.8, "unsure": 0.6})
    publish(model, tmp_path, card)
    loaded, loaded_card = load_model(tmp_path, "v1")
    data = png_bytes(x_test[np.flatnonzero(y_test == 1)[0]])
    heat = explain(loaded, loaded_card, data)
    assert heat.shape == (SPEC.height, SPEC.width)
    expected = grad_cam(model, inference_transforms(SPEC)(data)[np.newaxis])[0]
    np.testing.assert_allclose(heat, expected, atol=1e-5)


def test_overlay_colours_only_the_hot_region() -> None:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (90, 120), dtype=np.uint8))  # (W, H) = (120, 90)
    heat = np.zeros((30, 40), np.float32)
    heat[3:9, 4:12] = 1.0  # image rows ~9-27, columns ~12-36
    out = overlay(image, heat)
    assert out.mode == "RGB" and out.size == image.size
    rgb, grey = np.asarray(out).astype(int), np.asarray(image).astype(int)
    changed = np.abs(rgb - grey[..., np.newaxis]).max(axis=-1) > 0
    assert changed[12:24, 15:33].all()  # well inside the hot block
    assert not changed[40:, :].any() and not changed[:, 60:].any()  # far from it: the X-ray unchanged
    # RGB and 16-bit input alike; alpha 0 leaves the image as it was
    assert overlay(image.convert("RGB"), heat).size == image.size
    assert np.array_equal(np.asarray(overlay(image, heat, alpha=0.0))[..., 0], grey)


def test_png_round_trip() -> None:
    heat = np.random.default_rng(4).uniform(0, 1, (37, 53)).astype(np.float32)
    heat[0, 0], heat[0, 1] = 0.0, 1.0
    data = heat_to_png(heat)
    assert data.startswith(b"\x89PNG")
    back = heat_from_png(data)
    assert back.shape == heat.shape and back.dtype == np.float32
    assert np.abs(back - heat).max() <= 1 / 255 + 1e-7
    assert back[0, 0] == 0.0 and back[0, 1] == 1.0
