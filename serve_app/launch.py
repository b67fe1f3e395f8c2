"""Start and stop the running system in one process: Ray, the Serve app and the ingest actor.

Used by ``xraylab serve run``, the demo (``serve_app/demo.py``) and the end-to-end tests, so all
three run the same thing. It does not migrate the database: that is a start-up step of its own
(``xraylab db upgrade``; the demo and the tests call ``upgrade_schema`` themselves).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from serve_app.app import AppArgs
from xraylab.settings import Settings

__all__ = ["Pipeline", "start_pipeline"]

log = logging.getLogger("xraylab.launch")


@dataclass
class Pipeline:
    settings: Settings
    ingest: list[Any] = field(default_factory=list)  # the ingest actors' handles
    ingest_refs: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.settings.SERVE_HTTP_HOST}:{self.settings.SERVE_HTTP_PORT}"

    def start_ingest(self, count: int | None = None) -> None:
        """``count`` Kafka ingest actors (default ``XRAYLAB_INGEST_ACTORS``) in one consumer group, calling
        this pipeline's Serve app; spread over the cluster's nodes (``SPREAD``)."""
        from ingest.consumer import INGEST_NAMESPACE, KafkaIngestActor, ingest_actor_name

        app_name = self.settings.SERVE_APP_NAME
        for index in range(len(self.ingest), len(self.ingest) + (count or self.settings.INGEST_ACTORS)):
            name = ingest_actor_name(app_name, index)
            actor = KafkaIngestActor.options(name=name, namespace=INGEST_NAMESPACE,
                                             scheduling_strategy="SPREAD").remote(app_name, name)
            self.ingest.append(actor)
            self.ingest_refs.append(actor.run.remote())

    def ingest_stats(self) -> dict[str, Any]:
        """The ingest actors' counters added up, and whether all of them consume."""
        import ray

        total: dict[str, Any] = {}
        for stats in ray.get([actor.stats.remote() for actor in self.ingest]):
            for key, value in stats.items():
                if isinstance(value, bool):
                    total[key] = total.get(key, True) and value
                elif isinstance(value, int | float):
                    total[key] = total.get(key, 0) + value
        return total

    def stop_ingest(self) -> None:
        import ray

        try:
            ray.get([actor.stop.remote() for actor in self.ingest], timeout=10)
            ray.get(self.ingest_refs, timeout=30)
        except Exception as exc:  # shutting down anyway
            log.warning("ingest actors did not stop cleanly: %s", exc)

    def stop(self) -> None:
        import ray
        from ray import serve

        if self.ingest:
            self.stop_ingest()
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
                 runtime_env={"env_vars": settings.env_for_workers()},
                 _metrics_export_port=settings.RAY_METRICS_PORT)  # scraped by cluster/local/prometheus.sh
    serve.start(http_options={"host": settings.SERVE_HTTP_HOST, "port": settings.SERVE_HTTP_PORT})
    serve.run(build_app(args or AppArgs()), name=settings.SERVE_APP_NAME, route_prefix="/")
    pipeline = Pipeline(settings=settings)
    if ingest:
        pipeline.start_ingest()
    log.info("pipeline up at %s", pipeline.url)
    return pipeline
