"""The HTTP ingress and the pipeline: fetch -> classify -> write.

Routes: ``POST /v1/predict`` (image bytes -> score, band, model version), ``GET /v1/model``,
``GET /healthz``, and the review UI at ``/ui``. The ingest actor calls ``process`` through a
DeploymentHandle.
"""


import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from xraylab.db.models import study_uid
from xraylab.errors import RejectedInputError
from xraylab.settings import get_settings

log = logging.getLogger("xraylab.ingress")


def rejection(exc: BaseException) -> "RejectedInputError | None":
    """The ``RejectedInputError`` behind an exception from a handle call, if that is what it is."""
    for candidate in (exc, getattr(exc, "cause", None)):
        if isinstance(candidate, RejectedInputError):
            reason = getattr(candidate, "reason", None) or candidate.args[0]
            detail = getattr(candidate, "detail", None) or (candidate.args[1] if len(candidate.args) > 1 else "")
            return RejectedInputError(reason, detail)
    return None


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128)
@serve.ingress()
class Ingress:
    def __init__(self, fetcher: DeploymentHandle, classifier: DeploymentHandle, writer: DeploymentHandle,
                 database: str = "default", mount_ui: bool = True) -> None:
        self.fetcher = fetcher
        self.classifier = classifier
        self.writer = writer
        self.settings = get_settings()
        self.database = database
        self.mount_ui = mount_ui

    async def process(self, ref: dict[str, Any]) -> dict[str, Any]:
        """One object from an S3 event -> one stored prediction. Never raises for bad input:
        returns ``{"status": "rejected", "reason": ...}`` instead; raises for transient failures."""
        t0 = time.perf_counter()
        uid = None
        try:
            fetched = await self.fetcher.fetch.remote(ref)
            uid = study_uid(fetched["endpoint_id"], ref["bucket"], ref["key"], fetched["etag"] or ref.get("etag"))
            verdict = await self.classifier.classify.remote(fetched["data"])
        except Exception as exc:
            rejected = rejection(exc)
            if rejected is None:
                raise
            log.warning("study %s rejected: %s", uid or "(not fetched)", rejected.reason)
            return {"status": "rejected", "reason": rejected.reason, "detail": rejected.detail, "study_uid": uid}
        meta = fetched["metadata"]
        study = {
            "study_uid": uid, "endpoint_id": fetched["endpoint_id"], "bucket": ref["bucket"],
            "object_key": ref["key"], "etag": fetched["etag"], "size_bytes": len(fetched["data"]),
            "content_type": fetched["content_type"], "hospital": meta.get("hospital"),
            "patient_id": meta.get("patient-id"), "patient_name": meta.get("patient-name"),
            "study_date": meta.get("study-date"),
        }
        prediction = {k: verdict[k] for k in ("model_version", "score", "band", "infer_ms")}
        prediction["fetch_ms"] = fetched["fetch_ms"]
        written = await self.writer.write.remote(study, prediction)
        return {
            "status": "written" if written["created"] else "duplicate",
            "study_uid": uid, "study_id": written["study_id"], "prediction_id": written["prediction_id"],
            "score": verdict["score"], "band": verdict["band"], "model_version": verdict["model_version"],
            "total_ms": (time.perf_counter() - t0) * 1000,
        }

    def __serve_build_asgi_app__(self) -> Any:
        from xraylab.registry import SYNTHETIC_NOTICE

        app = FastAPI(title="xraylab", version="0.1.0")
        max_bytes = self.settings.MAX_IMAGE_BYTES

        @app.get("/healthz")
        async def healthz() -> dict[str, Any]:
            await self.writer.check_health.remote()
            card = await self.classifier.model_card.remote()
            return {"status": "ok", "model_version": card["version"]}

        @app.get("/v1/model")
        async def model() -> dict[str, Any]:
            return await self.classifier.model_card.remote()

        @app.post("/v1/predict")
        async def predict(request: Request) -> Any:
            data = await request.body()
            if len(data) > max_bytes:
                return JSONResponse({"error": "too_large", "detail": f"more than {max_bytes} bytes"}, 413)
            if "multipart/form-data" in request.headers.get("content-type", ""):
                form = await request.form()
                upload = next((v for v in form.values() if hasattr(v, "read")), None)
                if upload is None:
                    return JSONResponse({"error": "not_image", "detail": "no file in the form"}, 400)
                data = await upload.read()  # type: ignore[union-attr]
            try:
                verdict = await self.classifier.classify.remote(data)
            except Exception as exc:
                rejected = rejection(exc)
                if rejected is None:
                    raise
                return JSONResponse({"error": rejected.reason, "detail": rejected.detail}, 400)
            if verdict["synthetic_model"]:
                verdict["notice"] = SYNTHETIC_NOTICE
            return verdict

        if self.mount_ui:
            app = self._mount_ui(app)
        return app

    def _mount_ui(self, app: Any) -> Any:
        import gradio as gr

        from ui.review_app import S3ImageLoader, build_review_app
        from xraylab.db.session import make_engine

        users = self.settings.ui_users()
        if not users:
            log.warning("XRAYLAB_UI_USERS is empty: the review UI is not mounted (it shows patient data)")
            return app
        engine = make_engine(self.settings.database_url(self.database))
        demo = build_review_app(engine, S3ImageLoader(self.settings), model_dir=self.settings.model_dir)
        return gr.mount_gradio_app(app, demo, path="/ui", auth=users)
