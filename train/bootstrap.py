"""A small model trained for a few seconds on generated images, so the pipeline has something to serve.

It goes through the same preprocessing chain and the same registry as real training, and its
card says ``trained_on: synthetic``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from xraylab.bands import DEFAULT_BANDS, Bands
from xraylab.imaging import PreprocessSpec, inference_transforms
from xraylab.registry import ModelCard, publish
from xraylab.synthetic import encode_jpeg, generate_xray

from .models import build_model

__all__ = ["train_bootstrap_model"]

log = logging.getLogger(__name__)


def _make_arrays(n: int, seed: int, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    transform = inference_transforms(spec)
    labels = (rng.random(n) < 0.5).astype(np.float32)
    images = np.stack([transform(encode_jpeg(generate_xray(rng, bool(y)))) for y in labels])
    return images, labels


def train_bootstrap_model(model_dir: Path, *, n_train: int = 320, n_test: int = 80, epochs: int = 8,
                          bands: Bands | None = None, seed: int = 0, promote: bool = True) -> ModelCard:
    """Train ``tiny-cnn`` briefly, publish it (promoted), and return its card with test accuracy/AUC."""
    import keras

    keras.utils.set_random_seed(seed)
    spec = PreprocessSpec()
    bands = bands or DEFAULT_BANDS
    t0 = time.perf_counter()
    x_train, y_train = _make_arrays(n_train, seed, spec)
    x_test, y_test = _make_arrays(n_test, seed + 1, spec)
    model = build_model("tiny-cnn", spec)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    _, acc, auc = model.evaluate(x_test, y_test, verbose=0)
    version = "bootstrap-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    card = ModelCard(
        version=version, architecture="tiny-cnn", preprocess=spec.to_dict(),
        bands=bands.to_dict(), trained_on="synthetic",
        metrics={"test_accuracy": round(float(acc), 4), "test_auc": round(float(auc), 4),
                 "n_train": n_train, "n_test": n_test, "epochs": epochs,
                 "train_seconds": round(time.perf_counter() - t0, 1)},
        notes="Bootstrap model: a few seconds of training so a fresh install has something to serve; "
              "train and promote a real one with `xraylab train run`.",
    )
    publish(model, model_dir, card, promote_it=promote)
    log.info("published bootstrap model %s: test accuracy %.3f, AUC %.3f", version, acc, auc)
    return card
