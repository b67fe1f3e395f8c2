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
makes the project's running Prometheus read it again: SIGHUP to the PID ``prometheus.sh`` recorded. That
Prometheus runs without ``--web.enable-lifecycle``: whoever reaches its port cannot reload or stop it.

    python -m xraylab.monitor.prom_rules --out PATH [--thresholds FILE] [--interval SECONDS]
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from xraylab.monitor.health import HEALTH_QUERIES, MONITOR_GAUGE_EXPORTED
from xraylab.monitor.thresholds import Limit, Thresholds, ThresholdsError, default_thresholds
from xraylab.redact import redact_url, scrub

__all__ = ["rules_for", "write_rules", "reload_prometheus", "alert_name", "recording_rule",
           "run_intervals_s", "rules_file", "pid_file", "HEALTH_GROUP", "ALERTS_GROUP"]

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


def pid_file(settings: Settings) -> Path:
    """Where ``cluster/local/prometheus.sh`` records its Prometheus' PID (``$STATE/run/prometheus.pid``)."""
    return settings.STATE_DIR / "run" / "prometheus.pid"


# Prometheus' own gauges of its config reloads: the time of the last successful one (it moves on success only)
# and whether the last one succeeded.
RELOADED_AT = "prometheus_config_last_reload_success_timestamp_seconds"
RELOAD_OK = "prometheus_config_last_reload_successful"


def _reload_state(prometheus_url: str, timeout: float) -> tuple[float, float]:
    """(RELOADED_AT, RELOAD_OK) from Prometheus' ``/metrics``; raises when it cannot be read or lacks them."""
    with urllib.request.urlopen(prometheus_url.rstrip("/") + "/metrics", timeout=timeout) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name in (RELOADED_AT, RELOAD_OK):
            values[name] = float(rest.split()[0])
    if len(values) != 2:
        raise ValueError(f"{redact_url(prometheus_url)}/metrics lacks {RELOADED_AT} and {RELOAD_OK}")
    return values[RELOADED_AT], values[RELOAD_OK]


def _is_prometheus(pid: int) -> bool:
    """Whether ``pid`` is a running ``prometheus`` (a PID file may outlive its process; PIDs are reused)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(argv0) == "prometheus"


def reload_prometheus(prometheus_url: str, timeout: float = 5, *, pid_path: Path | str | None = None) -> bool:
    """Make the project's Prometheus read its config and rules again: SIGHUP to the PID in ``pid_path``
    (default: ``pid_file`` of the settings) once it is checked to be a running ``prometheus``, then wait up to
    ``timeout`` for its ``/metrics`` at ``prometheus_url`` to show the reload. True when it took them; False
    (never an exception) when it is unreachable, not started by ``prometheus.sh`` here, or refused them
    (logged, without the URL's credentials)."""
    shown = redact_url(prometheus_url)
    try:
        before_at, before_ok = _reload_state(prometheus_url, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = scrub(str(getattr(exc, "reason", exc)), prometheus_url)
        log.warning("Prometheus at %s is unreachable: %s", shown, reason)
        return False
    if pid_path is None:
        from xraylab.settings import load_settings

        pid_path = pid_file(load_settings())
    try:
        pid = int(Path(pid_path).read_text().strip())
    except (OSError, ValueError):
        log.warning("no Prometheus PID in %s: only the one cluster/local/prometheus.sh started is reloaded", pid_path)
        return False
    if not _is_prometheus(pid):
        log.warning("PID %d in %s is not a running prometheus: not signalled", pid, pid_path)
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        log.warning("could not signal Prometheus (PID %d): %s", pid, exc)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            reloaded_at, ok = _reload_state(prometheus_url, timeout)
        except (OSError, ValueError, http.client.HTTPException):
            continue
        if reloaded_at != before_at:
            return True
        if before_ok and not ok:
            log.warning("Prometheus (PID %d) refused the new config or rules: see %s", pid,
                        Path(pid_path).with_suffix(".log"))
            return False
    log.warning("Prometheus at %s (PID %d) did not reload within %.0f s", shown, pid, timeout)
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
