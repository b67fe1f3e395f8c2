"""A small model trained for a few seconds on generated images, so the pipeline has something to serve.

It goes through the same preprocessing chain and the same registry as real training, carries reference
statistics for the drift monitor as trained models do, and its card says ``trained_on: synthetic``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import numpy as np

from xraylab.bands import DEFAULT_BANDS, Bands
from xraylab.calibration import apply_platt, fit_platt
from xraylab.classification_metrics import binary_metrics
from xraylab.imaging import PreprocessSpec, inference_transforms
from xraylab.monitor.reference import REFERENCE_FILE, encode_reference
from xraylab.registry import ModelCard, RegistryLike, publish
from xraylab.synthetic import encode_jpeg, generate_xray

from .evaluate import predict_scores, reference_statistics
from .models import build_model

__all__ = ["train_bootstrap_model"]

log = logging.getLogger(__name__)
GENERATED_SIZE = 224  # the side of the generated radiographs it trains on


def _make_arrays(n: int, seed: int, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    transform = inference_transforms(spec)
    labels = (rng.random(n) < 0.5).astype(np.float32)
    images = np.stack([transform(encode_jpeg(generate_xray(rng, bool(y), GENERATED_SIZE))) for y in labels])
    return images, labels


def train_bootstrap_model(registry: RegistryLike, *, n_train: int = 320, n_test: int = 80, n_val: int = 400,
                          epochs: int = 8, bands: Bands | None = None, seed: int = 0,
                          promote: bool = True) -> ModelCard:
    """Train ``tiny-cnn`` briefly, calibrate it (Platt, on a validation set of its own), publish it (promoted)
    with its reference statistics, and return its card with test accuracy/AUC."""
    import keras

    keras.utils.set_random_seed(seed)
    spec = PreprocessSpec()
    bands = bands or DEFAULT_BANDS
    t0 = time.perf_counter()
    x_train, y_train = _make_arrays(n_train, seed, spec)
    x_test, y_test = _make_arrays(n_test, seed + 1, spec)
    model = build_model("tiny-cnn", spec)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    # Calibrated as trained models are (the bands and the monitor's estimated performance need probabilities),
    # on a validation set large enough that prediction drift measured against its scores is not sampling noise.
    x_val, y_val = _make_arrays(n_val, seed + 2, spec)
    calibration = fit_platt(predict_scores(model, x_val), y_val)
    test = binary_metrics(y_test, apply_platt(predict_scores(model, x_test), calibration))
    version = "bootstrap-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    card = ModelCard(
        version=version, architecture="tiny-cnn", preprocess=spec.to_dict(),
        bands=bands.to_dict(), trained_on="synthetic", calibration=calibration,
        metrics={"test_accuracy": round(float(test["accuracy"]), 4), "test_auc": round(float(test["auc"]), 4),
                 "n_train": n_train, "n_test": n_test, "n_val": n_val, "epochs": epochs,
                 "train_seconds": round(time.perf_counter() - t0, 1)},
        notes="Bootstrap model: a few seconds of training so a fresh install has something to serve; "
              "train and promote a real one with `xraylab train run`.",
    )
    # The monitor's reference: the training images (their size before preprocessing: generate_xray's) and the
    # calibrated validation scores.
    sizes = np.full((len(x_train), 2), GENERATED_SIZE, np.float64)
    reference = reference_statistics(model, x_train, sizes=sizes, val_images=x_val, seed=seed, calibration=calibration)
    publish(model, registry, card, promote_it=promote, extra_files={REFERENCE_FILE: encode_reference(reference)})
    log.info("published bootstrap model %s: test accuracy %.3f, AUC %.3f", version, test["accuracy"], test["auc"])
    return card
