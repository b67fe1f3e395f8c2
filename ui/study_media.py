"""A study's pictures for the review app, behind login (``ui/access.py``): the X-ray at full resolution as
stored, and the same picture with the Grad-CAM map of the model that scored it laid over it.

Routes: ``GET /review/studies/{id}/image`` and ``GET /review/studies/{id}/heatmap``. A map is computed on
first request (``xraylab.gradcam``, through the model's own preprocessing) and cached in the ``heatmaps``
table at the model's input size, so every replica and node shares it.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ui.access import principal_of
from xraylab.db.crud import get_study
from xraylab.db.review import StudyNotFoundError, cached_heatmap, record_audit, store_heatmap
from xraylab.db.session import Database
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.imaging import open_picture
from xraylab.registry import RegistryLike
from xraylab.settings import Settings
from xraylab.sources import Sources

__all__ = ["StudyImages", "HeatmapMaker", "media_router", "ImageGoneError", "image_url", "heatmap_url"]

log = logging.getLogger("xraylab.ui.media")
MEDIA_PREFIX = "/review/studies"
SERVED_AS_IS = {"JPEG": "image/jpeg", "PNG": "image/png"}
OVERLAY_MAX_SIDE = 2048


def image_url(study_id: int) -> str:
    return f"{MEDIA_PREFIX}/{study_id}/image"


def heatmap_url(study_id: int) -> str:
    return f"{MEDIA_PREFIX}/{study_id}/heatmap"


class ImageGoneError(LookupError):
    """The study's object is no longer in its store (deleted, or the store forgot it)."""


class StudyImages:
    """Reads a study's object from where it came from: its S3 endpoint or the PACS (``xraylab.sources``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sources = Sources(settings)

    def original(self, study: dict[str, Any]) -> bytes:
        try:
            return self.sources.fetch(study["endpoint_id"], study["bucket"], study["object_key"]).data
        except RejectedInputError as exc:
            if exc.reason is RejectReason.MISSING_OBJECT:
                raise ImageGoneError(f"study {study['id']}: the image is no longer in its store") from exc
            raise

    def exists(self, study: dict[str, Any]) -> bool:
        return self.sources.exists(study["endpoint_id"], study["bucket"], study["object_key"])


class HeatmapMaker:
    """Grad-CAM maps from the model that scored a study, computed once per (study, model) and cached in the
    database; the last two models loaded stay in memory."""

    def __init__(self, db: Database, registry: RegistryLike, images: StudyImages, limits: Any = None) -> None:
        self.db = db
        self.registry = registry
        self.images = images
        self.limits = limits
        self._models: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def _model(self, version: str) -> tuple[Any, Any]:
        from xraylab.registry import load_model

        with self._lock:
            if version not in self._models:
                self._models[version] = load_model(self.registry, version)
                while len(self._models) > 2:
                    self._models.popitem(last=False)
            self._models.move_to_end(version)
            return self._models[version]

    def heat(self, study: dict[str, Any], original: bytes) -> Any:
        """The study's map (2-D, in [0, 1]) under the model of its latest prediction."""
        from xraylab.gradcam import explain, heat_from_png, heat_to_png

        version = study["model_version"]
        with self.db.session() as session:
            cached = cached_heatmap(session, study["id"], version)
        if cached is not None:
            return heat_from_png(cached)
        model, card = self._model(version)
        with self._lock:  # one Grad-CAM at a time per process: it is CPU-bound and the model is shared
            heat = explain(model, card, original, self.limits)
        with self.db.session() as session:
            store_heatmap(session, study["id"], version, heat_to_png(heat))
        log.info("study %s: Grad-CAM map computed under model %s", study["study_uid"], version)
        return heat

    def overlay_png(self, study: dict[str, Any]) -> bytes:
        """The map over the picture, at most ``OVERLAY_MAX_SIDE`` pixels a side (a heatmap's detail is the model's
        input size; a 3,000-pixel film need not be blended at full size)."""
        from xraylab.gradcam import overlay

        original = self.images.original(study)
        picture = open_picture(original, OVERLAY_MAX_SIDE)  # a JPEG decodes at a reduced size
        out = io.BytesIO()
        overlay(picture, self.heat(study, original)).save(out, "PNG", optimize=False, compress_level=3)
        return out.getvalue()


def _as_served(data: bytes) -> tuple[bytes, str]:
    """The stored bytes when the browser shows them as they are (JPEG, PNG), else a PNG of the picture (a DICOM
    file as the classifier sees it: windowed, MONOCHROME1 inverted)."""
    picture = open_picture(data)
    if picture.format in SERVED_AS_IS:
        return data, SERVED_AS_IS[picture.format]
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue(), "image/png"


def _problem(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status)


def media_router(db: Database, images: StudyImages, heatmaps: HeatmapMaker) -> APIRouter:
    router = APIRouter(prefix=MEDIA_PREFIX, include_in_schema=False)

    def study(study_id: int, request: Request, action: str) -> dict[str, Any]:
        """The study with its latest prediction, and a line of the audit trail: who looked at its picture
        (every view, not only openings)."""
        principal = principal_of(request)
        with db.session() as session:
            row = get_study(session, study_id)
            if row is None:
                raise StudyNotFoundError(study_id)
            record_audit(session, principal.name if principal else None, action, study_id)
        return row

    def guarded(study_id: int, request: Request, action: str, render: Any) -> Response:
        try:
            return render(study(study_id, request, action))
        except StudyNotFoundError as exc:
            return _problem(404, "no_such_study", str(exc))
        except ImageGoneError as exc:
            return _problem(410, "image_gone", str(exc))
        except Exception as exc:  # the store or the model: say so, keep the patient's data out of the log
            log.warning("study %s: picture not served: %s", study_id, type(exc).__name__)
            return _problem(503, "unavailable", f"the picture cannot be made now ({type(exc).__name__})")

    @router.get("/{study_id}/image")
    def image(study_id: int, request: Request) -> Response:
        def render(row: dict[str, Any]) -> Response:
            data, media_type = _as_served(images.original(row))
            return Response(data, media_type=media_type)

        return guarded(study_id, request, "view_image", render)

    @router.get("/{study_id}/heatmap")
    def heatmap(study_id: int, request: Request) -> Response:
        def render(row: dict[str, Any]) -> Response:
            if not row.get("model_version"):
                return _problem(404, "no_prediction", f"study {study_id} has no prediction to explain")
            return Response(heatmaps.overlay_png(row), media_type="image/png")

        return guarded(study_id, request, "view_heatmap", render)

    return router
