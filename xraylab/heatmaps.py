"""Grad-CAM maps of scored studies, computed once per (study, model version) and cached in the ``heatmaps`` table,
so that the review app, its replicas and the deliverer (``delivery/``: the picture stored back into the PACS)
share each map; the last two models loaded stay in memory."""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from xraylab.db.review import cached_heatmap, store_heatmap
from xraylab.db.session import Database
from xraylab.imaging import ImageLimits, open_picture
from xraylab.registry import RegistryLike

__all__ = ["HeatmapCache", "OVERLAY_MAX_SIDE", "overlay_base", "overlay_png"]

log = logging.getLogger("xraylab.heatmaps")
OVERLAY_MAX_SIDE = 2048  # a map's detail is the model's input size: a 3,000-pixel film need not be blended whole


class HeatmapCache:
    def __init__(self, db: Database, registry: RegistryLike, limits: ImageLimits | None = None) -> None:
        self.db = db
        self.registry = registry
        self.limits = limits
        self._models: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, version: str) -> tuple[Any, Any]:
        """The model and its card (``xraylab.registry.load_model``)."""
        from xraylab.registry import load_model

        with self._lock:
            if version not in self._models:
                self._models[version] = load_model(self.registry, version)
                while len(self._models) > 2:
                    self._models.popitem(last=False)
            self._models.move_to_end(version)
            return self._models[version]

    def heat(self, study_id: int, version: str, original: bytes, *, study_uid: str = "") -> np.ndarray:
        """The study's map (2-D, in [0, 1]) under the model ``version``, from the cache or computed from the
        study's stored bytes ``original`` through that model's own preprocessing."""
        from xraylab.gradcam import explain, heat_from_png, heat_to_png

        with self.db.session() as session:
            cached = cached_heatmap(session, study_id, version)
        if cached is not None:
            return heat_from_png(cached)
        model, card = self.model(version)
        with self._lock:  # one Grad-CAM at a time per process: it is CPU-bound and the model is shared
            heat = explain(model, card, original, self.limits)
        with self.db.session() as session:
            store_heatmap(session, study_id, version, heat_to_png(heat))
        log.info("study %s: Grad-CAM map computed under model %s", study_uid or study_id, version)
        return heat


def overlay_base(original: bytes, limits: ImageLimits | None = None) -> Any:
    """The study's picture to lay a map over (Pillow), at most ``OVERLAY_MAX_SIDE`` pixels a side: a JPEG decodes
    at a reduced size; a picture (DICOM too) with more pixels than ``limits`` allow is refused
    (``InvalidImageError``) before any map is computed for it."""
    return open_picture(original, OVERLAY_MAX_SIDE, limits)


def overlay_png(picture: Any, heat: np.ndarray) -> bytes:
    """The map over ``picture`` (``overlay_base``), as a PNG."""
    from xraylab.gradcam import overlay

    out = io.BytesIO()
    overlay(picture, heat).save(out, "PNG", optimize=False, compress_level=3)
    return out.getvalue()
