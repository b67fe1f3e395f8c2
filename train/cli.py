"""Training commands: ``xraylab train bootstrap|run``, ``xraylab evaluate``, ``xraylab make-dataset``.
Ray and TensorFlow are imported inside the commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from xraylab.cli import fail, setup_logging
from xraylab.registry import Registry, open_registry
from xraylab.settings import load_settings

__all__ = ["register"]

train_app = typer.Typer(help="Training.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(train_app, name="train")
    root.command("evaluate")(evaluate)
    root.command("make-dataset")(make_dataset)


def _check_signing_key(registry: Registry) -> None:
    """Publishing signs with the training key (XRAYLAB_MODEL_SIGNING_KEY): without it, fail before training."""
    from xraylab.registry import SigningKeyError
    from xraylab.registry.signing import load_signing_key

    try:
        load_signing_key(registry.model_keys().signing_key)
    except SigningKeyError as exc:
        raise fail(str(exc)) from None


@train_app.command("bootstrap")
def train_bootstrap(force: Annotated[bool, typer.Option(help="train even if a model exists")] = False) -> None:
    """Train the small bootstrap CNN on generated images for a few seconds and publish it (promoted)."""
    setup_logging()
    from xraylab.registry import list_cards

    settings = load_settings()
    registry = open_registry(settings, publish=True)
    if list_cards(registry) and not force:
        print(f"a model already exists in {registry}; use --force to train another")
        return
    _check_signing_key(registry)
    from train.bootstrap import train_bootstrap_model

    card = train_bootstrap_model(registry, bands=settings.bands())
    print(json.dumps(card.to_dict(), indent=2))


@train_app.command("run")
def train_run(
    data: Annotated[Path, typer.Option(help="ROOT of {train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (no val/: carved "
                                            "from train)")],
    arch: Annotated[str, typer.Option(help="seed-cnn (baseline), xray-resnet, or xray-cnn (the promoted model's)")
                    ] = "seed-cnn",
    workers: int = 2, gpus_per_worker: float = 0.0, epochs: int = 10, batch_size: int = 32,
    learning_rate: float = 1e-4, patience: int = 3, seed: int = 0, version: str = "",
    lr_schedule: Annotated[str, typer.Option(help="constant, or cosine (decays to 0 over --epochs)")] = "constant",
    image_size: Annotated[int, typer.Option(help="the model's input side in pixels (square)")] = 150,
    val_fraction: Annotated[float, typer.Option(help="share of each class of train/ carved as the validation "
                                                     "split when the layout has no val/")] = 0.1,
    trained_on: Annotated[str, typer.Option(help="'synthetic', 'kermany' (the real set: its attribution and "
                                                 "limits go into the card) or a description of the data")
                          ] = "synthetic",
    bands_sensitivity: Annotated[float | None, typer.Option(
        help="choose the bands on the validation split: 'Pneumonia or Unsure' catches this share of pneumonia "
             "(default: XRAYLAB_BAND_* as they are)")] = None,
    promote: Annotated[bool, typer.Option(help="make it the served model")] = False,
) -> None:
    """Distributed training on Ray Train; evaluates on the test split and publishes a version."""
    setup_logging()
    from train.dataset import DatasetLayoutError, scan_layout
    from train.distributed import LR_SCHEDULES

    if bands_sensitivity is not None and not 0.5 <= bands_sensitivity < 1.0:
        raise fail(f"--bands-sensitivity must be in [0.5, 1), not {bands_sensitivity}")
    if lr_schedule not in LR_SCHEDULES:
        raise fail(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, not {lr_schedule!r}")
    if not 32 <= image_size <= 512:
        raise fail(f"--image-size must be between 32 and 512, not {image_size}")
    try:
        scan_layout(data, val_fraction=val_fraction, seed=seed)  # a bad folder fails here, before Ray and TF start
    except DatasetLayoutError as exc:
        raise fail(str(exc)) from None
    from train.distributed import TrainConfig
    from train.job import train_and_publish
    from xraylab.imaging import PreprocessSpec

    settings = load_settings()
    registry = open_registry(settings, publish=True)  # as training's S3 identity
    _check_signing_key(registry)  # the model is signed as it is published: no key, no training
    spec = PreprocessSpec(height=image_size, width=image_size)
    cfg = TrainConfig(data=str(data), arch=arch, workers=workers, gpus_per_worker=gpus_per_worker, epochs=epochs,
                      batch_size=batch_size, learning_rate=learning_rate, lr_schedule=lr_schedule,
                      patience=patience, seed=seed, val_fraction=val_fraction, preprocess=spec.to_dict(),
                      storage_path=str(settings.STATE_DIR / "train"))
    try:
        card, outcome = train_and_publish(cfg, registry=registry, version=version, promote=promote,
                                          bands=settings.bands(), trained_on=trained_on,
                                          bands_sensitivity=bands_sensitivity)
    except (DatasetLayoutError, ValueError) as exc:
        raise fail(str(exc)) from None
    print(json.dumps({"version": card.version, "test": card.metrics["test"], "bands": card.bands,
                      "train_images_per_second": outcome.images_per_second, "promoted": promote}, indent=2))


def evaluate(
    model: Annotated[str, typer.Option(help="model version ('' = the promoted one)")] = "",
    data: Annotated[Path, typer.Option(help="ROOT in the {split}/{NORMAL,PNEUMONIA} layout")] = Path("."),
    split: str = "test",
    out: Annotated[Path | None, typer.Option(
        help="where metrics.json, roc.png, confusion_matrix.png, reliability.png go")] = None,
) -> None:
    """Evaluate any model version on any labelled folder (accuracy, AUC, sensitivity, ... and plots)."""
    setup_logging()
    from train.dataset import DatasetLayoutError
    from train.evaluate import evaluate_model
    from xraylab.registry import ModelNotFoundError, UntrustedModelError

    settings = load_settings()
    out = out or settings.STATE_DIR / "evaluations" / f"{model or 'promoted'}-{int(time.time())}"
    try:
        report = evaluate_model(open_registry(settings), model, data, out, split=split)
    except (DatasetLayoutError, ModelNotFoundError, UntrustedModelError) as exc:
        raise fail(str(exc)) from None
    summary = {k: report[k] for k in ("model_version", "n", "accuracy", "auc", "sensitivity", "specificity",
                                      "precision", "f1", "mcc", "confusion_matrix", "bands", "band_thresholds",
                                      "skipped")}
    summary["calibration_ece"] = report["calibration"]["ece"]
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")


def make_dataset(root: Path, train: int = 400, val: int = 80, test: int = 120, seed: int = 0) -> None:
    """Write a synthetic chest-xray set in the Kaggle layout ROOT/{train,val,test}/{NORMAL,PNEUMONIA}."""
    from xraylab.synthetic import write_dataset

    counts = write_dataset(root, {"train": train, "val": val, "test": test}, seed=seed)
    print(json.dumps(counts))
