"""The HTTP ingress, and the entry point of the pipeline step for the ingest actor.

Routes: ``POST /v1/predict`` (image bytes -> verdict), ``GET /v1/model``, ``GET /healthz``, and the
review UI at ``/ui``. The ingest actor calls ``process`` through a DeploymentHandle; the step itself
(fetch -> classify -> write) is ``serve_app.step.ProcessStep``.

No ``from __future__ import annotations`` here: Serve ships this class to its replicas by value
(cloudpickle), with only the globals its code uses, so a postponed ``Request`` annotation of a route
cannot be resolved there; FastAPI then takes ``request`` for a query parameter and answers 422
(``tests/unit/serve_app/test_ingress.py`` ships the class the same way).
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.step import ProcessStep
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import ObjectToProcess, Outcome, Verdict
from xraylab.settings import get_settings

__all__ = ["Ingress"]

log = logging.getLogger("xraylab.ingress")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128)
@serve.ingress()
class Ingress:
    def __init__(self, fetcher: DeploymentHandle, classifier: DeploymentHandle, writer: DeploymentHandle,
                 database: str = "default", mount_ui: bool = True) -> None:
        self.step = ProcessStep(fetcher, classifier, writer)
        self.classifier = classifier
        self.writer = writer
        self.settings = get_settings()
        self.database = database
        self.mount_ui = mount_ui

    async def process(self, item: ObjectToProcess) -> Outcome:
        """One object from an S3 event -> one stored prediction (see ``ProcessStep``)."""
        return await self.step(item)

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
                return JSONResponse({"error": RejectReason.TOO_LARGE, "detail": f"more than {max_bytes} bytes"}, 413)
            if "multipart/form-data" in request.headers.get("content-type", ""):
                form = await request.form()
                upload = next((v for v in form.values() if hasattr(v, "read")), None)
                if upload is None:
                    return JSONResponse({"error": RejectReason.NOT_IMAGE, "detail": "no file in the form"}, 400)
                data = await upload.read()  # type: ignore[union-attr]
            try:
                verdict: Verdict = await self.classifier.classify.remote(data)
            except Exception as exc:
                rejected = RejectedInputError.behind(exc)
                if rejected is None:
                    raise
                return JSONResponse({"error": rejected.reason, "detail": rejected.detail}, 400)
            body = verdict.to_dict()
            if verdict.synthetic_model:
                body["notice"] = SYNTHETIC_NOTICE
            return body

        if self.mount_ui:
            app = self._mount_ui(app)
        return app

    def _mount_ui(self, app: Any) -> Any:
        import gradio as gr

        from ui.review_app import S3ImageLoader, build_review_app
        from xraylab.db.session import Database

        users = self.settings.ui_users()
        if not users:
            log.warning("XRAYLAB_UI_USERS is empty: the review UI is not mounted (it shows patient data)")
            return app
        db = Database(self.settings.database_url(self.database))
        demo = build_review_app(db, S3ImageLoader(self.settings), model_dir=self.settings.model_dir)
        return gr.mount_gradio_app(app, demo, path="/ui", auth=users)
