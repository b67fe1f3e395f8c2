"""Evaluate a model on a labelled folder, and publish trained models with everything serving and
monitoring need (preprocessing spec, bands, metrics, data fingerprint, reference statistics)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from xraylab.bands import Bands
from xraylab.batches import predict_in_batches
from xraylab.calibration import apply_platt
from xraylab.imaging import PreprocessSpec
from xraylab.monitor.reference import REFERENCE_FILE, encode_reference
from xraylab.registry import ModelCard, RegistryLike, load_model, publish

from .dataset import load_images, scan_layout
from .metrics import classification_report, roc_curve
from .plots import plot_confusion, plot_reliability, plot_roc

__all__ = ["predict_scores", "evaluate_arrays", "evaluate_model", "reference_statistics", "publish_trained"]

log = logging.getLogger("xraylab.train.evaluate")


def predict_scores(model: Any, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """The model's score for each image, 1-D (uncalibrated)."""
    return predict_in_batches(model.predict_on_batch, images, batch, flatten=True)


def evaluate_arrays(model: Any, images: np.ndarray, labels: np.ndarray, out_dir: Path | None, *,
                    bands: Bands, title: str, calibration: dict[str, float] | None = None) -> dict[str, Any]:
    scores = apply_platt(predict_scores(model, images), calibration)
    report = classification_report(labels, scores, bands=bands)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        fpr, tpr = roc_curve(labels, scores)
        plot_roc(fpr, tpr, report["auc"], out_dir / "roc.png", f"ROC: {title}")
        plot_confusion(report["confusion_matrix"], out_dir / "confusion_matrix.png", f"Confusion: {title}")
        plot_reliability(report["calibration"]["bins"], report["calibration"]["ece"], out_dir / "reliability.png",
                         f"Reliability: {title}")
        (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def evaluate_model(registry: RegistryLike, version: str, data: Path, out_dir: Path, *,
                   split: str = "test") -> dict[str, Any]:
    """``xraylab evaluate``: any registered version on any folder in the layout (e.g. real X-rays), with the
    bands and calibration of its card, as serving applies them."""
    model, card = load_model(registry, version)
    index = scan_layout(data, (split,))
    images, labels, skipped = load_images(index.files[split], card.preprocess_spec())
    report = evaluate_arrays(model, images, labels, out_dir, bands=Bands.from_card(card.bands),
                             title=f"{card.version} on {Path(data).name}/{split}", calibration=card.calibration)
    report.update({"model_version": card.version, "data": str(data), "split": split, "skipped": len(skipped)})
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def reference_statistics(model: Any, images: np.ndarray, *, sizes: np.ndarray, val_images: np.ndarray,
                         sample: int = 256, seed: int = 0,
                         calibration: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """What the drift monitor compares live traffic against (``xraylab.monitor.reference``): embeddings and
    readable statistics of a sample of training images (``sizes``: their original (width, height), before
    preprocessing resized them), their scores, and the calibrated scores of the validation images."""
    from xraylab.monitor.features import features_of_arrays, make_embedder
    from xraylab.monitor.reference import reference_arrays

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(images), size=min(sample, len(images)), replace=False)
    chosen = images[pick]
    flat = chosen.reshape(len(chosen), -1)
    intensity = np.stack([flat.mean(1), flat.std(1), *np.percentile(flat, [5, 50, 95], axis=1)], axis=1)
    embeddings, readable = features_of_arrays(make_embedder(model), chosen, np.asarray(sizes)[pick])
    return reference_arrays(embeddings=embeddings, readable=readable, intensity=intensity,
                            train_scores=apply_platt(predict_scores(model, chosen), calibration),
                            val_scores=apply_platt(predict_scores(model, val_images), calibration))


def publish_trained(model: Any, *, registry: RegistryLike, version: str, arch: str, spec: PreprocessSpec, bands: Bands,
                    metrics: dict[str, Any], fingerprint: str, reference: dict[str, np.ndarray],
                    eval_dir: Path, trained_on: str = "synthetic", promote_it: bool = False,
                    calibration: dict[str, float] | None = None, notes: str = "") -> ModelCard:
    extra = {REFERENCE_FILE: encode_reference(reference)}
    for name in ("metrics.json", "roc.png", "confusion_matrix.png", "reliability.png"):
        if (eval_dir / name).exists():
            extra[name] = (eval_dir / name).read_bytes()
    card = ModelCard(version=version, architecture=arch, preprocess=spec.to_dict(),
                     bands=bands.to_dict(), trained_on=trained_on,
                     metrics=metrics, data_fingerprint=fingerprint, notes=notes)
    if calibration:
        card.calibration = dict(calibration)
    publish(model, registry, card, promote_it=promote_it, extra_files=extra)
    return card
