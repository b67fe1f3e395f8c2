"""The review app's Monitor tab: for a monitored model version and a hospital (or all), the monitor's state,
the latest figure of each metric against its limits, each metric over time, the latest image drift per
hospital, the alerts, the most atypical images of the last drift run (``xraylab.db.monitoring``), and how far
behind the delivery of results to the PACS and the RIS is (``xraylab.db.outbox``: counts per destination, no
patient data).

Like the worklist, it loads data only in event handlers, after login (the middleware in ``ui/access.py``
guards every route), and the atypical images come through the audited study-picture route.
"""

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ui.monitor_words import METRIC_WORDS, STATE_WORDS, limit_levels, metric_label
from ui.review_views import when
from xraylab.db import monitoring as store
from xraylab.db import outbox
from xraylab.db.models import Study
from xraylab.db.review import record_audit
from xraylab.db.scope import EVERY_HOSPITAL, ReadScope
from xraylab.db.session import Database
from xraylab.monitor.thresholds import ESTIMATED_PREFIX, METRICS, Limit, Thresholds

__all__ = ["MonitorView", "add_monitor_tab", "ALERT_COLUMNS", "DELIVERY_COLUMNS", "MONITOR_CSS"]

log = logging.getLogger("xraylab.ui.monitor")

ALERT_COLUMNS = ["Fired", "Severity", "Metric", "Hospital", "Value", "Limit", "Resolved"]
DELIVERY_COLUMNS = ["Destination", "Waiting", "Oldest waiting for", "Median delay (24 h)", "Sent", "Set aside"]
DRIFT = [m for m, kind in METRICS.items() if kind == "drift"]
PERFORMANCE = ["accuracy", "precision", "recall", "f1_score"]  # plotted (every one has a tile)
HEALTH = [m for m, kind in METRICS.items() if kind == "health"]
TILES = list(METRICS)
NO_MONITOR = "No monitor yet: start one with `xraylab monitor start`."

# The tiles' look, for the caller's ``gr.Blocks(css=...)``: a coloured edge and tint per state. The names are
# written as a doctor reads them ("ROC AUC"), so no text-transform.
MONITOR_CSS = """
.mon-tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.mon-tile { border-radius: 6px; padding: 8px 10px; width: 240px; border-left: 6px solid #888; background: #f6f6f6;
            color: #222; }
.mon-ok { border-left-color: #2e7d32; } .mon-warning { border-left-color: #f9a825; background: #fff8e1; }
.mon-critical { border-left-color: #c62828; background: #ffebee; } .mon-none { border-left-color: #bbb; }
.mon-name { font-size: 13px; font-weight: 600; color: #333; text-transform: none; }
.mon-value { font-size: 22px; font-weight: 600; }
.mon-state { font-size: 13px; margin-left: 6px; }
.mon-critical .mon-state { color: #c62828; } .mon-warning .mon-state { color: #8a6100; }
.mon-meaning { font-size: 11px; color: #444; margin: 2px 0 4px; }
.mon-sub { font-size: 11px; color: #555; }
.mon-atypical-row { display: flex; flex-wrap: wrap; gap: 8px; }
.mon-atypical { margin: 0; width: 160px; font-size: 11px; }
.mon-atypical img { width: 160px; height: 160px; object-fit: cover; background: #111; }
"""


def _limit_words(limit: Limit | None) -> str:
    if limit is None:
        return "No limit: shown for information, never alerts."
    levels = ", ".join(f"{state} {limit.direction} {value:g}" for state, value in limit_levels(limit))
    worse = "higher" if limit.direction == "above" else "lower"
    runs = "a run is" if limit.breaches == 1 else f"{limit.breaches} runs in a row are"
    return f"Limits: {levels}. {worse.capitalize()} is worse; an alert goes out when {runs} past a limit."


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min" if seconds < 3600 else \
        f"{seconds / 3600:.1f} h"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


class MonitorView:
    """What the tab shows, read from the database (no Gradio here, so it is testable on its own)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def snapshot(self, version: str | None, hospital: str | None,
                 scope: ReadScope = EVERY_HOSPITAL) -> dict[str, Any] | None:
        """Everything the tab draws, in one transaction: ``version`` (default: the newest monitored one) and
        ``hospital`` (default: all, or the reader's first) as chosen, or None while no model has a monitor.
        Only the hospitals ``scope`` reads: the figures over all hospitals, their alerts and atypical images are
        a network-wide reader's; the atypical images are the studies ``scope`` reads."""
        with self.db.session() as session:
            monitors = {m["model_version"]: m for m in store.list_monitors(session)}
            if not monitors:
                return None
            version = version if version in monitors else list(monitors)[-1]
            per_hospital = {h: store.latest_results(session, version, h)
                            for h in store.result_hospitals(session, version) if scope.allows(h)}
            choices = ([store.ALL] if scope.network else []) + list(per_hospital)
            if hospital not in choices:
                hospital = choices[0] if choices else None
            names = DRIFT + PERFORMANCE + [ESTIMATED_PREFIX + m for m in PERFORMANCE] + HEALTH
            latest = ({} if hospital is None else per_hospital[hospital] if hospital != store.ALL
                      else store.latest_results(session, version, store.ALL))
            return {"versions": list(monitors), "version": version, "hospitals": choices,
                    "hospital": hospital, "monitor": monitors[version], "thresholds": store.get_thresholds(session),
                    "points": store.series(session, version, names, hospital) if hospital else [],
                    "latest": _readable_atypical(session, latest, scope),
                    "per_hospital": per_hospital,
                    "alerts": [a for a in store.alerts(session, version, limit=100)
                               if scope.network or scope.allows(a["hospital"])]}

    def delivery_table(self) -> list[list[Any]]:
        """Per destination: results waiting, how long the oldest has waited, the median delay from scoring to the
        destination's acknowledgement over the last 24 hours, results sent, and results set aside (refused)."""
        with self.db.session() as session:
            figures = outbox.summary(session)
        return [[f.destination, f.queued, _duration(f.oldest_queued_s), _duration(f.median_lag_s), f.sent, f.failed]
                for f in figures]

    @staticmethod
    def state_markdown(monitor: dict[str, Any], version: str, hospital: str = store.ALL) -> str:
        where = ("all hospitals" if hospital == store.ALL else f"hospital {hospital}" if hospital
                 else "your hospitals (no figures for them yet)")
        text = (f"**Monitor of model `{version}`: {monitor['state']}** · showing {where}" +
                (f" — {monitor['message']}" if monitor["message"] else "") +
                f"  \nLast drift run {_last(monitor['last_drift_at'])} · last health run "
                f"{_last(monitor['last_health_at'])} · open alerts **{monitor['open_alerts']}**")
        return text

    @staticmethod
    def tiles_html(latest: dict[str, dict[str, Any]], thresholds: Thresholds) -> str:
        """A tile per metric with a figure: its name, value and state in words, what it measures, what its
        limits mean, and when it was measured."""
        cells = []
        for metric in TILES:
            result = latest.get(metric)
            if result is None:
                continue
            status = result["status"] if result["value"] is not None else "none"  # no figure: neither ok nor bad
            words = METRIC_WORDS[metric]
            lines = [_limit_words(thresholds.limits.get(metric)), _tile_sample(result),
                     f"Measured {when(result['run_at'])}."]
            cells.append(
                f"<div class='mon-tile mon-{status}' data-metric='{metric}' data-status='{status}'>"
                f"<div class='mon-name'>{words.label}</div>"
                f"<div class='mon-value'>{_fmt(result['value'])} <span class='mon-state'>{STATE_WORDS[status]}</span>"
                f"</div><div class='mon-meaning'>{words.meaning}</div>"
                f"<div class='mon-sub'>{'<br>'.join(line for line in lines if line)}</div></div>")
        if not cells:
            return "<div id='monitor-tiles'>No figures yet: the monitor has not run.</div>"
        return "<div id='monitor-tiles' class='mon-tiles'>" + "".join(cells) + "</div>"

    @staticmethod
    def alert_table(rows: list[dict[str, Any]]) -> list[list[Any]]:
        return [[when(a["fired_at"]), a["severity"], metric_label(a["metric"]), a["hospital"], _fmt(a["value"]),
                 f"{a['limit']:g}", when(a["resolved_at"]) if a["resolved_at"] else "open"] for a in rows]

    @staticmethod
    def atypical_html(latest: dict[str, dict[str, Any]]) -> str:
        items = _atypical(latest)
        if not items:
            return "<div id='atypical'>No atypical images: no drift run yet.</div>"
        cells = "".join(
            f"<figure class='mon-atypical'><img src='/review/studies/{int(a['study_id'])}/image' loading='lazy' "
            f"alt='study {int(a['study_id'])}'><figcaption>study {int(a['study_id'])} · atypicality "
            f"{float(a['atypicality']):.2f} · score {float(a['score']):.2f}</figcaption></figure>" for a in items)
        return f"<div id='atypical' class='mon-atypical-row'>{cells}</div>"

    def figures(self, snap: dict[str, Any], hospital: str) -> tuple[Any, ...]:
        from ui.monitor_plots import hospital_figure, series_figure

        points, thresholds = snap["points"], snap["thresholds"]
        where = "all hospitals" if hospital == store.ALL else hospital or "your hospitals"
        estimated = {m: [p for p in points if p["metric"] == ESTIMATED_PREFIX + m and p["value"] is not None]
                     for m in ("accuracy",)}
        drift = series_figure(points, DRIFT, thresholds, f"Image and prediction drift ({where})",
                              "Drift (0: none, 1: entirely different)")
        perf = series_figure(points, PERFORMANCE, thresholds, f"Performance from doctors' verdicts ({where})",
                             "Share of studies (0 to 1)", estimated=estimated)
        health = series_figure(points, ["latency_p99_ms"], thresholds, "Health: the slowest part of the scoring "
                               "service", metric_label("latency_p99_ms"))
        per_hospital = hospital_figure(snap["per_hospital"], "image", thresholds, "Image drift per hospital (latest)")
        return drift, perf, health, per_hospital


def _last(value: datetime | None) -> str:
    return when(value) if value else "not yet"


def _tile_sample(result: dict[str, Any]) -> str:
    """What a tile's figure was measured on: the images, or the verdicts and the estimate from the scores."""
    detail = result["detail"]
    if "coverage" not in detail:
        return f"From {result['n']} images." if result["n"] else ""
    text = f"{detail['n_labelled']} studies with a verdict ({detail['coverage']:.0%} of the latest ones)."
    est = detail.get("estimated") or {}
    if est:
        text += (f"<br>Expected from the scores alone: {est['value']:.2f} "
                 f"(range {est['low']:.2f} to {est['high']:.2f}).")
    if detail.get("disagrees"):
        text += "<br><b>The measured figure is outside the range the scores predict.</b>"
    return text


def _atypical(latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The most atypical images of the latest drift figures (``study_id``, ``atypicality``, ``score`` each)."""
    return ((latest.get("image") or {}).get("detail") or {}).get("atypical") or []


def _readable_atypical(session: Any, latest: dict[str, dict[str, Any]], scope: ReadScope) -> dict[str, Any]:
    """``latest`` with its atypical images cut to the studies ``scope`` reads."""
    items = _atypical(latest)
    if scope.network or not items:
        return latest
    ids = [int(a["study_id"]) for a in items]
    readable = set(session.scalars(scope.where(select(Study.id).where(Study.id.in_(ids)))))
    image = latest["image"]
    detail = {**image["detail"], "atypical": [a for a in items if int(a["study_id"]) in readable]}
    return {**latest, "image": {**image, "detail": detail}}


def add_monitor_tab(gr: Any, db: Database, user_of: Any, touch: Any = None) -> Any:
    """The tab's components and events, inside the caller's ``gr.Blocks`` (whose banner says when the model
    learnt from generated images); returns the ``gr.Tab``."""
    view = MonitorView(db)

    def show(version: str | None, hospital: str | None, request: gr.Request) -> tuple[Any, ...]:
        user = user_of(request)
        if touch is not None:
            touch(user)  # a click of the doctor's: their session stays alive
        snap = view.snapshot(version, hospital, user.scope)
        delivery = view.delivery_table() if user.scope.network else []  # all hospitals' volumes: network readers
        if snap is None:
            return (gr.update(choices=[], value=None), gr.update(choices=[store.ALL], value=store.ALL), NO_MONITOR,
                    "", None, None, None, None, [], "", delivery)
        version, hospital = snap["version"], snap["hospital"]
        with db.session() as session:  # the studies whose pictures the tab lists
            record_audit(session, user.name, "view_monitor", detail=f"{version} {hospital or '-'}"[:512],
                         listed=[int(a["study_id"]) for a in _atypical(snap["latest"])])
        return (gr.update(choices=snap["versions"], value=version),
                gr.update(choices=snap["hospitals"], value=hospital),
                view.state_markdown(snap["monitor"], version, hospital),
                view.tiles_html(snap["latest"], snap["thresholds"]),
                *view.figures(snap, hospital), view.alert_table(snap["alerts"]), view.atypical_html(snap["latest"]),
                delivery)

    with gr.Tab("Monitor", id="monitor", elem_id="tab-monitor") as tab:
        with gr.Row():
            version = gr.Dropdown([], label="Model version", elem_id="monitor-version")
            hospital = gr.Dropdown([store.ALL], value=store.ALL, label="Hospital", elem_id="monitor-hospital")
            refresh = gr.Button("Refresh", elem_id="monitor-refresh", size="sm")
        state = gr.Markdown(elem_id="monitor-state")
        tiles = gr.HTML(elem_id="monitor-tiles-box")
        with gr.Row():
            drift_plot = gr.Plot(label="Drift", show_label=False, elem_id="plot-drift", format="png")
            perf_plot = gr.Plot(label="Performance", show_label=False, elem_id="plot-performance", format="png")
        with gr.Row():
            hospital_plot = gr.Plot(label="Per hospital", show_label=False, elem_id="plot-hospitals", format="png")
            health_plot = gr.Plot(label="Health", show_label=False, elem_id="plot-health", format="png")
        gr.Markdown("### Alerts")
        alert_table = gr.Dataframe(headers=ALERT_COLUMNS, interactive=False, elem_id="monitor-alerts", max_height=320)
        gr.Markdown("### Most atypical images of the last drift run")
        atypical = gr.HTML(elem_id="monitor-atypical")
        gr.Markdown("### Results delivered to the PACS and the RIS (all hospitals: for network-wide readers)")
        delivery = gr.Dataframe(headers=DELIVERY_COLUMNS, interactive=False, elem_id="monitor-delivery", max_height=240)
        outputs = [version, hospital, state, tiles, drift_plot, perf_plot, health_plot, hospital_plot, alert_table,
                   atypical, delivery]
        tab.select(show, [version, hospital], outputs)
        refresh.click(show, [version, hospital], outputs)
        version.input(show, [version, hospital], outputs)
        hospital.input(show, [version, hospital], outputs)
    return tab
