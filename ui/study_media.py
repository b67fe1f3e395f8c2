"""A study's pictures for the review app, behind login (``ui/access.py``): the X-ray at full resolution as
stored, its stored samples for the viewer, and the Grad-CAM map of the model that scored it, laid over the picture
or as a layer of its own.

Routes (``GET /review/studies/{id}/...``):

- ``image``: the picture as the browser shows it (a JPEG or PNG as stored, a DICOM file as a PNG of it).
- ``pixels``: the stored samples for the viewer's window/level (``xraylab.stored_pixels``): one grey frame,
  row-major, little-endian, ``uint8``, ``uint16`` or ``int16``, with its metadata in ``X-`` headers (``X-Rows``,
  ``X-Columns``, ``X-Bits-Allocated``, ``X-Bits-Stored``, ``X-Pixel-Representation``, ``X-Rescale-Slope``,
  ``X-Rescale-Intercept``, ``X-Window-Center``, ``X-Window-Width``, ``X-Photometric``, ``X-Min-Value``,
  ``X-Max-Value``, ``X-Source-Format``); gzipped (level 1) when the request accepts gzip. Audited as ``view_image``.
- ``heatmap``: the map blended over the picture (a PNG; ``xraylab.heatmaps.overlay_png``).
- ``heatmap-layer``: the map alone, an RGBA PNG at the map's own size (the model's input size), coloured by
  ``xraylab.heatmaps.HEAT_COLOURS`` with the heat as its alpha (``heat_layer_png``), for the viewer to stretch over
  the whole picture, edge to edge (the model saw the whole picture resized, no crop, no padding), at an opacity of
  its choosing. Audited as ``view_heatmap``, as ``heatmap`` is.

A map is computed on first request (``xraylab.gradcam``, through the model's own preprocessing), or ahead for
Pneumonia and Unsure studies (``ui.heatmap_precompute``), and cached in the ``heatmaps`` table at the model's
input size, so every replica and node shares it.

- The picture shown is the picture scored: an object replaced in its store after scoring (its eTag is not the
  row's) is refused, ``409 image_changed``, for the image and the heatmap alike.
- A picture is held to the pipeline's own limits (``XRAYLAB_MAX_IMAGE_BYTES`` as it is fetched, the pixel
  ceiling ``XRAYLAB_MAX_IMAGE_PIXELS`` from its header, before any pixel is decoded, JPEG, PNG and DICOM alike):
  ``422 too_large``.
- Pictures are prepared on threads of their own, a few at a time (``RenderGate``: ``HEATMAP_CONCURRENCY`` maps
  and ``IMAGE_CONCURRENCY`` images), never on the thread pool that login and every other route share; with too
  many already waiting, a request is answered at once, ``503 busy`` with ``Retry-After``.
"""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ui.access import principal_of
from xraylab.db.crud import get_study
from xraylab.db.review import StudyNotFoundError, record_audit, study_in_scope
from xraylab.db.scope import NO_PATIENTS
from xraylab.db.session import Database
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.heatmaps import HeatmapCache, heat_layer_png, overlay_base, overlay_png
from xraylab.imaging import ImageLimits, InvalidImageError, check_size, open_picture, picture_size
from xraylab.registry import RegistryLike
from xraylab.settings import Settings
from xraylab.sources import Sources
from xraylab.stored_pixels import stored_pixels

if TYPE_CHECKING:
    import numpy as np

__all__ = ["StudyImages", "HeatmapMaker", "media_router", "ImageGoneError", "ImageChangedError", "ImageState",
           "RenderGate", "BusyError", "image_url", "heatmap_url", "pixels_url", "heatmap_layer_url",
           "pixels_response", "accepts_gzip", "HEATMAP_CONCURRENCY", "HEATMAP_QUEUE", "IMAGE_CONCURRENCY",
           "IMAGE_QUEUE", "BUSY_RETRY_AFTER_S", "NO_STORE"]

log = logging.getLogger("xraylab.ui.media")
MEDIA_PREFIX = "/review/studies"
SERVED_AS_IS = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))  # signature, media type
# Per process (one router): Grad-CAM maps being made at once, and requests let wait for one beyond those. A map
# costs about a second of CPU at first sight (then it is cached) and Grad-CAM runs one at a time anyway
# (``HeatmapMaker``); more waiting than this and the doctor is better told to try again than kept waiting.
HEATMAP_CONCURRENCY = 2
HEATMAP_QUEUE = 8
# Images being fetched and prepared at once (a JPEG or PNG is passed on as stored; a DICOM file is decoded, up to
# a second for a large one), and requests let wait beyond those.
IMAGE_CONCURRENCY = 4
IMAGE_QUEUE = 32
BUSY_RETRY_AFTER_S = 2  # the Retry-After of a 503 busy
# A patient's picture is kept by no cache (ui/access.py's middleware says no-store for every such response too).
NO_STORE = {"Cache-Control": "private, no-store"}
PIXELS_GZIP_LEVEL = 1  # 15 MB of 16-bit samples: ~0.25 s at level 1, and most of what a higher level would save

T = TypeVar("T")
ImageState = Literal["ok", "gone", "changed"]


def image_url(study_id: int) -> str:
    return f"{MEDIA_PREFIX}/{study_id}/image"


def heatmap_url(study_id: int) -> str:
    return f"{MEDIA_PREFIX}/{study_id}/heatmap"


def pixels_url(study_id: int) -> str:
    return f"{MEDIA_PREFIX}/{study_id}/pixels"


def heatmap_layer_url(study_id: int) -> str:
    return f"{MEDIA_PREFIX}/{study_id}/heatmap-layer"


class ImageGoneError(LookupError):
    """The study's object is no longer in its store (deleted, or the store forgot it)."""


class ImageChangedError(LookupError):
    """The object now in the study's store is not the one that was scored (its eTag is not the row's): it was
    replaced after scoring, so the study's score, and a map of it, do not belong to it."""

    def __init__(self, study_id: int) -> None:
        super().__init__(f"the object in storage was replaced after study {study_id} was scored; "
                         "the score does not belong to it")
        self.study_id = study_id


def _replaced(study: dict[str, Any], etag: str | None) -> bool:
    """Whether ``etag`` (the object's now) is not the one the study's row stored when it was scored. A row with
    no eTag (older rows) cannot tell, and counts as the object scored."""
    scored = (study.get("etag") or "").strip('"')
    return bool(scored) and (etag or "").strip('"') != scored


class BusyError(RuntimeError):
    """Too many pictures are being prepared or waiting already: try again in a moment."""


class RenderGate:
    """Blocking work (fetching, decoding, Grad-CAM) run on threads of its own, ``concurrency`` calls at a time,
    with at most ``queue`` more calls waiting for a turn; a call beyond those raises ``BusyError`` at once.

    Its threads are counted by a ``CapacityLimiter`` of its own, not by anyio's default one (40 threads, shared
    by every sync route: login, the Gradio app's own routes), so pictures, however many are asked for, never
    hold up the rest of the app. Use it from one event loop (the app's)."""

    def __init__(self, concurrency: int, queue: int) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("a RenderGate needs concurrency >= 1 and queue >= 0")
        self.concurrency = concurrency
        self.queue = queue
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop, on first use
        self._admitted = 0  # calls running or waiting; changed only in the event loop, with no await between

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, work: Callable[[], T]) -> T:
        if self._admitted >= self.concurrency + self.queue:
            raise BusyError(f"{self.concurrency} pictures being prepared and {self.queue} waiting")
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        self._admitted += 1
        try:
            return await anyio.to_thread.run_sync(work, limiter=self._limiter)
        finally:
            self._admitted -= 1


class StudyImages:
    """Reads a study's object from where it came from: its S3 endpoint or the PACS (``xraylab.sources``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sources = Sources(settings)
        # What a picture must be to be shown: the pipeline's pixel ceiling (XRAYLAB_MAX_IMAGE_PIXELS). Not its
        # minimum side, which is about scoring: a study scored under a smaller minimum stays viewable.
        self.limits: ImageLimits = replace(settings.image_limits(), min_side=1)

    def original(self, study: dict[str, Any]) -> bytes:
        """The study's object, as it was scored. Raises ``ImageGoneError`` (no longer in its store),
        ``ImageChangedError`` (replaced since: its eTag is not the row's; a row with no eTag is not checked), and
        ``RejectedInputError`` ``too_large`` above ``XRAYLAB_MAX_IMAGE_BYTES`` (the fetch's own check, the
        pipeline's)."""
        try:
            fetched = self.sources.fetch(study["endpoint_id"], study["bucket"], study["object_key"])
        except RejectedInputError as exc:
            if exc.reason is RejectReason.MISSING_OBJECT:
                raise ImageGoneError(f"study {study['id']}: the image is no longer in its store") from exc
            raise
        if _replaced(study, fetched.etag):
            raise ImageChangedError(study["id"])
        return fetched.data

    def state(self, study: dict[str, Any]) -> ImageState:
        """What the study's object is now, without reading it (S3: a HEAD request; the PACS: the MD5 Orthanc
        recorded): ``ok`` (there, and the object scored, or a row with no eTag to tell), ``gone`` (no longer in
        its store) or ``changed`` (replaced after scoring: the routes refuse it, ``409 image_changed``). A store
        that cannot be reached raises."""
        etag = self.sources.etag(study["endpoint_id"], study["bucket"], study["object_key"])
        if etag is None:
            return "gone"
        return "changed" if _replaced(study, etag) else "ok"


class HeatmapMaker(HeatmapCache):
    """The review app's Grad-CAM maps (``xraylab.heatmaps.HeatmapCache``) over the study's picture."""

    def __init__(self, db: Database, registry: RegistryLike, images: StudyImages, limits: Any = None) -> None:
        super().__init__(db, registry, limits)
        self.images = images

    def overlay_png(self, study: dict[str, Any]) -> bytes:
        """The map of the study's latest prediction over its picture."""
        original = self.images.original(study)
        picture = overlay_base(original, self.images.limits)  # a picture beyond the limits is refused first
        return overlay_png(picture, self.heat(study["id"], study["model_version"], original,
                                              study_uid=study["study_uid"]))

    def map_of(self, study: dict[str, Any]) -> np.ndarray:
        """The map of the study's latest prediction (``heat``: from the cache, or computed and cached), from its
        object as it was scored, held to the limits from its header before any pixel is decoded."""
        original = self.images.original(study)
        check_size(picture_size(original), self.images.limits)
        return self.heat(study["id"], study["model_version"], original, study_uid=study["study_uid"])

    def layer_png(self, study: dict[str, Any]) -> bytes:
        """The map of the study's latest prediction as an RGBA layer (``xraylab.heatmaps.heat_layer_png``). A cached
        map is served after a look at the object (``state``: gone or replaced is refused, as ever) without fetching
        it; else the object is fetched, held to the limits from its header, and the map computed and cached."""
        heat = self.cached(study["id"], study["model_version"])
        if heat is None:
            heat = self.map_of(study)
        else:
            state = self.images.state(study)
            if state == "gone":
                raise ImageGoneError(f"study {study['id']}: the image is no longer in its store")
            if state == "changed":
                raise ImageChangedError(study["id"])
        return heat_layer_png(heat)


def _as_served(data: bytes, limits: ImageLimits) -> tuple[bytes, str]:
    """The stored bytes when the browser shows them as they are (JPEG, PNG), else a PNG of the picture (a DICOM
    file as the classifier sees it: windowed, MONOCHROME1 inverted). Either is refused from its header, before
    any pixel is decoded here or in the browser, when it has more pixels than ``limits`` allow (``InvalidImageError``
    ``too_many_pixels``: the chain's own ``check_size``, which ``open_picture`` applies to a DICOM file)."""
    for signature, media_type in SERVED_AS_IS:
        if data.startswith(signature):
            check_size(picture_size(data), limits)  # the browser decodes it whole: its full size counts
            return data, media_type
    out = io.BytesIO()
    open_picture(data, limits=limits).save(out, "PNG")
    return out.getvalue(), "image/png"


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (``gzip`` or ``*``, with a q-value above 0)."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                if float(q[2:]) <= 0:
                    continue
            except ValueError:
                continue
        return True
    return False


def pixels_response(data: bytes, limits: ImageLimits, gzipped: bool) -> Response:
    """The ``pixels`` route's answer for a study's stored bytes (``xraylab.stored_pixels``): the samples, gzipped
    when ``gzipped``, with their metadata in headers."""
    pixels = stored_pixels(data, limits)
    body = pixels.body()
    headers = {**pixels.headers(), **NO_STORE, "Vary": "Accept-Encoding"}
    if gzipped:
        body = gzip.compress(body, compresslevel=PIXELS_GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/octet-stream", headers=headers)


def _problem(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status, headers=headers)


def _too_large(study_id: int, why: str) -> JSONResponse:
    log.warning("study %s: picture not served: over the image limits", study_id)
    return _problem(422, "too_large", f"the picture of study {study_id} is over the limits of what is decoded "
                    f"(XRAYLAB_MAX_IMAGE_BYTES, XRAYLAB_MAX_IMAGE_PIXELS): {why}")


def _unavailable(study_id: int, exc: Exception) -> JSONResponse:
    """The store or the model failed: say so, keep the patient's data out of the log."""
    log.warning("study %s: picture not served: %s", study_id, type(exc).__name__)
    return _problem(503, "unavailable", f"the picture cannot be made now ({type(exc).__name__})")


def media_router(db: Database, images: StudyImages, heatmaps: HeatmapMaker, *, image_gate: RenderGate | None = None,
                 heatmap_gate: RenderGate | None = None) -> APIRouter:
    """The four routes. Each prepares its pictures through a ``RenderGate`` (default: ``IMAGE_CONCURRENCY`` and
    ``IMAGE_QUEUE``, ``HEATMAP_CONCURRENCY`` and ``HEATMAP_QUEUE``), the study's look-up and audit included."""
    router = APIRouter(prefix=MEDIA_PREFIX, include_in_schema=False)
    image_gate = image_gate or RenderGate(IMAGE_CONCURRENCY, IMAGE_QUEUE)
    heatmap_gate = heatmap_gate or RenderGate(HEATMAP_CONCURRENCY, HEATMAP_QUEUE)

    def study(study_id: int, request: Request, action: str) -> dict[str, Any]:
        """The study with its latest prediction, if the caller's hospitals include it (else not found, as a study
        that does not exist), and a line of the audit trail: who looked at its picture (every view)."""
        principal = principal_of(request)
        scope = principal.scope if principal else NO_PATIENTS
        with db.session() as session:
            study_in_scope(session, study_id, scope)  # raises StudyNotFoundError
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
        except ImageChangedError as exc:
            log.warning("study %s: picture not served: its object was replaced after scoring", study_id)
            return _problem(409, "image_changed", str(exc))
        except InvalidImageError as exc:
            if exc.reason is RejectReason.TOO_MANY_PIXELS:
                return _too_large(study_id, str(exc))
            log.warning("study %s: picture not served: %s", study_id, exc.reason.value)
            return _problem(422, "unreadable", f"the picture of study {study_id} cannot be shown: {exc}")
        except RejectedInputError as exc:
            if exc.reason is RejectReason.TOO_LARGE:
                return _too_large(study_id, exc.detail)
            return _unavailable(study_id, exc)
        except Exception as exc:
            return _unavailable(study_id, exc)

    async def served(gate: RenderGate, study_id: int, request: Request, action: str, render: Any) -> Response:
        """``guarded`` on one of ``gate``'s threads, or ``503 busy`` at once (nothing looked up, nothing audited)."""
        try:
            return await gate.run(partial(guarded, study_id, request, action, render))
        except BusyError:
            return _problem(503, "busy", "too many pictures being prepared; try again in a moment",
                            {"Retry-After": str(BUSY_RETRY_AFTER_S)})

    @router.get("/{study_id}/image")
    async def image(study_id: int, request: Request) -> Response:
        def render(row: dict[str, Any]) -> Response:
            data, media_type = _as_served(images.original(row), images.limits)
            return Response(data, media_type=media_type)

        return await served(image_gate, study_id, request, "view_image", render)

    @router.get("/{study_id}/pixels")
    async def pixels(study_id: int, request: Request) -> Response:
        gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))

        def render(row: dict[str, Any]) -> Response:
            return pixels_response(images.original(row), images.limits, gzipped)

        return await served(image_gate, study_id, request, "view_image", render)

    @router.get("/{study_id}/heatmap")
    async def heatmap(study_id: int, request: Request) -> Response:
        def render(row: dict[str, Any]) -> Response:
            if not row.get("model_version"):
                return _problem(404, "no_prediction", f"study {study_id} has no prediction to explain")
            return Response(heatmaps.overlay_png(row), media_type="image/png")

        return await served(heatmap_gate, study_id, request, "view_heatmap", render)

    @router.get("/{study_id}/heatmap-layer")
    async def heatmap_layer(study_id: int, request: Request) -> Response:
        def render(row: dict[str, Any]) -> Response:
            if not row.get("model_version"):
                return _problem(404, "no_prediction", f"study {study_id} has no prediction to explain")
            return Response(heatmaps.layer_png(row), media_type="image/png", headers=NO_STORE)

        return await served(heatmap_gate, study_id, request, "view_heatmap", render)

    return router
