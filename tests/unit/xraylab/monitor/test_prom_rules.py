"""The Prometheus rules generated from thresholds (checked by the real promtool), and the Grafana dashboard's
metric names and limits."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ingest.metrics import EXPORTED_NAMES
from xraylab.monitor import prom_rules
from xraylab.monitor.health import (
    BREAKDOWN_QUERIES,
    HEALTH_QUERIES,
    MONITOR_GAUGE,
    MONITOR_GAUGE_EXPORTED,
    SERVE_METRICS,
    read_health,
)
from xraylab.monitor.thresholds import METRICS, Thresholds, default_thresholds

ROOT = Path(__file__).resolve().parents[4]
DASHBOARD = ROOT / "cluster" / "grafana" / "xraylab-dashboard.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool is not installed")

CUSTOM = {
    "image": {"type": "drift", "soft": 0.3, "hard": 0.5, "breaches": 3},
    "recall": {"type": "performance", "soft": 0.9, "hard": 0.85},
    "specificity": {"type": "performance", "soft": 0.9, "hard": 0.8, "breaches": 2},
    "latency_p50_ms": {"type": "health", "soft": 100, "hard": 250},
    "request_rate": {"type": "health", "soft": 1, "hard": 0.1, "direction": "below", "breaches": 4},
    "consumer_lag": {"type": "health", "soft": 50, "hard": 500, "breaches": 2},
}


def promtool_check(path: Path) -> str:
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def alerts(doc: dict) -> dict[str, dict]:
    group = next(g for g in doc["groups"] if g["name"] == prom_rules.ALERTS_GROUP)
    return {rule["alert"]: rule for rule in group["rules"]}


@needs_promtool
def test_default_rules_pass_promtool(tmp_path: Path) -> None:
    thresholds = default_thresholds()
    path = prom_rules.write_rules(thresholds, tmp_path / "rules" / "xraylab.yml", interval_s=5)
    out = promtool_check(path)
    expected = len(HEALTH_QUERIES) + 2 * len(thresholds.limits)
    assert f"SUCCESS: {expected} rules found" in out
    doc = yaml.safe_load(path.read_text())
    recorded = {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    assert recorded == {f"xraylab:{name}" for name in HEALTH_QUERIES}
    assert set(alerts(doc)) == {prom_rules.alert_name(m, s) for m in thresholds.limits for s in ("warning", "critical")}
    assert not list(path.parent.glob(".*.tmp")), "the temporary file of the atomic write was left behind"


@needs_promtool
def test_custom_thresholds_file_through_the_cli(tmp_path: Path) -> None:
    source = tmp_path / "thresholds.json"
    source.write_text(json.dumps(CUSTOM))
    out = tmp_path / "custom.yml"
    assert prom_rules.main(["--out", str(out), "--thresholds", str(source), "--interval", "10"]) == 0
    promtool_check(out)
    rules = alerts(yaml.safe_load(out.read_text()))
    assert len(rules) == 2 * len(CUSTOM)
    assert rules["XraylabImageCritical"]["for"] == "20s"  # breaches 3, 10 s evaluations
    assert rules["XraylabSpecificityWarning"]["for"] == "10s"
    assert rules["XraylabRequestRateCritical"]["for"] == "30s"


def test_cli_refuses_a_bad_thresholds_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"image": {"type": "drift", "soft": 0.6, "hard": 0.5}}))
    out = tmp_path / "never.yml"
    assert prom_rules.main(["--out", str(out), "--thresholds", str(bad)]) == 1
    assert not out.exists()


def test_directions_give_the_comparison() -> None:
    rules = alerts(prom_rules.rules_for(Thresholds.parse(CUSTOM), interval_s=5))
    # below: lower is worse
    assert rules["XraylabRecallCritical"]["expr"] == f'{MONITOR_GAUGE_EXPORTED}{{metric="recall"}} < 0.85'
    assert rules["XraylabRecallWarning"]["expr"] == f'{MONITOR_GAUGE_EXPORTED}{{metric="recall"}} < 0.9 >= 0.85'
    assert rules["XraylabRequestRateCritical"]["expr"] == "xraylab:request_rate < 0.1"
    # above: higher is worse
    assert rules["XraylabImageCritical"]["expr"] == f'{MONITOR_GAUGE_EXPORTED}{{metric="image"}} > 0.5'
    assert rules["XraylabImageWarning"]["expr"] == f'{MONITOR_GAUGE_EXPORTED}{{metric="image"}} > 0.3 <= 0.5'
    assert rules["XraylabConsumerLagCritical"]["expr"] == "xraylab:consumer_lag > 500.0"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] == ("critical" if name.endswith("Critical") else "warning")
        assert rule["labels"]["metric"] in CUSTOM
        assert "{{ $value" in rule["annotations"]["summary"] and "{{ $value" in rule["annotations"]["description"]


def test_breaches_set_for() -> None:
    rules = alerts(prom_rules.rules_for(Thresholds.parse(CUSTOM), interval_s=5))
    assert rules["XraylabImageWarning"]["for"] == rules["XraylabImageCritical"]["for"] == "10s"  # breaches 3
    assert rules["XraylabRecallCritical"]["for"] == "0s"  # breaches 1
    assert rules["XraylabRequestRateWarning"]["for"] == "15s"


def test_breaches_count_monitor_runs_of_their_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRAYLAB_MONITOR_DRIFT_INTERVAL_S", "300")
    monkeypatch.setenv("XRAYLAB_MONITOR_HEALTH_INTERVAL_S", "60")
    rules = alerts(prom_rules.rules_for(Thresholds.parse(CUSTOM)))
    assert rules["XraylabImageCritical"]["for"] == "600s"  # breaches 3: two more drift runs after the first
    assert rules["XraylabRequestRateWarning"]["for"] == "180s"  # breaches 4: three more health runs


def test_alert_names() -> None:
    assert prom_rules.alert_name("image", "warning") == "XraylabImageWarning"
    assert prom_rules.alert_name("f1_score", "critical") == "XraylabF1ScoreCritical"
    assert prom_rules.alert_name("latency_p99_ms", "critical") == "XraylabLatencyP99MsCritical"


def test_health_queries_cover_the_health_metrics() -> None:
    assert set(HEALTH_QUERIES) == {name for name, kind in METRICS.items() if kind == "health"}
    assert f"ray_{MONITOR_GAUGE}" == MONITOR_GAUGE_EXPORTED


def test_unreachable_prometheus_is_an_error_not_an_exception() -> None:
    reading = read_health("http://127.0.0.1:9", timeout=1)  # the discard port: nothing listens
    assert reading.error and "unreachable" in reading.error
    assert set(reading.values) == set(HEALTH_QUERIES) and all(v is None for v in reading.values.values())
    assert set(reading.breakdown) == set(BREAKDOWN_QUERIES)
    assert prom_rules.reload_prometheus("http://127.0.0.1:9", timeout=1) is False


# --- the Grafana dashboard ---------------------------------------------------------------------------------

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                 "offset", "inf", "nan"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: what is left once strings, label matchers, ranges, grouping
    clauses, function calls, keywords and numbers are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", expr):
        if match.group(1).lower() not in _PROMQL_WORDS:
            names.add(match.group(1))
    return names


def test_metric_name_extraction() -> None:
    expr = ('(sum by (route) (rate(ray_a_total{status_code=~"5.."}[1m])) or vector(0)) / '
            'histogram_quantile(0.99, sum by (le) (rate(ray_b_bucket[$__rate_interval]))) + xraylab:c offset 5m')
    assert metric_names(expr) == {"ray_a_total", "ray_b_bucket", "xraylab:c"}


def dashboard_targets() -> list[tuple[dict, dict]]:
    doc = json.loads(DASHBOARD.read_text())
    found = [(panel, target) for panel in doc["panels"] for target in panel.get("targets", [])]
    assert found, "the dashboard has no queries"
    return found


def test_dashboard_uses_only_metrics_the_project_defines() -> None:
    known = set(SERVE_METRICS) | set(EXPORTED_NAMES) | {MONITOR_GAUGE_EXPORTED}
    known |= {prom_rules.recording_rule(name) for name in HEALTH_QUERIES}
    for expr in list(HEALTH_QUERIES.values()) + list(BREAKDOWN_QUERIES.values()):
        known |= metric_names(expr)  # (their names are checked just below)
    unknown = {}
    for panel, target in dashboard_targets():
        for name in metric_names(target["expr"]):
            base = next((name.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), name)
            if name not in known and base not in known:
                unknown.setdefault(panel["title"], []).append(name)
    assert not unknown, f"dashboard panels use metrics nothing defines: {unknown}"


def test_health_queries_use_only_known_metrics() -> None:
    known = set(SERVE_METRICS) | set(EXPORTED_NAMES)
    for expr in list(HEALTH_QUERIES.values()) + list(BREAKDOWN_QUERIES.values()):
        for name in metric_names(expr):
            assert name.removesuffix("_bucket") in known, (name, expr)


@needs_promtool
def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{i}", "expr": target["expr"].replace("$hospital", ".*")
              .replace("$model_version", ".*").replace("$__rate_interval", "1m")}
             for i, (_, target) in enumerate(dashboard_targets())]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool_check(path)


def test_dashboard_limits_match_the_default_thresholds() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["schemaVersion"] >= 36
    assert any(v["name"] == "DS_PROMETHEUS" and v["type"] == "datasource" for v in doc["templating"]["list"])
    limits = default_thresholds().limits
    checked = set()
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        exprs = " ".join(t["expr"] for t in panel["targets"])
        named = set(re.findall(r'metric="(\w+)"', exprs))
        if not named:
            continue
        assert len(named) == 1, panel["title"]
        metric = named.pop()
        limit = limits[metric]
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert {s["value"] for s in steps if s["value"] is not None} == {limit.soft, limit.hard}, panel["title"]
        worst = max(steps, key=lambda s: -1 if s["value"] is None else s["value"])
        assert worst["color"] == ("red" if limit.direction == "above" else "green"), panel["title"]
        checked.add(metric)
    kinds = {METRICS[m] for m in checked}
    assert {"image", "prediction"} <= checked and kinds == {"drift", "performance"}
    assert {"accuracy", "recall", "precision", "f1_score"} <= checked
