"""Start and stop the running system: Ray, the Serve app and the ingest actors.

Used by ``xraylab serve run``, the demo (``serve_app/demo.py``) and the end-to-end tests, so all
three run the same thing. Ray is started in this process, or joined when ``address`` names a running
cluster (``ray start``, ``ray up``, KubeRay). It does not migrate the database: that is a start-up step
of its own (``xraylab db upgrade``; the demo and the tests call ``upgrade_schema`` themselves).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from serve_app.app import AppArgs, preferring
from xraylab.settings import Settings

__all__ = ["Pipeline", "start_pipeline", "init_ray", "start_ingest_actors", "ingest_actors"]

log = logging.getLogger("xraylab.launch")


@dataclass
class Pipeline:
    settings: Settings
    ingest: list[Any] = field(default_factory=list)  # the ingest actors' handles
    ingest_refs: list[Any] = field(default_factory=list)
    delivery: Any = None  # the deliverer actor (serve_app/delivery_actor.py), where destinations are configured

    @property
    def url(self) -> str:
        return f"http://{self.settings.SERVE_HTTP_HOST}:{self.settings.SERVE_HTTP_PORT}"

    def start_ingest(self, count: int | None = None) -> None:
        """``count`` Kafka ingest actors (default ``XRAYLAB_INGEST_ACTORS``) in one consumer group, calling
        this pipeline's Serve app, spread over the cluster's nodes: actor i prefers the i-th alive node
        (round robin), so N actors on N nodes are one per node. A preference only: an actor whose node dies
        is restarted by Ray on a node that lives, and takes its partitions back."""
        actors = start_ingest_actors(self.settings, count or self.settings.INGEST_ACTORS, first=len(self.ingest))
        self.ingest += actors
        self.ingest_refs += [actor.run.remote() for actor in actors]

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
        if self.delivery is not None:  # what it has not sent stays queued in the outbox
            try:
                ray.get(self.delivery.stop.remote(), timeout=40)
            except Exception as exc:  # shutting down anyway
                log.warning("the deliverer did not stop cleanly: %s", exc)
            with contextlib.suppress(Exception):  # so that the next start makes a new one, on the file then
                ray.kill(self.delivery, no_restart=True)
        serve.shutdown()
        ray.shutdown()


def start_ingest_actors(settings: Settings, count: int, *, first: int = 0, detached: bool = False) -> list[Any]:
    """Ingest actors ``first`` .. ``first + count - 1`` of the settings' Serve app, each preferring a node of its
    own (round robin over the alive nodes). ``detached``: they outlive the caller (``xraylab ingest start`` on a
    cluster). One that exists already under its name (started by ``xraylab ingest start``) is kept, not
    started twice."""
    from ingest.consumer import INGEST_NAMESPACE, KafkaIngestActor, ingest_actor_name

    app_name = settings.SERVE_APP_NAME
    nodes = _alive_nodes()
    actors = []
    for index in range(first, first + count):
        name = ingest_actor_name(app_name, index)
        lifetime = {"lifetime": "detached"} if detached else {}
        actors.append(KafkaIngestActor.options(name=name, namespace=INGEST_NAMESPACE, get_if_exists=True, **lifetime,
                                               **_prefer_node(nodes, index)).remote(app_name, name))
    return actors


def ingest_actors(settings: Settings) -> list[tuple[str, Any]]:
    """(name, handle) of every ingest actor of the settings' Serve app running on the cluster."""
    import ray

    from ingest.consumer import INGEST_NAMESPACE, ingest_actor_name

    prefix = ingest_actor_name(settings.SERVE_APP_NAME, None)
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["namespace"] == INGEST_NAMESPACE and a["name"].startswith(prefix))
    return [(name, ray.get_actor(name, namespace=INGEST_NAMESPACE)) for name in names]


def _alive_nodes() -> list[str]:
    """The ids of the cluster's alive nodes, the head's first, then in a stable order."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    head = [n for n in nodes if "node:__internal_head__" in n.get("Resources", {})]
    rest = sorted((n for n in nodes if n not in head), key=lambda n: n["NodeID"])
    return [n["NodeID"] for n in head + rest]


def _prefer_node(nodes: list[str], index: int) -> dict[str, Any]:
    """Actor options that prefer the ``index``-th node (round robin) and fall back to any node. A label
    selector on Ray's own ``ray.io/node-id`` label with a fallback: measured on Ray 2.60, a soft
    ``NodeAffinitySchedulingStrategy`` put actors on the other node about half of the time."""
    if len(nodes) < 2:
        return {"scheduling_strategy": "SPREAD"}
    return preferring({"ray.io/node-id": nodes[index % len(nodes)]})


def init_ray(settings: Settings, *, address: str = "", num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (or Ray's own ``RAY_ADDRESS``), else start a Ray of this process's
    own; either way the workers get the settings' environment (``Settings.env_for_workers``)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    runtime_env = {"env_vars": settings.env_for_workers()}
    if address:  # a cluster's nodes export metrics on the port each was started with (`--metrics-export-port`)
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env,
                 _metrics_export_port=settings.RAY_METRICS_PORT)  # scraped by cluster/local/prometheus.sh


def start_pipeline(settings: Settings, args: AppArgs | None = None, *, ingest: bool = True,
                   num_cpus: int | None = None, address: str = "") -> Pipeline:
    """The Serve app, its ingest actors and the deliverer (where ``XRAYLAB_DELIVERY_CONFIG`` names destinations)
    on a Ray of this process's own, or on the running cluster at ``address`` (``127.0.0.1:6379``, ``auto``; Ray's
    own ``RAY_ADDRESS`` works too)."""
    from ray import serve

    from serve_app.app import build_app
    from serve_app.delivery_actor import start_delivery

    init_ray(settings, address=address, num_cpus=num_cpus)
    serve.start(proxy_location=settings.SERVE_PROXY_LOCATION,
                http_options={"host": settings.SERVE_HTTP_HOST, "port": settings.SERVE_HTTP_PORT})
    args = args or AppArgs()
    serve.run(build_app(args), name=settings.SERVE_APP_NAME, route_prefix="/")
    pipeline = Pipeline(settings=settings, delivery=start_delivery(settings, args.database, detached=bool(address)))
    if ingest:
        pipeline.start_ingest()
    log.info("pipeline up at %s", pipeline.url)
    return pipeline
