"""A model's reference statistics (``reference.npz`` beside it in the registry), written when it is published
and read by the drift monitor: embeddings and readable statistics of a sample of its training images, and the
calibrated scores of its validation split (what prediction drift compares live scores with)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from xraylab.monitor.image_stats import READABLE_STATS
from xraylab.registry import RegistryLike, as_registry

__all__ = ["REFERENCE_FILE", "Reference", "NoReferenceError", "reference_arrays", "encode_reference",
           "load_reference"]

REFERENCE_FILE = "reference.npz"


class NoReferenceError(LookupError):
    """The model has no usable reference statistics, so its drift cannot be measured."""


@dataclass(frozen=True)
class Reference:
    embeddings: np.ndarray
    readable: np.ndarray | None  # None for models published before readable statistics were kept
    scores: np.ndarray  # validation scores (training-sample scores for older models)

    @property
    def stat_names(self) -> tuple[str, ...]:
        return READABLE_STATS if self.readable is not None else ()


def reference_arrays(*, embeddings: np.ndarray, readable: np.ndarray, train_scores: np.ndarray,
                     val_scores: np.ndarray, intensity: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of ``reference.npz``, under the names ``load_reference`` reads."""
    return {"embeddings": embeddings.astype(np.float32), "readable": readable.astype(np.float64),
            "readable_columns": np.array(READABLE_STATS), "scores": train_scores.astype(np.float32),
            "val_scores": val_scores.astype(np.float32), "intensity": intensity.astype(np.float32),
            "intensity_columns": np.array(["mean", "std", "p05", "p50", "p95"])}


def encode_reference(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_reference(registry: RegistryLike, version: str) -> Reference:
    path = as_registry(registry).local_dir(version) / REFERENCE_FILE
    if not path.exists():
        raise NoReferenceError(f"model {version} has no {REFERENCE_FILE}: it was published without reference "
                               "statistics (train it with `xraylab train run`, or bootstrap a new one)")
    with np.load(path, allow_pickle=False) as data:
        if "embeddings" not in data or len(data["embeddings"]) < 2:
            raise NoReferenceError(f"{path} holds no reference embeddings")
        readable = data.get("readable")
        if readable is not None and tuple(data["readable_columns"]) != READABLE_STATS:
            readable = None  # written under other statistics: not comparable
        scores = data.get("val_scores", data["scores"])
        return Reference(np.asarray(data["embeddings"], np.float32), readable, np.asarray(scores, np.float64))
