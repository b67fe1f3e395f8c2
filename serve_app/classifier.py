"""Classifier: the TensorFlow CNN behind ``@serve.batch``. Takes encoded bytes (small over the
object store), decodes with the model's own preprocessing spec, and batches the forward pass."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from ray import serve

from xraylab.bands import Bands
from xraylab.errors import RejectedInputError
from xraylab.imaging import InvalidImageError, inference_transforms
from xraylab.registry import load_model
from xraylab.settings import get_settings

log = logging.getLogger("xraylab.classifier")


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=128,
    user_config={"max_batch_size": 32, "batch_wait_timeout_s": 0.01},
)
class Classifier:
    def __init__(self, model_version: str = "") -> None:
        settings = get_settings()
        self.model, self.card = load_model(settings.model_dir, model_version)
        self.transform = inference_transforms(self.card.preprocess_spec())
        self.bands = Bands(pneumonia=settings.BAND_PNEUMONIA, unsure=settings.BAND_UNSURE)
        # Warm the graph so the first request does not pay for tracing.
        spec = self.card.preprocess_spec()
        self.model.predict_on_batch(np.zeros((1, spec.height, spec.width, 1), np.float32))
        log.info("classifier loaded model %s (%s)", self.card.version, self.card.architecture)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.predict_batch.set_max_batch_size(int(config.get("max_batch_size", 32)))
        self.predict_batch.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict_batch(self, images: list[np.ndarray]) -> list[float]:
        batch = np.stack(images)
        scores = await asyncio.to_thread(self.model.predict_on_batch, batch)
        return [float(s) for s in np.asarray(scores).reshape(-1)]

    async def classify(self, data: bytes) -> dict[str, Any]:
        """Encoded JPEG/PNG bytes -> score, band, model version; bad bytes raise ``RejectedInputError``."""
        t0 = time.perf_counter()
        try:
            image = await asyncio.to_thread(self.transform, data)
        except InvalidImageError as exc:
            raise RejectedInputError("not_image", str(exc)) from exc
        score = await self.predict_batch(image)
        return {
            "score": score,
            "band": self.bands.band(score),
            "model_version": self.card.version,
            "synthetic_model": self.card.synthetic,
            "infer_ms": (time.perf_counter() - t0) * 1000,
        }

    def model_card(self) -> dict[str, Any]:
        return self.card.to_dict()
