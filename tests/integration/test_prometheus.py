"""The project's Prometheus (cluster/local/prometheus.sh) scraping a Ray node started here, with rules written
by xraylab.monitor.prom_rules: the monitor's gauge arrives, Ray's own metrics arrive, and a drift figure past
its hard limit fires the critical alert. Its lifecycle API is off: POST /-/reload and /-/quit are refused (it
is reloaded with SIGHUP, prom_rules.reload_prometheus)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from xraylab.monitor import prom_rules
from xraylab.monitor.health import (
    HEALTH_QUERIES,
    MONITOR_GAUGE,
    MONITOR_GAUGE_EXPORTED,
    MONITOR_GAUGE_TAGS,
    read_health,
)
from xraylab.monitor.thresholds import Thresholds, default_thresholds

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)
WAIT_S = 90
RAY_SYSTEM_METRIC = "ray_node_cpu_utilization"  # exported by the node's reporter agent within seconds


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode())


def instant(prometheus: str, promql: str) -> list[dict]:
    body = get_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert body["status"] == "success", body
    return body["data"]["result"]


def firing(prometheus: str) -> dict[str, dict]:
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return {a["labels"]["alertname"]: a for a in alerts if a["state"] == "firing"}


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture()
def ray_node(settings):
    """A Ray node of this test's own whose metrics export port is the one Prometheus scrapes."""
    import ray

    if ray.is_initialized():  # a driver an earlier test module left behind: its node has another port
        ray.shutdown()
    assert not port_in_use(settings.RAY_METRICS_PORT), (
        f"port {settings.RAY_METRICS_PORT} (XRAYLAB_RAY_METRICS_PORT) is taken: another Ray node exports there")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=settings.RAY_METRICS_PORT)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture()
def rules_file(settings):
    """The rules file prometheus.sh generated, put back as it was (and reloaded) afterwards."""
    path = Path(settings.STATE_DIR) / "prometheus" / "rules" / "xraylab.yml"
    assert path.exists(), f"{path} is missing: is Prometheus started by cluster/local/prometheus.sh?"
    original = path.read_text()
    yield path
    tmp = path.with_name(f".{path.name}.restore")
    tmp.write_text(original)
    tmp.replace(path)
    assert prom_rules.reload_prometheus(settings.PROMETHEUS_URL), "Prometheus did not reload the restored rules"


def test_gauge_scraped_and_critical_alert_fires(settings, ray_node, rules_file) -> None:
    prometheus = settings.PROMETHEUS_URL.rstrip("/")
    started = time.monotonic()

    @ray_node.remote(num_cpus=0)
    class Monitor:
        def __init__(self) -> None:
            from ray.util.metrics import Gauge

            self.gauge = Gauge(MONITOR_GAUGE, "the monitor's figures", tag_keys=MONITOR_GAUGE_TAGS)

        def set(self, metric: str, value: float) -> bool:
            self.gauge.set(value, {"metric": metric, "hospital": "all", "model_version": "t"})
            return True

    monitor = Monitor.remote()
    assert ray_node.get(monitor.set.remote("image", 0.9), timeout=60)

    limits = json.loads(default_thresholds().to_json())
    limits["image"].update(soft=0.4, hard=0.5)
    prom_rules.write_rules(Thresholds.parse(limits), rules_file)
    assert prom_rules.reload_prometheus(prometheus), "Prometheus refused to reload the rules"
    rule_names = {r["name"]
                  for g in get_json(f"{prometheus}/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    assert {"XraylabImageCritical", "xraylab:replicas_alive"} <= rule_names

    seen: dict[str, float] = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and len(seen) < 3:
        if "gauge" not in seen:
            series = instant(prometheus, MONITOR_GAUGE_EXPORTED + '{model_version="t"}')
            if series:
                labels, value = series[0]["metric"], float(series[0]["value"][1])
                assert (labels["metric"], labels["hospital"], value) == ("image", "all", 0.9), series
                assert labels["job"] == "ray"
                seen["gauge"] = time.monotonic() - started
        if "ray" not in seen and instant(prometheus, RAY_SYSTEM_METRIC):
            seen["ray"] = time.monotonic() - started
        if "alert" not in seen:
            alert = firing(prometheus).get("XraylabImageCritical")
            if alert and alert["labels"].get("model_version") == "t":
                assert alert["labels"]["severity"] == "critical" and alert["labels"]["metric"] == "image"
                assert float(alert["value"]) == pytest.approx(0.9)
                seen["alert"] = time.monotonic() - started
        time.sleep(1)
    assert len(seen) == 3, f"after {WAIT_S} s only {sorted(seen)} of gauge, ray, alert arrived: {seen}"
    log.info("seconds from the gauge's set to: %s", {k: round(v, 1) for k, v in seen.items()})
    # 0.9 is past the hard limit: critical, and the warning band (soft, hard] does not hold it.
    assert "XraylabImageWarning" not in firing(prometheus)

    reading = read_health(prometheus)
    assert reading.error is None, reading.error
    assert set(reading.values) == set(HEALTH_QUERIES)  # None without a Serve app: nothing to measure


def test_the_lifecycle_api_is_refused(settings) -> None:
    """Whoever reaches Prometheus' port cannot reload or stop it: started without --web.enable-lifecycle."""
    prometheus = settings.PROMETHEUS_URL.rstrip("/")
    for path in ("/-/reload", "/-/quit"):  # /-/quit only once /-/reload was refused: an old instance stays up
        request = urllib.request.Request(prometheus + path, data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403, (path, refused.value.read())
    with urllib.request.urlopen(f"{prometheus}/-/ready", timeout=5) as response:
        assert response.status == 200  # still running after the refused /-/quit
    assert prom_rules.reload_prometheus(settings.PROMETHEUS_URL), "SIGHUP to the recorded PID did not reload it"
