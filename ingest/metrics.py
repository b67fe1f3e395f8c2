"""The ingest actors' Prometheus metrics, through Ray's metrics agent (``ray.util.metrics``), so that one
scrape of each Ray node's metrics port finds them beside Ray Serve's own.

Ray exports an application's metrics with the prefix ``ray_``, so Prometheus sees (``EXPORTED_NAMES``):
``ray_xraylab_ingest_records_total``, ``ray_xraylab_ingest_objects_total{status}``,
``ray_xraylab_ingest_retries_total``, ``ray_xraylab_ingest_dead_letters_total{reason}``,
``ray_xraylab_ingest_transient_errors_total`` (counters; events/s is
``rate(ray_xraylab_ingest_records_total[1m])``), ``ray_xraylab_ingest_lag{partition}`` and
``ray_xraylab_ingest_consuming`` (gauges). Every series has an ``actor`` tag. A counter's series appears with
its first increment. The loop counts in its own ``stats``; ``update`` (called every few seconds from the
loop) adds what changed since the last call.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["IngestMetrics", "EXPORTED_NAMES"]

_NAMES = ("xraylab_ingest_records_total", "xraylab_ingest_objects_total", "xraylab_ingest_retries_total",
          "xraylab_ingest_dead_letters_total", "xraylab_ingest_transient_errors_total", "xraylab_ingest_lag",
          "xraylab_ingest_consuming")
EXPORTED_NAMES = tuple(f"ray_{name}" for name in _NAMES)  # as Prometheus sees them


class IngestMetrics:
    def __init__(self, actor: str) -> None:
        from ray.util.metrics import Counter as RayCounter
        from ray.util.metrics import Gauge

        self.actor = actor
        self.records = RayCounter("xraylab_ingest_records_total", "Kafka records polled", tag_keys=("actor",))
        self.objects = RayCounter("xraylab_ingest_objects_total", "objects through the pipeline, by status",
                                  tag_keys=("actor", "status"))
        self.retries = RayCounter("xraylab_ingest_retries_total", "attempts charged to objects that failed alone",
                                  tag_keys=("actor",))
        self.dead = RayCounter("xraylab_ingest_dead_letters_total", "dead letters, by reason",
                               tag_keys=("actor", "reason"))
        self.transient = RayCounter("xraylab_ingest_transient_errors_total", "rounds with failed pipeline calls",
                                    tag_keys=("actor",))
        self.lag = Gauge("xraylab_ingest_lag", "records not yet committed, per partition",
                         tag_keys=("actor", "partition"))
        self.consuming = Gauge("xraylab_ingest_consuming", "1 while the actor's loop runs", tag_keys=("actor",))
        self.seen: Counter[str] = Counter()
        self.partitions: set[str] = set()

    def update(self, loop: Any) -> None:
        tags = {"actor": self.actor}
        for key, value in loop.stats.items():
            delta = value - self.seen[key]
            if delta <= 0:
                continue
            self.seen[key] = value
            if key == "records":
                self.records.inc(delta, tags)
            elif key in ("written", "duplicate"):
                self.objects.inc(delta, {**tags, "status": key})
            elif key == "retries":
                self.retries.inc(delta, tags)
            elif key == "transient_errors":
                self.transient.inc(delta, tags)
            elif key.startswith("dlq_") and key not in ("dlq_send_errors",):
                self.dead.inc(delta, {**tags, "reason": key.removeprefix("dlq_")})
        for partition in self.partitions - set(loop.lag.by_partition):  # gone to another actor: not ours to sum
            self.lag.set(0, {**tags, "partition": partition})
        for partition, lag in loop.lag.by_partition.items():
            self.lag.set(lag, {**tags, "partition": partition})
        self.partitions = set(loop.lag.by_partition)
        self.set_consuming(not loop.stop_event.is_set())

    def set_consuming(self, consuming: bool) -> None:
        self.consuming.set(1 if consuming else 0, {"actor": self.actor})
