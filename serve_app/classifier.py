"""Classifier: the TensorFlow CNN behind ``@serve.batch``. Takes model inputs decoded at the edge with the
served model's own preprocessing spec (``xraylab.model_input``; or encoded bytes, decoded here), and batches the
forward pass.

Unless pinned to a version, it follows the registry's promoted version: a watcher thread loads a
newly promoted model next to the serving one, warms it, then swaps it in with one assignment. A model is
loaded only once its files are checked against a trusted signature (``xraylab.registry.signing``): a replica
refuses to start on a version no trusted key signed, and a promotion to one is refused (``UntrustedModelError``,
logged) while the model before keeps serving.
Requests already preprocessed for the old model finish on it (``score_batch`` splits a batch by
model; an input decoded at the edge for the old model's chain is scored by it), so a promotion drops
no request, and each verdict names the version that scored it. Risk bands come from the card of the
model that scored (see ``xraylab.bands``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from ray import serve

from xraylab.bands import Bands
from xraylab.calibration import apply_platt
from xraylab.errors import RejectedInputError
from xraylab.imaging import Compose, ImageLimits, InvalidImageError, inference_transforms
from xraylab.messages import ModelInput, Verdict
from xraylab.model_input import SpecChangedError
from xraylab.registry import ModelCard, RegistryLike, UntrustedModelError, load_model, open_registry, promoted_version
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

    @cached_property
    def spec_key(self) -> str:
        return self.card.preprocess_spec().key()

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
    """``version`` loaded (``UntrustedModelError`` when no trusted key signed it: nothing of it is deserialised)
    and warmed."""
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
        self.previous: ActiveModel | None = None  # the model before the last swap, for inputs prepared for it
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
                    loaded = load_active(self.registry, wanted, self.limits)
                    self.previous, self.active = self.active, loaded
                    log.info("now serving model %s", wanted)
            except UntrustedModelError as exc:  # unsigned, an unknown key or changed files: never served
                failed = (wanted, time.monotonic() + 300)  # tried again in 5 min (the trusted keys may change)
                log.error("refusing promoted model %s, still serving %s: %s", wanted, self.active.card.version, exc)
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

    def _model_for(self, image: ModelInput) -> ActiveModel:
        """The served model whose chain prepared ``image``: the current one, or the one before it while a swap
        is in progress; ``SpecChangedError`` when neither (the sender prepares it again)."""
        for active in (self.active, self.previous):
            if active is not None and active.spec_key == image.spec:
                return active
        raise SpecChangedError(self.active.card.preprocess_spec().to_dict())

    async def classify(self, data: bytes | ModelInput) -> Verdict:
        """An image -> a verdict. ``data`` is a ``ModelInput`` decoded at the edge (what the pipeline and the HTTP
        routes send), or encoded JPEG/PNG/DICOM bytes decoded here (a caller with small images and no decoder of
        its own). Bytes that are no image, too many pixels or no radiograph raise ``RejectedInputError`` with
        that reason."""
        t0 = time.perf_counter()
        if isinstance(data, ModelInput):
            active, image = self._model_for(data), data.pixels
        else:
            active = self.active
            try:
                image = await asyncio.to_thread(active.transform, data)
            except InvalidImageError as exc:
                raise RejectedInputError(exc.reason, str(exc)) from exc
        score, used = await self.predict_batch((image, active))
        return Verdict(score=score, band=used.bands.band(score), model_version=used.card.version,
                       synthetic_model=used.card.synthetic, infer_ms=(time.perf_counter() - t0) * 1000,
                       notice=used.card.notice)

    async def classify_many(self, images: list[bytes | ModelInput]) -> list[Verdict | RejectedInputError]:
        """Many images in one call (the pipeline step's batch): scored through the same batch queue as single
        requests; bad images come back as their ``RejectedInputError``. Inputs prepared for a chain no served
        model has raise ``SpecChangedError`` for the whole call."""
        for data in images:
            if isinstance(data, ModelInput):
                self._model_for(data)
        return list(await asyncio.gather(*(self._classify_or_reject(data) for data in images)))

    async def _classify_or_reject(self, data: bytes | ModelInput) -> Verdict | RejectedInputError:
        try:
            return await self.classify(data)
        except RejectedInputError as exc:
            return exc

    def preprocess_spec(self) -> dict[str, Any]:
        """The chain of the model this replica serves (``PreprocessSpec`` as a dict): what to decode with."""
        return self.active.card.preprocess_spec().to_dict()

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
