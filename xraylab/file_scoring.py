"""Scoring image files (JPEG, PNG, DICOM) directly (``xraylab predict``): the registry's model, through exactly
the chain serving applies (``inference_transforms`` with the serving limits, the card's calibration and bands),
one result per file in the order given. A file that cannot be scored is a refusal with its reason, never an
exception."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xraylab.bands import Bands
from xraylab.calibration import apply_platt
from xraylab.dicom import refuse_misnamed
from xraylab.errors import RejectReason
from xraylab.imaging import ImageLimits, InvalidImageError, inference_transforms
from xraylab.registry import RegistryLike, as_registry

__all__ = ["score_files"]

BATCH = 32


def score_files(registry: RegistryLike, paths: Iterable[Path], *, version: str = "", limits: ImageLimits | None = None,
                max_bytes: int = 32 * 1024 * 1024) -> Iterator[dict[str, Any]]:
    """``{"file", "score", "band", "model_version"}`` per scored file, ``{"file", "error", "reason"}`` per
    refused one (unreadable, too large, not an image, not a radiograph, a DICOM object it cannot score)."""
    model, card = as_registry(registry).load_model(version)
    transform = inference_transforms(card.preprocess_spec(), limits)
    bands = Bands.from_card(card.bands)
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> Iterator[dict[str, Any]]:
        if not batch:
            return
        raw = np.asarray(model.predict_on_batch(np.stack([image for _, image in batch]))).reshape(-1)
        for (name, _), score in zip(batch, apply_platt(raw, card.calibration), strict=True):
            yield {"file": name, "score": round(float(score), 6), "band": bands.band(float(score)),
                   "model_version": card.version}
        batch.clear()

    for path in paths:
        name = str(path)
        try:
            if (size := path.stat().st_size) > max_bytes:
                raise InvalidImageError(f"{size} bytes > {max_bytes}", RejectReason.TOO_LARGE)
            data = path.read_bytes()
            refuse_misnamed(data, path.name, None)
            batch.append((name, transform(data)))
        except InvalidImageError as exc:
            yield from flush()  # the files before it first: results come in the order given
            yield {"file": name, "error": str(exc)[:300], "reason": str(exc.reason)}
            continue
        except OSError as exc:
            yield from flush()
            yield {"file": name, "error": exc.strerror or str(exc), "reason": "unreadable"}
            continue
        if len(batch) >= BATCH:
            yield from flush()
    yield from flush()
