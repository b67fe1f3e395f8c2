"""A training job from start to published model: Ray Train, evaluation on the test split, publishing."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xraylab.bands import Bands
from xraylab.calibration import apply_platt, fit_platt
from xraylab.imaging import PreprocessSpec
from xraylab.monitor.image_stats import READABLE_STATS, SIZE_STATS
from xraylab.registry import ModelCard, RegistryLike

from .dataset import load_images, original_sizes, scan_layout
from .distributed import TrainConfig, TrainOutcome, run_training
from .evaluate import evaluate_arrays, predict_scores, publish_trained, reference_statistics
from .provenance import provenance_of
from .thresholds import choose_bands

__all__ = ["train_and_publish", "load_best_model"]

log = logging.getLogger("xraylab.train.job")


def load_best_model(outcome: TrainOutcome) -> Any:
    """The best epoch's weights (by validation AUC) in a fresh, strategy-free model."""
    from ray.train import Checkpoint

    from .models import build_model

    model = build_model(outcome.config.arch, PreprocessSpec.from_dict(outcome.config.preprocess))
    with Checkpoint(outcome.checkpoint_path).as_directory() as ckpt_dir:
        model.load_weights(str(Path(ckpt_dir) / "best.weights.h5"))
    return model


def train_and_publish(cfg: TrainConfig, *, registry: RegistryLike, bands: Bands, version: str = "",
                      promote: bool = False, trained_on: str = "synthetic",
                      bands_sensitivity: float | None = None) -> tuple[ModelCard, TrainOutcome]:
    """Train, calibrate on val, band (``bands``, or chosen on val for ``bands_sensitivity`` when it is given:
    ``train.thresholds``), evaluate on test, publish. ``trained_on`` is ``synthetic``, a known data set
    (``train.provenance``) or a description."""
    provenance = provenance_of(trained_on)
    outcome = run_training(cfg)
    model = load_best_model(outcome)
    spec = PreprocessSpec.from_dict(cfg.preprocess)
    index = scan_layout(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
    x_val, y_val, _ = load_images(index.files["val"], spec)
    raw_val = predict_scores(model, x_val)
    calibration = fit_platt(raw_val, y_val)  # bands need calibrated scores
    chosen: dict[str, Any] | None = None
    if bands_sensitivity is not None:
        bands, chosen = choose_bands(y_val, apply_platt(raw_val, calibration), sensitivity=bands_sensitivity)
    x_test, y_test, skipped_test = load_images(index.files["test"], spec)
    # the monitor's reference: a seeded sample of the train split, both classes (the files are sorted by class)
    sample = [index.files["train"][i] for i in sorted(np.random.default_rng(cfg.seed).choice(
        len(index.files["train"]), size=min(512, len(index.files["train"])), replace=False))]
    x_train, _, skipped_train = load_images(sample, spec)
    sizes = original_sizes([path for path, _ in sample if path not in set(skipped_train)])
    version = version or f"{cfg.arch}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
    with tempfile.TemporaryDirectory() as tmp:
        eval_dir = Path(tmp)
        report = evaluate_arrays(model, x_test, y_test, eval_dir, bands=bands, title=f"{version} (test split)",
                                 calibration=calibration)
        metrics = {
            "test": {k: report[k] for k in ("n", "accuracy", "auc", "sensitivity", "specificity", "precision",
                                            "f1", "mcc", "confusion_matrix", "bands", "band_thresholds")},
            "calibration_ece": report["calibration"]["ece"], "platt": calibration,
            "best_epoch": outcome.best_epoch, "best_val_auc": outcome.best_val_auc,
            "epochs_run": len(outcome.history), "resumed_from_epoch": outcome.resumed_from_epoch,
            "train_seconds": round(outcome.seconds, 1), "train_images_per_second": outcome.images_per_second,
            "workers": cfg.workers, "gpus_per_worker": cfg.gpus_per_worker, "counts": outcome.counts,
            "val_split": outcome.val_split, "bands_chosen": chosen or "from settings (XRAYLAB_BAND_*)",
            "epoch_seconds": [h["epoch_seconds"] for h in outcome.history],
            "skipped_test_images": len(skipped_test),
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("storage_path", "progress_dir")},
            "history": outcome.history,
        }
        reference = reference_statistics(model, x_train, val_images=x_val, sizes=sizes, calibration=calibration)
        if len(np.unique(sizes, axis=0)) == 1:
            # every sampled training image has one size: the set was resized before training (the Kermany 224
            # copies), so its sizes say nothing of the films the model takes; the monitor does not compare them
            log.info("training images all %dx%d: the reference leaves their size out", *sizes[0])
            reference["readable"][:, [READABLE_STATS.index(name) for name in SIZE_STATS]] = np.nan
        card = publish_trained(model, registry=registry, version=version, arch=cfg.arch, spec=spec, bands=bands,
                               metrics=metrics, fingerprint=outcome.data_fingerprint, reference=reference,
                               eval_dir=eval_dir, trained_on=provenance.trained_on, promote_it=promote,
                               calibration=calibration, notes=provenance.notes)
    log.info("published %s: test AUC %.3f, accuracy %.3f", version, report["auc"], report["accuracy"])
    log.info("test metrics: %s", json.dumps(metrics["test"]))
    return card, outcome
