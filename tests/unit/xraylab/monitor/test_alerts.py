"""Alerts fire once per crossing, resolve when the metric comes back, and reach a real webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from xraylab.monitor.alerts import AlertEvent, LogSink, Streak, WebhookSink, advance, deliver, expire
from xraylab.monitor.thresholds import Limit

IMAGE = Limit(type="drift", soft=0.42, hard=0.55)


def _run(values: list[float], limit: Limit = IMAGE) -> list[list[tuple[str, str]]]:
    streak = Streak()
    out = []
    for value in values:
        events = advance(streak, limit.status(value), value, limit, model_version="m1", metric="image",
                         hospital="all")
        out.append([(e.event, e.severity) for e in events])
    return out


def test_fires_once_per_crossing_and_resolves() -> None:
    assert _run([0.1, 0.9, 0.95, 0.9, 0.1, 0.1]) == [
        [], [("fired", "critical")], [], [], [("resolved", "critical")], []]


def test_escalation_and_no_storm_at_the_hard_limit() -> None:
    assert _run([0.45, 0.6, 0.45, 0.0]) == [
        [("fired", "warning")],
        [("resolved", "warning"), ("fired", "critical")],
        [],  # milder but still past a limit: the critical alert stays open
        [("resolved", "critical")]]
    assert _run([0.56, 0.54, 0.56, 0.54, 0.56]) == [[("fired", "critical")], [], [], [], []]


def test_breaches_count_runs_past_either_limit() -> None:
    limit = Limit(type="drift", soft=0.42, hard=0.55, breaches=2)
    assert _run([0.45, 0.6, 0.45, 0.6], limit) == [[], [("fired", "critical")], [], []]


def test_an_alert_whose_figure_is_gone_resolves() -> None:
    streak = Streak()
    advance(streak, "critical", 0.9, IMAGE, model_version="m1", metric="image", hospital="riverside")
    kw = {"model_version": "m1", "metric": "image", "hospital": "riverside", "after_runs": 3}
    assert expire(streak, IMAGE, **kw) == [] and expire(streak, IMAGE, **kw) == []
    [event] = expire(streak, IMAGE, **kw)
    assert (event.event, event.severity, event.value) == ("resolved", "critical", None)
    assert "no figure any more" in event.message and streak.open == "ok"
    advance(streak, "critical", 0.9, IMAGE, model_version="m1", metric="image", hospital="riverside")
    [event] = expire(streak, None, **kw)  # its limit removed from the thresholds: at once
    assert event.event == "resolved"


def test_consecutive_breaches_before_firing() -> None:
    limit = Limit(type="drift", soft=0.42, hard=0.55, breaches=2)
    # one bad run alone does not fire; two in a row do; one good run alone does not resolve
    assert _run([0.9, 0.1, 0.9, 0.9, 0.1, 0.9, 0.1, 0.1], limit) == [
        [], [], [], [("fired", "critical")], [], [], [], [("resolved", "critical")]]


def test_performance_fires_below() -> None:
    accuracy = Limit(type="performance", soft=0.8, hard=0.7)
    assert _run([0.9, 0.6, 0.95], accuracy) == [[], [("fired", "critical")], [("resolved", "critical")]]


def test_webhook_receives_the_json_and_a_dead_sink_is_counted() -> None:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        event = AlertEvent("fired", "m1", "image", "riverside", "critical", 0.91, 0.55)
        dead = WebhookSink("http://127.0.0.1:9/hook", timeout_s=1)  # nothing listens on port 9
        dead.name = "dead-webhook"
        failures = deliver([event, event], [LogSink(), WebhookSink(f"http://127.0.0.1:{server.server_port}/hook"),
                                            dead])
    finally:
        server.shutdown()
    assert failures == {"dead-webhook": 2} and len(received) == 2
    assert received[0]["metric"] == "image" and received[0]["severity"] == "critical"
    assert received[0]["hospital"] == "riverside" and "past its hard limit 0.55" in received[0]["message"]
