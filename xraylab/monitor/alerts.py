"""Alerts: fire once when a limit is crossed, resolve when the metric comes back; and where they go.

Each (metric, hospital) series keeps a *streak*: the status of its last runs and how many runs in a row had
it. An alert fires when a status other than ``ok`` has held for the limit's ``breaches`` runs in a row and is
not already the open alert (``warning`` for the soft limit, ``critical`` for the hard one); while the metric
stays bad nothing more is sent. When the status changes for as many runs (back to ``ok``, or from warning to
critical), the open alert is resolved, and a new one fires for the new severity. Streaks and open alerts live
in the database, so a restarted monitor neither repeats an alert nor forgets one.

Delivery: the log (always), the Kafka topic ``XRAYLAB_ALERT_TOPIC`` (JSON) and an optional webhook
(``XRAYLAB_ALERT_WEBHOOK_URL``, a JSON POST). A sink that fails is logged; it never stops the monitor, and
the alert stays in the database for the dashboard.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from xraylab.monitor.thresholds import SEVERITY, Limit, Status

__all__ = ["AlertEvent", "Streak", "advance", "expire", "AlertSink", "LogSink", "KafkaSink", "WebhookSink", "deliver"]

log = logging.getLogger("xraylab.monitor.alerts")


@dataclass(frozen=True)
class AlertEvent:
    """What the sinks receive (as JSON): ``fired`` or ``resolved``, for one metric of one model version."""

    event: Literal["fired", "resolved"]
    model_version: str
    metric: str
    hospital: str
    severity: str
    value: float | None
    limit: float
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def message(self) -> str:
        where = "all hospitals" if self.hospital == "all" else f"hospital {self.hospital}"
        value = "no value" if self.value is None else f"{self.value:.3f}"
        if self.event == "fired":
            return (f"{self.severity.upper()}: {self.metric} of model {self.model_version} at {where} is {value}, "
                    f"past its {'hard' if self.severity == 'critical' else 'soft'} limit {self.limit:g}")
        if self.value is None:
            return f"RESOLVED: {self.metric} of model {self.model_version} at {where} has no figure any more"
        return f"RESOLVED: {self.metric} of model {self.model_version} at {where} is back ({value})"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "message": self.message})


@dataclass
class Streak:
    """One series' runs in a row past a limit (``bad``) and within its limits (``good``), the open alert's
    severity (``open``, "ok" when none), and how many runs in a row had no figure (``missing``)."""

    bad: int = 0
    good: int = 0
    open: Status = "ok"
    missing: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def advance(streak: Streak, status: Status, value: float | None, limit: Limit, *, model_version: str,
            metric: str, hospital: str) -> list[AlertEvent]:
    """Record one run's status in ``streak`` (in place) and return the alerts it fires or resolves.

    An alert fires after ``limit.breaches`` runs in a row past a limit (either one), with the severity of the
    run that completes them; a worse severity later (soft to hard) resolves the open alert and fires the worse
    one; a milder one while still past a limit changes nothing (no storm while a figure wavers at the hard
    limit). It resolves after as many runs in a row within the limits."""
    streak.missing = 0
    if status == "ok":
        streak.bad, streak.good = 0, streak.good + 1
    else:
        streak.bad, streak.good = streak.bad + 1, 0
    events: list[AlertEvent] = []
    if status != "ok" and streak.bad >= limit.breaches and SEVERITY[status] > SEVERITY[streak.open]:
        if streak.open != "ok":
            events.append(_resolved(streak, value, limit, model_version, metric, hospital))
        events.append(AlertEvent("fired", model_version, metric, hospital, status, value, _limit_of(limit, status)))
        streak.open = status
    elif status == "ok" and streak.open != "ok" and streak.good >= limit.breaches:
        events.append(_resolved(streak, value, limit, model_version, metric, hospital))
        streak.open = "ok"
    return events


def expire(streak: Streak, limit: Limit | None, *, model_version: str, metric: str, hospital: str,
           after_runs: int) -> list[AlertEvent]:
    """A run without a figure for this series (too few images or labels now, a hospital gone quiet, or its
    limit removed from the thresholds: ``limit`` None): after ``after_runs`` such runs in a row, or at once
    when the limit is gone, its open alert is resolved rather than left open for ever."""
    streak.missing += 1
    if streak.open == "ok" or (limit is not None and streak.missing < after_runs):
        return []
    event = AlertEvent("resolved", model_version, metric, hospital, streak.open, None,
                       _limit_of(limit, streak.open) if limit else float("nan"))
    streak.open, streak.bad, streak.good = "ok", 0, 0
    return [event]


def _resolved(streak: Streak, value: float | None, limit: Limit, model_version: str, metric: str,
              hospital: str) -> AlertEvent:
    return AlertEvent("resolved", model_version, metric, hospital, streak.open, value, _limit_of(limit, streak.open))


def _limit_of(limit: Limit, severity: str) -> float:
    return limit.hard if severity == "critical" else limit.soft


class AlertSink(Protocol):
    name: str

    def send(self, event: AlertEvent) -> None: ...


class LogSink:
    name = "log"

    def send(self, event: AlertEvent) -> None:
        level = logging.INFO if event.event == "resolved" else (
            logging.CRITICAL if event.severity == "critical" else logging.WARNING)
        log.log(level, "alert %s", event.message)


class KafkaSink:
    """JSON alerts on a Kafka topic, keyed by model version and metric; acknowledged before ``send`` returns."""

    name = "kafka"

    def __init__(self, client_config: dict[str, Any], topic: str) -> None:
        """``client_config``: kafka-python's connection arguments for the monitor's user
        (``xraylab.kafka_security.client_config(settings, "monitor")``)."""
        self.client_config, self.topic = client_config, topic
        self._producer: Any = None

    def send(self, event: AlertEvent) -> None:
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(**self.client_config, acks="all", retries=3,
                                           request_timeout_ms=10000, max_block_ms=10000)
        key = f"{event.model_version}:{event.metric}:{event.hospital}".encode()
        self._producer.send(self.topic, key=key, value=event.to_json().encode()).get(timeout=15)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


class WebhookSink:
    """POSTs the alert as JSON; the URL (which may carry a token) is never logged."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the alert webhook URL must start with http:// or https://")
        self.url, self.timeout_s = url, timeout_s

    def send(self, event: AlertEvent) -> None:
        request = urllib.request.Request(self.url, data=event.to_json().encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (http/https only)
            response.read()


def deliver(events: Sequence[AlertEvent], sinks: Sequence[AlertSink]) -> dict[str, int]:
    """Send each event to every sink; returns the events each failing sink did not take (logged, never
    raised). A sink that fails is not tried again within the call, so a broker that is down costs one timeout
    per run, not one per alert."""
    failures: dict[str, int] = {}
    for event in events:
        for sink in sinks:
            if failures.get(sink.name):  # down: not tried again for the rest of this run (the alert is stored)
                failures[sink.name] += 1
                continue
            try:
                sink.send(event)
            except Exception as exc:  # a sink down must not stop the monitor
                failures[sink.name] = failures.get(sink.name, 0) + 1
                log.error("alert sink %s failed for %s/%s: %s", sink.name, event.metric, event.hospital,
                          type(exc).__name__)
    return failures
