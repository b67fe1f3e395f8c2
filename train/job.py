"""A training job from start to published model: Ray Train, evaluation on the test split, publishing."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xraylab.bands import Bands
from xraylab.calibration import fit_platt
from xraylab.imaging import PreprocessSpec
from xraylab.registry import ModelCard, RegistryLike

from .dataset import load_images, original_sizes, scan_layout
from .distributed import TrainConfig, TrainOutcome, run_training
from .evaluate import evaluate_arrays, predict_scores, publish_trained, reference_statistics

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
                      promote: bool = False, trained_on: str = "synthetic") -> tuple[ModelCard, TrainOutcome]:
    outcome = run_training(cfg)
    model = load_best_model(outcome)
    spec = PreprocessSpec.from_dict(cfg.preprocess)
    index = scan_layout(cfg.data)
    x_val, y_val, _ = load_images(index.files["val"], spec)
    calibration = fit_platt(predict_scores(model, x_val), y_val)  # bands need calibrated scores
    x_test, y_test, skipped_test = load_images(index.files["test"], spec)
    x_train, _, skipped_train = load_images(index.files["train"][:512], spec)
    sizes = original_sizes([path for path, _ in index.files["train"][:512] if path not in set(skipped_train)])
    version = version or f"{cfg.arch}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
    with tempfile.TemporaryDirectory() as tmp:
        eval_dir = Path(tmp)
        report = evaluate_arrays(model, x_test, y_test, eval_dir, bands=bands, title=f"{version} (test split)",
                                 calibration=calibration)
        metrics = {
            "test": {k: report[k] for k in ("n", "accuracy", "auc", "sensitivity", "specificity", "precision",
                                            "f1", "mcc", "confusion_matrix")},
            "calibration_ece": report["calibration"]["ece"], "platt": calibration,
            "best_epoch": outcome.best_epoch, "best_val_auc": outcome.best_val_auc,
            "epochs_run": len(outcome.history), "resumed_from_epoch": outcome.resumed_from_epoch,
            "train_seconds": round(outcome.seconds, 1), "train_images_per_second": outcome.images_per_second,
            "workers": cfg.workers, "gpus_per_worker": cfg.gpus_per_worker, "counts": outcome.counts,
            "skipped_test_images": len(skipped_test),
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("storage_path", "progress_dir")},
            "history": outcome.history,
        }
        card = publish_trained(model, registry=registry, version=version, arch=cfg.arch, spec=spec, bands=bands,
                               metrics=metrics, fingerprint=outcome.data_fingerprint,
                               reference=reference_statistics(model, x_train, val_images=x_val, sizes=sizes,
                                                               calibration=calibration),
                               eval_dir=eval_dir, trained_on=trained_on, promote_it=promote,
                               calibration=calibration)
    log.info("published %s: test AUC %.3f, accuracy %.3f", version, report["auc"], report["accuracy"])
    log.info("test metrics: %s", json.dumps(metrics["test"]))
    return card, outcome
