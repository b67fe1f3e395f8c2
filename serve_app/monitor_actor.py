"""The model monitor inside the Ray cluster: one detached actor per monitored model version
(``xraylab-monitor:<version>`` in namespace ``xraylab``), running health every ``MONITOR_HEALTH_INTERVAL_S``
and drift/performance every ``MONITOR_DRIFT_INTERVAL_S`` (``xraylab.monitor.run``), and exporting each figure
as the gauge ``xraylab_monitor_value{metric, hospital, model_version}`` through Ray's metrics agent (Prometheus
sees ``ray_xraylab_monitor_value``, beside Ray Serve's and the ingest actors' metrics).

States (in the ``monitors`` table, so ``xraylab monitor status`` reads them without Ray):
``pending`` (the model has no reference statistics yet; nothing runs), ``ready`` (configured, not started),
``active`` (the actor runs), ``stopped`` (stopped by command), ``error`` (the last run failed; the message
says why, and the actor keeps trying at its next run).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

import ray

from xraylab.db import monitoring as store
from xraylab.db.session import Database
from xraylab.monitor.health import MONITOR_GAUGE, MONITOR_GAUGE_TAGS
from xraylab.monitor.reference import NoReferenceError, load_reference
from xraylab.registry import ModelNotFoundError, open_registry, read_card
from xraylab.settings import Settings, get_settings

__all__ = ["MonitorActor", "MONITOR_NAMESPACE", "monitor_actor_name", "start_monitor", "stop_monitor",
           "monitor_handle", "run_monitor_now"]

log = logging.getLogger("xraylab.monitor.actor")
MONITOR_NAMESPACE = "xraylab"


def monitor_actor_name(model_version: str) -> str:
    return f"xraylab-monitor:{model_version}"


@ray.remote(num_cpus=0.25, max_restarts=-1, max_concurrency=4)
class MonitorActor:
    def __init__(self, model_version: str, database: str = "default") -> None:
        from ray.util.metrics import Gauge

        from xraylab.monitor.run import MonitorRunner

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = get_settings()
        self.settings, self.model_version = settings, model_version
        self.db = Database(settings.database_url(database))
        self.gauge = Gauge(MONITOR_GAUGE, "the model monitor's figures (drift, performance, health)",
                           tag_keys=MONITOR_GAUGE_TAGS)
        self.runner = MonitorRunner(settings, self.db, model_version, publish=self._publish)
        self.lock = threading.Lock()  # one run at a time
        self.start_lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        if self._state() in ("active", "error"):  # Ray restarted this actor: carry on by itself
            self.start()

    def _state(self) -> str | None:
        try:
            with self.db.session() as session:
                row = store.monitor_row(session, self.model_version)
                return row.state if row else None
        except Exception as exc:  # the database is away: the loop's runs will say so
            log.warning("monitor %s: state not readable: %s", self.model_version, type(exc).__name__)
            return None

    def _publish(self, metric: str, hospital: str, value: float) -> None:
        self.gauge.set(value, {"metric": metric, "hospital": hospital, "model_version": self.model_version})

    def start(self) -> str:
        """Start the schedule (idempotent, also after an actor restart)."""
        with self.start_lock:
            if self.thread is None or not self.thread.is_alive():
                self.stop_event.clear()
                self.thread = threading.Thread(target=self._loop, name="monitor", daemon=True)
                self.thread.start()
                self._set_state("active")
        return "active"

    def _loop(self) -> None:
        # Health at once; the first drift run after one interval (at start it covers what is scored from then on).
        next_health = time.monotonic()
        next_drift = next_health + self.settings.MONITOR_DRIFT_INTERVAL_S
        while not self.stop_event.is_set():
            now = time.monotonic()
            try:  # run_now reports its own failures; nothing may end the schedule
                if now >= next_health:
                    self.run_now("health")
                    next_health = now + self.settings.MONITOR_HEALTH_INTERVAL_S
                if now >= next_drift:
                    self.run_now("drift")
                    next_drift = now + self.settings.MONITOR_DRIFT_INTERVAL_S
            except Exception:
                log.exception("monitor %s: scheduled run failed", self.model_version)
                next_health = max(next_health, now + 5)
                next_drift = max(next_drift, now + 5)
            self.stop_event.wait(max(0.5, min(next_health, next_drift) - time.monotonic()))

    def run_now(self, kind: str = "drift") -> dict[str, Any]:
        """One run now (``drift`` or ``health``); a failure sets state ``error`` and is returned, not raised."""
        with self.lock:
            failed = f"{kind} run failed"
            try:
                summary = self.runner.drift_run() if kind == "drift" else self.runner.health_run()
            except Exception as exc:
                # The type and the first line only: a database error's text can carry the values it was sent.
                message = f"{failed}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                log.error("monitor %s: %s", self.model_version, message)
                self._set_state("error", message)
                return {"kind": kind, "ran": False, "message": message}
            if not summary.ran:  # health: Prometheus did not answer
                self._set_state("error", f"{failed}: {summary.message}"[:300])
            elif self.thread is not None and self.thread.is_alive():
                self._clear_error(failed)
            result = asdict(summary)
            result["events"] = [asdict(e) for e in summary.events]
            return result

    def _set_state(self, state: str, message: str | None = None) -> None:
        try:
            with self.db.session() as session:
                row = store.monitor_row(session, self.model_version, create_state=state)
                if row is not None and (row.state, row.message) != (state, message):
                    store.set_state(session, self.model_version, state, message)
        except Exception as exc:  # the database is away: the next run tries again
            log.warning("monitor %s: state %s not stored: %s", self.model_version, state, type(exc).__name__)

    def _clear_error(self, failed: str) -> None:
        """Back to ``active`` after a good run, unless the error is another kind's (a failing drift run is not
        hidden by the health runs that succeed between them)."""
        try:
            with self.db.session() as session:
                row = store.monitor_row(session, self.model_version)
                if row is None or row.state == "active" or (row.state == "error" and not (row.message or "")
                                                            .startswith(failed)):
                    return
        except Exception:
            return
        self._set_state("active")

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
        with self.lock:
            self.runner.close()
            self._set_state("stopped")

    def ping(self) -> str:
        return self.model_version


def monitor_handle(model_version: str) -> Any | None:
    try:
        return ray.get_actor(monitor_actor_name(model_version), namespace=MONITOR_NAMESPACE)
    except ValueError:
        return None


def start_monitor(settings: Settings, db: Database, model_version: str, database: str = "default") -> tuple[str, str]:
    """Start (or keep) the monitor of a model version; returns (state, message). A model without reference
    statistics stays ``pending``; an unknown version raises ``ModelNotFoundError``."""
    registry = open_registry(settings)
    read_card(registry, model_version)
    try:
        load_reference(registry, model_version)
    except NoReferenceError as exc:
        with db.session() as session:
            store.set_state(session, model_version, "pending", str(exc))
        return "pending", str(exc)
    with db.session() as session:
        row = store.monitor_row(session, model_version)
        if row is None or row.state == "pending":  # first start: image drift covers what is scored from now on
            store.set_state(session, model_version, "ready", last_prediction_id=store.newest_prediction_id(session,
                                                                                                         model_version))
        elif row.state == "stopped":
            store.set_state(session, model_version, "ready")
    actor = MonitorActor.options(name=monitor_actor_name(model_version), namespace=MONITOR_NAMESPACE,
                                 lifetime="detached", get_if_exists=True,
                                 runtime_env={"env_vars": settings.env_for_workers()}).remote(model_version, database)
    state = ray.get(actor.start.remote(), timeout=120)
    return state, ""


def stop_monitor(db: Database, model_version: str) -> bool:
    """Stop and remove the monitor's actor; its figures, alerts and streaks stay. False if none ran."""
    actor = monitor_handle(model_version)
    if actor is None:
        with db.session() as session:
            if store.monitor_row(session, model_version) is not None:
                store.set_state(session, model_version, "stopped")
        return False
    try:
        ray.get(actor.stop.remote(), timeout=90)  # it records "stopped" in the database it monitors from
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
        log.warning("monitor %s did not stop in time (%s); killing it", model_version, type(exc).__name__)
        with db.session() as session:
            store.set_state(session, model_version, "stopped")
    finally:
        ray.kill(actor, no_restart=True)
    return True


def run_monitor_now(model_version: str, kind: str = "drift", timeout_s: float = 600) -> dict[str, Any]:
    actor = monitor_handle(model_version)
    if actor is None:
        raise ModelNotFoundError(f"no monitor runs for model {model_version}: `xraylab monitor start` first")
    return ray.get(actor.run_now.remote(kind), timeout=timeout_s)
