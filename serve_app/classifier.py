"""Classifier: the TensorFlow CNN behind ``@serve.batch``. Takes encoded bytes (small over the
object store), decodes with the model's own preprocessing spec, and batches the forward pass.

Unless pinned to a version, it follows the registry's promoted version: a watcher thread loads a
newly promoted model next to the serving one, warms it, then swaps it in with one assignment.
Requests already preprocessed for the old model finish on it (``score_batch`` splits a batch by
model), so a promotion drops no request, and each verdict names the version that scored it. Risk
bands come from the card of the model that scored (see ``xraylab.bands``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from ray import serve

from xraylab.bands import Bands
from xraylab.calibration import apply_platt
from xraylab.errors import RejectedInputError
from xraylab.imaging import Compose, ImageLimits, InvalidImageError, inference_transforms
from xraylab.messages import Verdict
from xraylab.registry import ModelCard, RegistryLike, load_model, open_registry, promoted_version
from xraylab.settings import get_settings

__all__ = ["Classifier", "ClassifierConfig", "ActiveModel", "score_batch"]

log = logging.getLogger("xraylab.classifier")


class ClassifierConfig(BaseModel):
    """The Classifier's ``user_config``, the one definition of these settings: ``AppArgs.classifier``
    sets them at deploy time and a Serve config can change them on a running app (``reconfigure``)."""

    max_batch_size: int = Field(32, ge=1, description="most images in one forward pass")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="how long a batch waits to fill up")
    model_poll_s: float = Field(5.0, gt=0, description="how often the classifier checks for a promoted model")


DEFAULT_CONFIG = ClassifierConfig()


@dataclass(frozen=True)
class ActiveModel:
    model: Any
    card: ModelCard
    transform: Compose
    bands: Bands
    pad_to_buckets: bool = False  # see forward()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Raw model outputs, one per image. Under Keras' JAX backend, where XLA compiles once per input
        shape, a batch is padded to the next power of two: a replica compiles a handful of shapes (warmed
        at load) instead of one per batch size that ``@serve.batch`` happens to form."""
        n = len(batch)
        if self.pad_to_buckets and n & (n - 1):
            padded = np.zeros((1 << n.bit_length(), *batch.shape[1:]), batch.dtype)
            padded[:n] = batch
            batch = padded
        return np.asarray(self.model.predict_on_batch(batch)).reshape(-1)[:n]


WARM_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def load_active(registry: RegistryLike, version: str, limits: ImageLimits | None = None) -> ActiveModel:
    import keras

    model, card = load_model(registry, version)
    spec = card.preprocess_spec()
    active = ActiveModel(model, card, inference_transforms(spec, limits), Bands.from_card(card.bands),
                         pad_to_buckets=keras.backend.backend() == "jax")
    for size in WARM_BUCKETS if active.pad_to_buckets else (1,):  # trace/compile before serving
        active.forward(np.zeros((size, spec.height, spec.width, 1), np.float32))
    return active


def score_batch(images: list[np.ndarray], models: list[ActiveModel]) -> list[float]:
    """Calibrated scores for a batch whose images may belong to different models (a hot swap in
    progress): one forward pass per model over its own images, results in input order."""
    scores = [0.0] * len(images)
    groups: dict[int, list[int]] = {}
    for i, active in enumerate(models):
        groups.setdefault(id(active), []).append(i)
    for indices in groups.values():
        active = models[indices[0]]
        raw = active.forward(np.stack([images[i] for i in indices]))
        for i, score in zip(indices, apply_platt(raw, active.card.calibration), strict=True):
            scores[i] = float(score)
    return scores


# max_queued_requests: past 128 requests waiting, a caller gets BackPressureError at once; without a
# bound, callers' queues grow until every request waits a minute (measured: 512 concurrent handle calls).
@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128, max_queued_requests=128,
                  user_config=DEFAULT_CONFIG.model_dump())
class Classifier:
    def __init__(self, model_version: str = "") -> None:
        settings = get_settings()
        self.registry = open_registry(settings)
        self.limits = settings.image_limits()
        self.active = load_active(self.registry, model_version, self.limits)
        self.poll_s = DEFAULT_CONFIG.model_poll_s
        self.counts = {"batches": 0, "images": 0}  # forward passes and images through them (batch_stats)
        self._stop = threading.Event()
        if not model_version:
            threading.Thread(target=self._follow_promotions, name="model-watcher", daemon=True).start()
        log.info("classifier serving model %s (%s)", self.active.card.version, self.active.card.architecture)

    def reconfigure(self, config: dict[str, Any]) -> None:
        cfg = ClassifierConfig.model_validate(config)
        self.predict_batch.set_max_batch_size(cfg.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.poll_s = cfg.model_poll_s

    def _follow_promotions(self) -> None:
        failed: tuple[str, float] = ("", 0.0)  # a promoted version that would not load, and when to try it again
        while not self._stop.wait(self.poll_s):
            wanted = ""
            try:
                wanted = promoted_version(self.registry) or ""
                if wanted and wanted != self.active.card.version and (wanted != failed[0]
                                                                      or time.monotonic() >= failed[1]):
                    log.info("promoted model %s found; loading", wanted)
                    self.active = load_active(self.registry, wanted, self.limits)
                    log.info("now serving model %s", wanted)
            except Exception as exc:  # keep serving the current model; a broken version is tried every 5 min
                failed = (wanted, time.monotonic() + 300)
                log.error("could not switch model: %s: %s", type(exc).__name__, exc)

    @serve.batch(max_batch_size=DEFAULT_CONFIG.max_batch_size,
                 batch_wait_timeout_s=DEFAULT_CONFIG.batch_wait_timeout_s)
    async def predict_batch(self, items: list[tuple[np.ndarray, ActiveModel]]) -> list[tuple[float, ActiveModel]]:
        images, models = [image for image, _ in items], [active for _, active in items]
        self.counts["batches"] += 1
        self.counts["images"] += len(items)
        scores = await asyncio.to_thread(score_batch, images, models)
        return list(zip(scores, models, strict=True))

    async def classify(self, data: bytes) -> Verdict:
        """Encoded JPEG/PNG bytes -> a verdict; bytes that are no image, too many pixels or no radiograph
        raise ``RejectedInputError`` with that reason."""
        t0 = time.perf_counter()
        active = self.active
        try:
            image = await asyncio.to_thread(active.transform, data)
        except InvalidImageError as exc:
            raise RejectedInputError(exc.reason, str(exc)) from exc
        score, used = await self.predict_batch((image, active))
        return Verdict(score=score, band=used.bands.band(score), model_version=used.card.version,
                       synthetic_model=used.card.synthetic, infer_ms=(time.perf_counter() - t0) * 1000,
                       notice=used.card.notice)

    async def classify_many(self, images: list[bytes]) -> list[Verdict | RejectedInputError]:
        """Many images in one call (the pipeline step's batch): decoded concurrently, scored through the
        same batch queue as single requests; bad images come back as their ``RejectedInputError``."""
        return list(await asyncio.gather(*(self._classify_or_reject(data) for data in images)))

    async def _classify_or_reject(self, data: bytes) -> Verdict | RejectedInputError:
        try:
            return await self.classify(data)
        except RejectedInputError as exc:
            return exc

    def batch_stats(self) -> dict[str, int]:
        """Batches formed by ``@serve.batch`` and images in them, since start (mean batch = images / batches)."""
        return dict(self.counts)

    def model_card(self) -> dict[str, Any]:
        return self.active.card.to_dict()

    def serving(self) -> dict[str, str]:
        """Which model this replica serves, and where it runs (its Ray node): what an operator checks after
        a promotion on a cluster."""
        import ray

        return {"model_version": self.active.card.version, "node_id": ray.get_runtime_context().get_node_id(),
                "replica": serve.get_replica_context().replica_id.unique_id}

    def __del__(self) -> None:
        self._stop.set()
