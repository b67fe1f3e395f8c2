"""Classifier: the TensorFlow CNN behind ``@serve.batch``. Takes encoded bytes (small over the
object store), decodes with the model's own preprocessing spec, and batches the forward pass.

Unless pinned to a version, it follows the registry's promoted version: a watcher thread loads a
newly promoted model next to the serving one, warms it, then swaps it in with one assignment.
Requests already preprocessed for the old model finish on it (a batch is split by model), so a
promotion drops no request, and each result names the version that scored it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from xraylab.bands import Bands
from xraylab.calibration import apply_platt
from xraylab.errors import RejectedInputError
from xraylab.imaging import Compose, InvalidImageError, inference_transforms
from xraylab.registry import ModelCard, load_model, promoted_version
from xraylab.settings import get_settings

log = logging.getLogger("xraylab.classifier")


@dataclass(frozen=True)
class ActiveModel:
    model: Any
    card: ModelCard
    transform: Compose


def _load(model_dir: Any, version: str) -> ActiveModel:
    model, card = load_model(model_dir, version)
    spec = card.preprocess_spec()
    model.predict_on_batch(np.zeros((1, spec.height, spec.width, 1), np.float32))  # trace before serving
    return ActiveModel(model, card, inference_transforms(spec))


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=128,
    user_config={"max_batch_size": 32, "batch_wait_timeout_s": 0.01, "model_poll_s": 5.0},
)
class Classifier:
    def __init__(self, model_version: str = "") -> None:
        settings = get_settings()
        self.model_dir = settings.model_dir
        self.active = _load(self.model_dir, model_version)
        self.bands = Bands(pneumonia=settings.BAND_PNEUMONIA, unsure=settings.BAND_UNSURE)
        self.poll_s = 5.0
        self._stop = threading.Event()
        if not model_version:
            threading.Thread(target=self._follow_promotions, name="model-watcher", daemon=True).start()
        log.info("classifier serving model %s (%s)", self.active.card.version, self.active.card.architecture)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.predict_batch.set_max_batch_size(int(config.get("max_batch_size", 32)))
        self.predict_batch.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))
        self.poll_s = float(config.get("model_poll_s", 5.0))

    def _follow_promotions(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                wanted = promoted_version(self.model_dir)
                if wanted and wanted != self.active.card.version:
                    log.info("promoted model %s found; loading", wanted)
                    self.active = _load(self.model_dir, wanted)
                    log.info("now serving model %s", wanted)
            except Exception as exc:  # keep serving the current model
                log.error("could not switch model: %s: %s", type(exc).__name__, exc)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict_batch(self, items: list[tuple[np.ndarray, ActiveModel]]) -> list[tuple[float, ActiveModel]]:
        scores: list[float] = [0.0] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (_, active) in enumerate(items):
            groups.setdefault(id(active), []).append(i)
        for indices in groups.values():
            active = items[indices[0]][1]
            batch = np.stack([items[i][0] for i in indices])
            raw = np.asarray(await asyncio.to_thread(active.model.predict_on_batch, batch)).reshape(-1)
            out = apply_platt(raw, active.card.calibration)
            for i, score in zip(indices, out, strict=True):
                scores[i] = float(score)
        return [(scores[i], items[i][1]) for i in range(len(items))]

    async def classify(self, data: bytes) -> dict[str, Any]:
        """Encoded JPEG/PNG bytes -> score, band, model version; bad bytes raise ``RejectedInputError``."""
        t0 = time.perf_counter()
        active = self.active
        try:
            image = await asyncio.to_thread(active.transform, data)
        except InvalidImageError as exc:
            raise RejectedInputError("not_image", str(exc)) from exc
        score, used = await self.predict_batch((image, active))
        return {
            "score": score,
            "band": self.bands.band(score),
            "model_version": used.card.version,
            "synthetic_model": used.card.synthetic,
            "infer_ms": (time.perf_counter() - t0) * 1000,
        }

    def model_card(self) -> dict[str, Any]:
        return self.active.card.to_dict()

    def __del__(self) -> None:
        self._stop.set()
