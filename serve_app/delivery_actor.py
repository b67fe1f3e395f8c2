"""The deliverer inside the Ray cluster: one actor (``xraylab-delivery`` in namespace ``xraylab``) running
``delivery.worker.Deliverer`` over the outbox, restarted by Ray wherever it dies; the pipeline starts it when
``XRAYLAB_DELIVERY_CONFIG`` names destinations.

Its figures go through Ray's metrics agent (Prometheus sees them prefixed ``ray_``), per ``destination``:
``xraylab_delivery_queued``, ``xraylab_delivery_failed_waiting`` (set aside, for ``xraylab outbox retry``) and
``xraylab_delivery_lag_seconds`` (how long the oldest queued result has waited) as gauges, and the counters
``xraylab_delivery_sent_total`` and ``xraylab_delivery_failed_total``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from delivery.worker import Deliverer
from xraylab.db.session import Database
from xraylab.delivery_config import DeliveryConfig
from xraylab.settings import Settings, get_settings

__all__ = ["DeliveryActor", "DELIVERY_ACTOR", "start_delivery", "delivery_configured"]

log = logging.getLogger("xraylab.delivery.actor")
DELIVERY_ACTOR = "xraylab-delivery"
NAMESPACE = "xraylab"
GAUGES = {"queued": "xraylab_delivery_queued", "failed_waiting": "xraylab_delivery_failed_waiting",
          "lag_seconds": "xraylab_delivery_lag_seconds"}
COUNTERS = {"sent": "xraylab_delivery_sent_total", "failed": "xraylab_delivery_failed_total"}


# No CPU reserved: it waits on sockets most of the time, and a reservation would take from what Ray Train's workers
# and the replicas are scheduled on (a 2-CPU Ray with a 0.25-CPU deliverer cannot place 2 one-CPU training workers).
@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
class DeliveryActor:
    """Runs the deliverer on the destinations file its starter read (``config_text``): the same on whichever node
    Ray places or restarts it, whatever that node's own files say."""

    def __init__(self, database: str, config_text: str) -> None:
        from ray.util.metrics import Counter, Gauge

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = get_settings()
        config = DeliveryConfig.loads(config_text, calling_ae_title=settings.DELIVERY_AET)
        if config.empty:
            raise ValueError("the deliverer needs destinations (XRAYLAB_DELIVERY_CONFIG)")
        self.metrics: dict[str, Any] = {
            **{key: Gauge(name, f"outbox: {key.replace('_', ' ')} per destination", tag_keys=("destination",))
               for key, name in GAUGES.items()},
            **{key: Counter(name, f"results {key} per destination", tag_keys=("destination",))
               for key, name in COUNTERS.items()}}
        self.deliverer = Deliverer(settings, Database(settings.database_url(database)), config,
                                   publish=self._publish)
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.start()

    def _publish(self, metric: str, destination: str, value: float) -> None:
        if metric in COUNTERS:
            self.metrics[metric].inc(value, {"destination": destination})
        elif metric in GAUGES:
            self.metrics[metric].set(value, {"destination": destination})

    def start(self) -> bool:
        """Deliver (again, after ``stop``); True when it was not running."""
        if self.thread is not None and self.thread.is_alive():
            return False
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.deliverer.run, args=(self.stop_event,), name="deliverer",
                                       daemon=True)
        self.thread.start()
        return True

    def stats(self) -> dict[str, Any]:
        return {"running": self.thread is not None and self.thread.is_alive(), **self.deliverer.stats()}

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


def _config(settings: Settings) -> DeliveryConfig:
    return DeliveryConfig.load(settings.DELIVERY_CONFIG, calling_ae_title=settings.DELIVERY_AET)


def delivery_configured(settings: Settings) -> bool:
    """Whether the settings name destinations (a file that does not read raises ``DeliveryConfigError``)."""
    return not _config(settings).empty


def start_delivery(settings: Settings, database: str = "default", *, detached: bool = False) -> Any | None:
    """The deliverer actor, on the destinations file as this process reads it (one running already under its name
    is kept, and made to deliver if it was stopped); None when nothing is configured."""
    config = _config(settings)
    if config.empty:
        return None
    lifetime = {"lifetime": "detached"} if detached else {}
    actor = DeliveryActor.options(name=DELIVERY_ACTOR, namespace=NAMESPACE, get_if_exists=True,
                                  **lifetime).remote(database, config.text)
    actor.start.remote()
    return actor
