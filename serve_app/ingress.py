"""The HTTP ingress, and the entry point of the pipeline step for the ingest actor.

Routes: ``POST /v1/predict`` (image bytes -> verdict), ``POST /v1/predict/batch`` (several images in one
multipart body -> a verdict or an error each, for PACS-side bulk clients), ``GET /v1/model``,
``GET /healthz``, the review UI at ``/ui`` with its login at ``/login``. Every route but ``/healthz`` and the
login pages needs a session or (``/v1``) an API key: ``ui/access.py``; production serves no API docs.
The ingest actor calls ``process_batch`` through a DeploymentHandle; the step itself (fetch -> classify ->
write) is ``serve_app.step.ProcessStep``.

No ``from __future__ import annotations`` here: Serve ships this class to its replicas by value
(cloudpickle), with only the globals its code uses, so a postponed ``Request`` annotation of a route
cannot be resolved there; FastAPI then takes ``request`` for a query parameter and answers 422
(``tests/unit/serve_app/test_ingress.py`` ships the class the same way).
"""

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from ingest.consumer import INGEST_NAMESPACE, ingest_actor_name
from serve_app.body_limit import BodyLimitMiddleware, body_limits
from serve_app.step import ProcessStep
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import ObjectToProcess, Outcome, Verdict
from xraylab.settings import get_settings

__all__ = ["Ingress"]

log = logging.getLogger("xraylab.ingress")

MAX_IMAGES_PER_BATCH = 256  # POST /v1/predict/batch; the whole body is also capped at XRAYLAB_MAX_BATCH_BYTES


# Load shedding: past 128 requests in progress and 16 waiting, a caller gets HTTP 503 with Retry-After: 1
# at once (a DeploymentHandle caller, such as the ingest actor, gets BackPressureError and backs off)
# instead of every request's latency growing with the queue. Measured at 512 concurrent single-image
# requests: with 128 waiting, answered requests' p99 reached 18 s on a 16-core GPU machine (the queue
# starves some of them); with 16, 1.5 s there and 1.0-3.4 s on 2 cores, the rest refused at once.
# serve_config.yaml carries the same values.
@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128, max_queued_requests=16,
                  backpressure_config=BackpressureConfig(status_code=503, retry_after_s=1))
@serve.ingress()
class Ingress:
    def __init__(self, fetcher: DeploymentHandle, classifier: DeploymentHandle, writer: DeploymentHandle,
                 database: str = "default", mount_ui: bool = True) -> None:
        self.settings = get_settings()
        self.step = ProcessStep(fetcher, classifier, writer, self.settings.image_limits())
        self.fetcher = fetcher
        self.classifier = classifier
        self.writer = writer
        self.database = database
        self.mount_ui = mount_ui

    async def process_batch(self, items: list[ObjectToProcess]) -> list[Outcome]:
        """What the ingest actor calls: a batch of objects, one outcome each, in order."""
        return await self.step.process_batch(items)

    async def check_ready(self, endpoint_ids: list[str] | None = None) -> None:
        """Raise unless every stage can work: the database answers, the named S3 endpoints answer, the
        classifier has a model. The ingest actor asks this when an object fails alone: a healthy pipeline
        means the object is to blame (its retry counts), an unhealthy one means an outage (it waits)."""
        await asyncio.gather(self.writer.check_health.remote(), self.fetcher.check_health.remote(endpoint_ids),
                             self.classifier.model_card.remote())

    def __serve_build_asgi_app__(self) -> Any:
        from ui.access import install_access
        from xraylab.db.session import Database

        docs = self.settings.ENV != "production"  # in development, behind login like the rest
        app = FastAPI(title="xraylab", version="0.1.0", docs_url="/docs" if docs else None, redoc_url=None,
                      openapi_url="/openapi.json" if docs else None)
        # Serve's proxy caps request bodies already (serve_app/body_limit.py, through SERVE_ENV); the same cap
        # here holds for a proxy started without that hook.
        app.add_middleware(BodyLimitMiddleware, **body_limits(self.settings))
        self.db = Database(self.settings.database_url(self.database))
        install_access(app, self.db, self.settings)  # outermost: nothing is read before the caller is known

        @app.get("/healthz")
        async def healthz() -> Any:
            await self.writer.check_health.remote()
            card = await self.classifier.model_card.remote()
            body: dict[str, Any] = {"status": "ok", "model_version": card["version"]}
            ingest = await self._ingest_health()
            if ingest is not None:
                body["ingest"] = ingest
                if not ingest["ok"]:
                    body["status"] = "degraded"
                    return JSONResponse(body, 503)
            return body

        @app.get("/v1/model")
        async def model() -> dict[str, Any]:
            return await self.classifier.model_card.remote()

        @app.post("/v1/predict")
        async def predict(request: Request) -> Any:
            data = await request.body()
            if "multipart/form-data" in request.headers.get("content-type", ""):
                form = await request.form()
                upload = next((v for v in form.values() if hasattr(v, "read")), None)
                if upload is None:
                    return JSONResponse({"error": RejectReason.NOT_IMAGE, "detail": "no file in the form"}, 400)
                data = await upload.read()  # type: ignore[union-attr]
            [verdict] = await self.step.classify_bytes([data])  # decoded here: the study's bytes go no further
            if isinstance(verdict, RejectedInputError):
                return JSONResponse({"error": verdict.reason, "detail": verdict.detail}, 400)
            return verdict.to_dict()

        @app.post("/v1/predict/batch")
        async def predict_batch(request: Request) -> Any:
            if "multipart/form-data" not in request.headers.get("content-type", ""):
                return JSONResponse({"error": "not_multipart", "detail": "send the images as multipart files"}, 400)
            form = await request.form(max_files=MAX_IMAGES_PER_BATCH + 1)
            uploads = [v for _, v in form.multi_items() if hasattr(v, "read")]
            if not uploads:
                return JSONResponse({"error": RejectReason.NOT_IMAGE, "detail": "no file in the form"}, 400)
            if len(uploads) > MAX_IMAGES_PER_BATCH:
                return JSONResponse({"error": "too_many_images", "detail": f"at most {MAX_IMAGES_PER_BATCH}"}, 413)
            images = [await upload.read() for upload in uploads]  # type: ignore[union-attr]
            verdicts: list[Verdict | RejectedInputError] = await self._classify_files(images)
            results: list[dict[str, Any]] = []
            for upload, verdict in zip(uploads, verdicts, strict=True):
                name = getattr(upload, "filename", None)
                if isinstance(verdict, RejectedInputError):
                    results.append({"filename": name, "error": verdict.reason, "detail": verdict.detail})
                else:
                    results.append({"filename": name, **verdict.to_dict()})
            body: dict[str, Any] = {"results": results}
            notices = sorted({v.notice for v in verdicts if isinstance(v, Verdict) and v.notice})
            if notices:  # one model scores a call; two during a hot swap
                body["notice"] = " ".join(notices)
            return body

        if self.mount_ui:
            app = self._mount_ui(app)
        return app

    async def _classify_files(self, images: list[bytes]) -> list[Verdict | RejectedInputError]:
        """The files of a batch request, each held to ``XRAYLAB_MAX_IMAGE_BYTES`` as a single request is."""
        limit = self.settings.MAX_IMAGE_BYTES
        small = [data for data in images if len(data) <= limit]
        verdicts = iter(await self.step.classify_bytes(small) if small else [])
        return [next(verdicts) if len(data) <= limit else
                RejectedInputError(RejectReason.TOO_LARGE, f"{len(data)} bytes > {limit}") for data in images]

    async def _ingest_health(self) -> dict[str, Any] | None:
        """The app's ingest actors, each consuming or not (restarting, unreachable), with their lag; not ok
        when one is not consuming, or its lag waits with no commit or keeps growing. None where this
        cluster runs no ingest actor (an HTTP-only deployment)."""
        import ray

        if not ray.is_initialized():
            return None
        prefix = ingest_actor_name(self.settings.SERVE_APP_NAME, None)
        named = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        names = sorted(a["name"] for a in named
                       if a.get("namespace") == INGEST_NAMESPACE and str(a["name"]).startswith(prefix))
        if not names:
            return None

        async def one(name: str) -> dict[str, Any]:
            try:
                actor = ray.get_actor(name, namespace=INGEST_NAMESPACE)
                stats = await asyncio.wait_for(actor.stats.remote(), timeout=5)
            except Exception as exc:  # a restart in progress, or gone
                return {"consuming": False, "error": type(exc).__name__}
            return {key: stats.get(key) for key in (
                "consuming", "uptime_s", "transient_errors", "lag", "lag_by_partition", "stalled", "lag_growing")}

        actors = dict(zip(names, await asyncio.gather(*(one(name) for name in names)), strict=True))
        problems = sorted({problem for a in actors.values() for problem, bad in (
            ("not_consuming", not a.get("consuming")), ("stalled", a.get("stalled")),
            ("lag_growing", a.get("lag_growing"))) if bad})
        return {"ok": not problems, "problems": problems, "consuming": all(a.get("consuming") for a in actors.values()),
                "lag": sum(a.get("lag") or 0 for a in actors.values()), "actors": actors}

    def _mount_ui(self, app: Any) -> Any:
        from ui.review_app import mount_review_app

        return mount_review_app(app, self.db, self.settings)
