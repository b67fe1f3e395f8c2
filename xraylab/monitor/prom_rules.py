"""Prometheus rules from the monitor's thresholds: what ``cluster/local/prometheus.sh`` loads.

``rules_for(thresholds)`` gives a rules document with two groups:

* ``xraylab-health``: a recording rule ``xraylab:<metric>`` for each of ``health.HEALTH_QUERIES``;
* ``xraylab-alerts``: two alerts per limit, ``Xraylab<Metric>Warning`` (``severity: warning``, past the soft
  limit but not the hard one) and ``Xraylab<Metric>Critical`` (``severity: critical``, past the hard limit),
  as ``Limit.status`` has it; past means ``>`` for direction ``above`` and ``<`` for ``below``. A drift or
  performance limit compares the monitor's gauge ``ray_xraylab_monitor_value{metric="<name>"}`` (so it fires
  per hospital and model version), a health limit the recording rule. ``for:`` is ``(breaches - 1)``
  monitor runs of the limit's kind (``XRAYLAB_MONITOR_DRIFT_INTERVAL_S`` for drift and performance, whose
  gauge changes once per drift run; ``XRAYLAB_MONITOR_HEALTH_INTERVAL_S`` for health), so Prometheus and the
  monitor's own alerts count breaches alike.

``write_rules`` writes the document atomically (Prometheus never reads half a file) and ``reload_prometheus``
asks a running Prometheus (started with ``--web.enable-lifecycle``) to read it again.

    python -m xraylab.monitor.prom_rules --out PATH [--thresholds FILE] [--interval SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from xraylab.monitor.health import HEALTH_QUERIES, MONITOR_GAUGE_EXPORTED
from xraylab.monitor.thresholds import Limit, Thresholds, ThresholdsError, default_thresholds

__all__ = ["rules_for", "write_rules", "reload_prometheus", "alert_name", "recording_rule",
           "run_intervals_s", "rules_file", "HEALTH_GROUP", "ALERTS_GROUP"]

if TYPE_CHECKING:
    from xraylab.settings import Settings

log = logging.getLogger("xraylab.monitor.prom_rules")

HEALTH_GROUP = "xraylab-health"
ALERTS_GROUP = "xraylab-alerts"


def recording_rule(metric: str) -> str:
    """The series name the health group records ``metric`` as."""
    return f"xraylab:{metric}"


def alert_name(metric: str, severity: str) -> str:
    """``image``, ``critical`` -> ``XraylabImageCritical``; ``f1_score`` -> ``XraylabF1ScoreWarning``."""
    return "Xraylab" + "".join(part[:1].upper() + part[1:] for part in metric.split("_")) + severity.capitalize()


def _number(value: float) -> str:
    return repr(float(value))


def _subject(metric: str, limit: Limit) -> str:
    if limit.type == "health":
        return recording_rule(metric)
    return f'{MONITOR_GAUGE_EXPORTED}{{metric="{metric}"}}'


def _alerts(metric: str, limit: Limit, interval_s: int) -> list[dict[str, Any]]:
    past, within = (">", "<=") if limit.direction == "above" else ("<", ">=")
    subject = _subject(metric, limit)
    wait = f"{(limit.breaches - 1) * interval_s}s"
    where = "" if limit.type == "health" else \
        " (hospital {{ $labels.hospital }}, model version {{ $labels.model_version }})"
    worse = "higher" if limit.direction == "above" else "lower"
    rules = []
    for severity, bound, expr in (
        # Warning: past soft but not past hard (critical takes over there), as Limit.status says.
        ("warning", limit.soft, f"{subject} {past} {_number(limit.soft)} {within} {_number(limit.hard)}"),
        ("critical", limit.hard, f"{subject} {past} {_number(limit.hard)}"),
    ):
        kind = "soft" if severity == "warning" else "hard"
        rules.append({
            "alert": alert_name(metric, severity),
            "expr": expr,
            "for": wait,
            "labels": {"severity": severity, "metric": metric, "kind": limit.type},
            "annotations": {
                "summary": f"{metric} {{{{ $value | humanize }}}} is past its {kind} limit {bound:g}{where}",
                "description": (f"{limit.type} metric {metric} is {{{{ $value }}}}{where}; {worse} is worse; "
                                f"soft limit {limit.soft:g}, hard limit {limit.hard:g}, "
                                f"{limit.breaches} evaluation(s) in a row past the limit."),
            },
        })
    return rules


def run_intervals_s() -> dict[str, int]:
    """How often the monitor produces each kind of figure (its settings): ``breaches`` counts those runs."""
    from xraylab.settings import load_settings

    settings = load_settings()
    drift = max(1, round(settings.MONITOR_DRIFT_INTERVAL_S))
    return {"drift": drift, "performance": drift, "health": max(1, round(settings.MONITOR_HEALTH_INTERVAL_S))}


def rules_for(thresholds: Thresholds, *, interval_s: int | None = None) -> dict[str, Any]:
    """The Prometheus rules document (a dict to dump as YAML) for these thresholds. ``for:`` is ``breaches - 1``
    monitor runs of the limit's kind (``interval_s``, if given, for every kind)."""
    intervals = {kind: interval_s for kind in ("drift", "performance", "health")} if interval_s else run_intervals_s()
    recording = [{"record": recording_rule(name), "expr": expr} for name, expr in HEALTH_QUERIES.items()]
    alerts: list[dict[str, Any]] = []
    for metric, limit in thresholds.limits.items():
        alerts.extend(_alerts(metric, limit, intervals[limit.type]))
    return {"groups": [{"name": HEALTH_GROUP, "rules": recording}, {"name": ALERTS_GROUP, "rules": alerts}]}


def rules_file(settings: Settings) -> Path:
    """Where the project's Prometheus reads the rules (cluster/local/prometheus.sh passes the same path)."""
    return settings.STATE_DIR / "prometheus" / "rules" / "xraylab.yml"


def write_rules(thresholds: Thresholds, path: Path | str, *, interval_s: int | None = None) -> Path:
    """Write ``rules_for(thresholds)`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Generated by xraylab.monitor.prom_rules from the monitor's thresholds; edits are lost.\n"
    text += yaml.safe_dump(rules_for(thresholds, interval_s=interval_s), sort_keys=False, width=1_000)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def reload_prometheus(prometheus_url: str, timeout: float = 5) -> bool:
    """POST ``/-/reload``: True when Prometheus took the new config and rules; False (never an exception)
    when it is down or refused them (its answer is logged)."""
    request = urllib.request.Request(prometheus_url.rstrip("/") + "/-/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        log.warning("Prometheus at %s refused to reload (%s): %s", prometheus_url, exc.code, detail)
        return False
    except OSError as exc:
        log.warning("Prometheus at %s is unreachable: %s", prometheus_url, getattr(exc, "reason", exc))
        return False


def _thresholds_in_effect(path: Path | str | None) -> Thresholds:
    """The thresholds to generate rules from: the file named, else those stored in the default database
    (``xraylab monitor thresholds FILE``), else the defaults shipped with the monitor."""
    if path:
        return Thresholds.load(Path(path))
    try:
        from xraylab.db.monitoring import get_thresholds
        from xraylab.db.session import Database, schema_is_current
        from xraylab.settings import load_settings

        db = Database(load_settings().database_url())
        try:
            if schema_is_current(db.engine):
                with db.session() as session:
                    return get_thresholds(session)
        finally:
            db.dispose()
    except Exception as exc:  # no database yet (a first start): the defaults
        log.info("thresholds from the defaults: %s", type(exc).__name__)
    return default_thresholds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xraylab.monitor.prom_rules", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the rules file to write")
    parser.add_argument("--thresholds", type=Path, default=None, help="a thresholds JSON file (default: in effect)")
    parser.add_argument("--interval", type=int, default=None,
                        help="seconds per breach for every limit (default: the monitor's run intervals)")
    args = parser.parse_args(argv)
    try:
        thresholds = _thresholds_in_effect(args.thresholds)
        path = write_rules(thresholds, args.out, interval_s=args.interval)
    except (ThresholdsError, ValueError, OSError) as exc:
        sys.stderr.write(f"prom_rules: {exc}\n")
        return 1
    sys.stderr.write(f"prom_rules: {len(thresholds.limits)} limits -> {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
