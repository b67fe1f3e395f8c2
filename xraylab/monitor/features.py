"""What the drift monitor measures on an image, one definition for training's reference and for live
traffic: the model's own embedding (its penultimate layer) and the readable statistics
(``image_stats.READABLE_STATS``), both on the pixels of the shared preprocessing chain
(``xraylab.imaging.inference_transforms``) that serving scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xraylab.batches import predict_in_batches
from xraylab.imaging import ImageLimits, InvalidImageError, PreprocessSpec, inference_transforms, picture_size
from xraylab.monitor.image_stats import readable_statistics_batch

__all__ = ["embedding_layer_name", "make_embedder", "ImageFeatures", "image_features", "features_of_arrays"]


def embedding_layer_name(model: Any) -> str:
    """The penultimate layer whose output serves as the image embedding (dropout skipped)."""
    return model.layers[-2].name if model.layers[-2].__class__.__name__ != "Dropout" else model.layers[-3].name


def make_embedder(model: Any) -> Any:
    """A Keras model from the classifier's input to its embedding layer (shares the weights)."""
    import keras

    return keras.Model(model.inputs, model.get_layer(embedding_layer_name(model)).output)


@dataclass
class ImageFeatures:
    embeddings: np.ndarray  # (N, d)
    readable: np.ndarray  # (N, len(READABLE_STATS))
    kept: list[int] = field(default_factory=list)  # which inputs these rows are
    errors: dict[int, str] = field(default_factory=dict)  # inputs that could not be read, with why


def features_of_arrays(embedder: Any, pixels: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, readable statistics) of preprocessed images ``(N, H, W, 1)`` with their original
    ``(width, height)``."""
    embeddings = predict_in_batches(embedder.predict_on_batch, pixels).astype(np.float32)
    return embeddings, readable_statistics_batch(pixels, sizes)


def image_features(embedder: Any, spec: PreprocessSpec, images: Sequence[bytes],
                   limits: ImageLimits | None = None) -> ImageFeatures:
    """Features of encoded images (JPEG, PNG or DICOM bytes); unreadable ones are listed in ``errors``, not raised."""
    transform = inference_transforms(spec, limits)
    pixels, sizes, kept, errors = [], [], [], {}
    for index, data in enumerate(images):
        try:
            size = picture_size(data)
            pixels.append(transform(data))
        except (InvalidImageError, OSError, ValueError) as exc:
            errors[index] = str(exc)[:200]
            continue
        sizes.append(size)
        kept.append(index)
    if not pixels:
        return ImageFeatures(np.zeros((0, 0), np.float32), np.zeros((0, 0)), kept, errors)
    embeddings, readable = features_of_arrays(embedder, np.stack(pixels), np.asarray(sizes, np.float64))
    return ImageFeatures(embeddings, readable, kept, errors)
