"""The serving system's health, read from the project's Prometheus (``cluster/local/prometheus.sh``).

Prometheus scrapes the metrics export port of the Ray node (``XRAYLAB_RAY_METRICS_PORT``), where Ray exports
Ray Serve's own metrics, the ingest actors' (``ingest/metrics.py``) and the monitor's gauge, each name with the
prefix ``ray_`` (a counter also gets the suffix ``_total`` unless its name has it). The names below are those
of the installed Ray (2.60): ``serve_num_http_requests`` (tags route, method, application, status_code),
``serve_http_request_latency_ms`` (histogram, the same tags; measured at the proxy),
``serve_deployment_request_counter`` and ``serve_deployment_processing_latency_ms`` (per replica: tags
deployment, replica, application, route) and ``serve_deployment_replica_healthy`` (the controller's: one series
per replica, 1 healthy / 0 not, or one per deployment holding the count, by
``RAY_SERVE_CONTROLLER_METRICS_INCLUDE_HIGH_CARDINALITY_TAGS``; summed per deployment it is the count either way).

``HEALTH_QUERIES`` gives one PromQL expression per health metric of ``thresholds.METRICS``; each evaluates to
one number, or to nothing while there is nothing to measure (no Serve app, no traffic in the window: a ratio or
quantile of nothing is NaN, which ``read_health`` reports as ``None`` too). ``prom_rules`` records them as
``xraylab:<metric>`` and alerts on them. ``BREAKDOWN_QUERIES`` split the same figures, under the same names,
per route, deployment, partition or reason (plus a few more views). Only the standard library here
(``urllib``), so any process can read health. An error never carries the URL's credentials
(``xraylab.redact``): it is stored, shown to every doctor and logged.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from xraylab.redact import redact_url, scrub

__all__ = ["HEALTH_QUERIES", "BREAKDOWN_QUERIES", "SERVE_METRICS", "MONITOR_GAUGE", "MONITOR_GAUGE_TAGS",
           "MONITOR_GAUGE_EXPORTED", "HealthReading", "read_health", "query"]

# The gauge the monitor actor sets (ray.util.metrics.Gauge) for every drift and performance figure, tagged
# with the metric's name (thresholds.METRICS), the hospital ("all" for the whole) and the model version.
MONITOR_GAUGE = "xraylab_monitor_value"
MONITOR_GAUGE_TAGS = ("metric", "hospital", "model_version")
MONITOR_GAUGE_EXPORTED = f"ray_{MONITOR_GAUGE}"  # as Prometheus sees it

# Ray Serve's metrics as Prometheus sees them (a histogram as <name>_bucket, _sum and _count).
HTTP_REQUESTS = "ray_serve_num_http_requests_total"
HTTP_ERRORS = "ray_serve_num_http_error_requests_total"
HTTP_LATENCY = "ray_serve_http_request_latency_ms"
DEPLOYMENT_REQUESTS = "ray_serve_deployment_request_counter_total"
DEPLOYMENT_ERRORS = "ray_serve_deployment_error_counter_total"
DEPLOYMENT_LATENCY = "ray_serve_deployment_processing_latency_ms"
REPLICA_HEALTHY = "ray_serve_deployment_replica_healthy"
SERVE_METRICS = (HTTP_REQUESTS, HTTP_ERRORS, HTTP_LATENCY, DEPLOYMENT_REQUESTS, DEPLOYMENT_ERRORS,
                 DEPLOYMENT_LATENCY, REPLICA_HEALTHY)

INGEST_LAG = "ray_xraylab_ingest_lag"
INGEST_DEAD_LETTERS = "ray_xraylab_ingest_dead_letters_total"

RATE_WINDOW = "1m"  # request and error rates
SLOW_WINDOW = "5m"  # latency quantiles and dead letters: enough samples to be steady


def _deployment_quantile(q: float) -> str:
    return (f"histogram_quantile({q}, sum by (application, deployment, le) "
            f"(rate({DEPLOYMENT_LATENCY}_bucket[{SLOW_WINDOW}])))")


def _route_quantile(q: float) -> str:
    return f"histogram_quantile({q}, sum by (application, route, le) (rate({HTTP_LATENCY}_bucket[{SLOW_WINDOW}])))"


_HTTP_RATE = f"sum(rate({HTTP_REQUESTS}[{RATE_WINDOW}]))"

HEALTH_QUERIES: dict[str, str] = {
    # HTTP requests per second at Serve's proxy (the ingest actors call the app through a handle: their
    # calls are in the breakdown requests_per_deployment).
    "request_rate": _HTTP_RATE,
    # The share of HTTP responses with a 5xx status (0 when there were requests and none failed).
    "error_rate": f'(sum(rate({HTTP_REQUESTS}{{status_code=~"5.."}}[{RATE_WINDOW}])) or vector(0)) / {_HTTP_RATE}',
    # Processing latency of the slowest deployment (the ingress's includes the calls it makes downstream).
    "latency_p50_ms": f"max({_deployment_quantile(0.5)})",
    "latency_p99_ms": f"max({_deployment_quantile(0.99)})",
    # Records not yet committed, summed over partitions (each partition's series comes from the actor
    # that owns it; an actor sets 0 for a partition it gave up).
    "consumer_lag": f"sum({INGEST_LAG})",
    "dead_letters_per_min": f"60 * sum(rate({INGEST_DEAD_LETTERS}[{SLOW_WINDOW}]))",
    # The fewest healthy replicas of any deployment.
    "replicas_alive": f"min(sum by (application, deployment) ({REPLICA_HEALTHY}))",
}

_HTTP_BY_ROUTE = f"sum by (application, route) (rate({HTTP_REQUESTS}[{RATE_WINDOW}]))"
_HTTP_5XX_BY_ROUTE = f'sum by (application, route) (rate({HTTP_REQUESTS}{{status_code=~"5.."}}[{RATE_WINDOW}]))'

# The same figures split up, keyed by the health metric each one explains (then a few more views).
BREAKDOWN_QUERIES: dict[str, str] = {
    "request_rate": _HTTP_BY_ROUTE,  # per route
    "error_rate": f"({_HTTP_5XX_BY_ROUTE} or 0 * {_HTTP_BY_ROUTE}) / {_HTTP_BY_ROUTE}",  # per route
    "latency_p50_ms": _deployment_quantile(0.5),  # per deployment
    "latency_p99_ms": _deployment_quantile(0.99),  # per deployment
    "consumer_lag": f"sum by (partition) ({INGEST_LAG})",  # per partition
    "dead_letters_per_min": f"60 * sum by (reason) (rate({INGEST_DEAD_LETTERS}[{SLOW_WINDOW}]))",  # per reason
    "replicas_alive": f"sum by (application, deployment) ({REPLICA_HEALTHY})",  # per deployment
    "requests_per_deployment": f"sum by (application, deployment) (rate({DEPLOYMENT_REQUESTS}[{RATE_WINDOW}]))",
    "http_requests_by_status": f"sum by (status_code) (rate({HTTP_REQUESTS}[{RATE_WINDOW}]))",
    "latency_p50_ms_by_route": _route_quantile(0.5),  # end to end at the proxy
    "latency_p99_ms_by_route": _route_quantile(0.99),
}


@dataclass(frozen=True)
class HealthReading:
    """One reading: ``values`` per HEALTH_QUERIES name (None: nothing to measure), ``breakdown`` per
    BREAKDOWN_QUERIES name (label set, value), and ``error`` when Prometheus could not be asked or refused a
    query (then the values it could not give are None)."""

    values: dict[str, float | None] = field(default_factory=dict)
    breakdown: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    error: str | None = None


class PrometheusError(Exception):
    """Prometheus answered with an error, or not at all; ``unreachable`` when it could not be reached."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def query(prometheus_url: str, promql: str, timeout: float = 5.0) -> list[tuple[dict[str, str], float]]:
    """An instant query through ``/api/v1/query``: the vector's (labels, value) pairs; raises PrometheusError."""
    url = prometheus_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    shown = redact_url(prometheus_url)  # the message is stored, shown to every doctor and logged

    def error(message: str, *, unreachable: bool = False) -> PrometheusError:
        return PrometheusError(scrub(message, prometheus_url), unreachable=unreachable)

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:  # 400/422/503 carry a JSON error
        try:
            detail = json.loads(exc.read().decode()).get("error") or exc.reason
        except (ValueError, OSError):
            detail = exc.reason
        raise error(f"Prometheus refused the query ({exc.code}): {detail}") from None
    except OSError as exc:  # URLError, timeouts, resets
        raise error(f"Prometheus at {shown} is unreachable: {getattr(exc, 'reason', exc)}", unreachable=True) from None
    except (http.client.InvalidURL, ValueError) as exc:  # a URL no query can be sent to
        raise error(f"Prometheus at {shown} cannot be asked: {type(exc).__name__}: {exc}", unreachable=True) from None
    try:
        body = json.loads(raw.decode())
    except ValueError as exc:
        raise error(f"Prometheus at {shown} answered something that is not JSON: {exc}") from None
    if body.get("status") != "success":
        raise error(f"Prometheus refused the query: {body.get('error', body)}")
    data = body.get("data", {})
    if data.get("resultType") == "scalar":
        return [({}, float(data["result"][1]))]
    if data.get("resultType") != "vector":
        raise PrometheusError(f"expected an instant vector, got {data.get('resultType')!r}")
    return [(dict(item.get("metric", {})), float(item["value"][1])) for item in data.get("result", [])]


def _one_value(series: list[tuple[dict[str, str], float]]) -> float | None:
    values = [v for _, v in series if math.isfinite(v)]
    return max(values) if values else None  # each query aggregates to one series; max if ever more


def read_health(prometheus_url: str, timeout: float = 5.0) -> HealthReading:
    """Every HEALTH_QUERIES and BREAKDOWN_QUERIES figure now. Never raises: when Prometheus cannot be reached
    (it stops at the first such failure) or refuses a query, ``error`` says so and those figures are None."""
    values: dict[str, float | None] = dict.fromkeys(HEALTH_QUERIES)
    breakdown: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in BREAKDOWN_QUERIES}
    errors: list[str] = []
    jobs = [("value", name, q) for name, q in HEALTH_QUERIES.items()]
    jobs += [("breakdown", name, q) for name, q in BREAKDOWN_QUERIES.items()]
    for kind, name, promql in jobs:
        try:
            series = query(prometheus_url, promql, timeout)
        except PrometheusError as exc:
            if exc.unreachable:
                return HealthReading(values=values, breakdown=breakdown, error=str(exc))
            errors.append(f"{name}: {exc}")
            continue
        except Exception as exc:  # anything else unexpected in the answer: reported, not raised
            errors.append(scrub(f"{name}: {type(exc).__name__}: {exc}", prometheus_url))
            continue
        if kind == "value":
            values[name] = _one_value(series)
        else:
            breakdown[name] = [(labels, v) for labels, v in series if math.isfinite(v)]
    return HealthReading(values=values, breakdown=breakdown, error="; ".join(errors) or None)
