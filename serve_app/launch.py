"""Start and stop the running system in one process: Ray, the Serve app and the ingest actor.

Used by ``xraylab serve run``, the demo (``serve_app/demo.py``) and the end-to-end tests, so all
three run the same thing. It does not migrate the database: that is a start-up step of its own
(``xraylab db upgrade``; the demo and the tests call ``upgrade_schema`` themselves).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from serve_app.app import AppArgs
from xraylab.settings import Settings

__all__ = ["Pipeline", "start_pipeline"]

log = logging.getLogger("xraylab.launch")


@dataclass
class Pipeline:
    settings: Settings
    ingest: Any | None = None
    ingest_ref: Any | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.SERVE_HTTP_HOST}:{self.settings.SERVE_HTTP_PORT}"

    def start_ingest(self) -> None:
        """The Kafka ingest actor, calling this pipeline's Serve app."""
        from ingest.consumer import INGEST_NAMESPACE, KafkaIngestActor, ingest_actor_name

        app_name = self.settings.SERVE_APP_NAME
        self.ingest = KafkaIngestActor.options(name=ingest_actor_name(app_name),
                                               namespace=INGEST_NAMESPACE).remote(app_name)
        self.ingest_ref = self.ingest.run.remote()

    def ingest_stats(self) -> dict[str, Any]:
        import ray

        return ray.get(self.ingest.stats.remote()) if self.ingest else {}

    def stop(self) -> None:
        import ray
        from ray import serve

        if self.ingest is not None:
            try:
                ray.get(self.ingest.stop.remote(), timeout=10)
                ray.get(self.ingest_ref, timeout=30)
            except Exception as exc:  # shutting down anyway
                log.warning("ingest actor did not stop cleanly: %s", exc)
        serve.shutdown()
        ray.shutdown()


def start_pipeline(settings: Settings, args: AppArgs | None = None, *, ingest: bool = True,
                   num_cpus: int | None = None) -> Pipeline:
    import ray
    from ray import serve

    from serve_app.app import build_app

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": settings.env_for_workers()})
    serve.start(http_options={"host": settings.SERVE_HTTP_HOST, "port": settings.SERVE_HTTP_PORT})
    serve.run(build_app(args or AppArgs()), name=settings.SERVE_APP_NAME, route_prefix="/")
    pipeline = Pipeline(settings=settings)
    if ingest:
        pipeline.start_ingest()
    log.info("pipeline up at %s", pipeline.url)
    return pipeline
