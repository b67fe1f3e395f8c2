"""The Monitor tab as a doctor reads it (issue 31): axes that fit the figures, tiles that say what they measure
and what their limits mean, words instead of metric names, times in UTC, and legends of what is drawn only."""

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from matplotlib.dates import num2date
from matplotlib.figure import Figure

from xraylab.monitor.thresholds import METRICS, Thresholds, default_thresholds

RUN = datetime(2026, 11, 2, 10, 0)  # naive, as SQLite and MariaDB give a stored UTC time back
THRESHOLDS = default_thresholds()


def point(metric: str, value: float | None, at: datetime = RUN, status: str = "ok", **detail: Any) -> dict[str, Any]:
    return {"run_at": at, "metric": metric, "value": value, "n": 60, "status": status, "detail": detail}


def span(fig: Figure) -> timedelta:
    low, high = fig.axes[0].get_xlim()
    return num2date(high) - num2date(low)


def legend(fig: Figure) -> list[str]:
    box = fig.axes[0].get_legend()
    return [t.get_text() for t in box.get_texts()] if box else []


def visible_text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_one_run_gets_a_window_of_hours_around_it() -> None:
    from ui.monitor_plots import MIN_TIME_SPAN, series_figure

    fig = series_figure([point("image", 1.0, status="critical"), point("prediction", 0.595, status="critical")],
                        ["image", "prediction"], THRESHOLDS, "drift", "Drift")
    low, high = (num2date(x) for x in fig.axes[0].get_xlim())
    assert high - low == MIN_TIME_SPAN < timedelta(days=1)  # not 2025 to 2029
    assert low < RUN.replace(tzinfo=UTC) < high
    assert "UTC" in fig.axes[0].get_xlabel()


def test_several_runs_span_their_range_with_a_small_margin() -> None:
    from ui.monitor_plots import series_figure

    runs = [point("image", 0.1, RUN + timedelta(days=d)) for d in range(10)]
    fig = series_figure(runs, ["image"], THRESHOLDS, "drift", "Drift")
    assert timedelta(days=9) < span(fig) < timedelta(days=9) * 1.2  # the runs span 9 days


def test_the_value_axis_fits_the_figures_and_the_limits_drawn() -> None:
    from ui.monitor_plots import series_figure

    fig = series_figure([point("image", 0.1), point("image", 0.3, RUN + timedelta(hours=1))], ["image"], THRESHOLDS,
                        "drift", "Drift")
    low, high = fig.axes[0].get_ylim()
    assert low < 0.1 and 0.55 < high < 0.7  # up to the critical limit 0.55, not to 1
    health = series_figure([point("latency_p99_ms", 180.0)], ["latency_p99_ms"], THRESHOLDS, "health", "ms")
    low, high = health.axes[0].get_ylim()
    assert low < 180 and 5000 < high < 5500


def test_a_legend_lists_the_limits_of_the_metrics_drawn_only() -> None:
    from ui.monitor_plots import series_figure

    fig = series_figure([point("accuracy", 0.9)], ["accuracy", "precision", "recall", "f1_score"], THRESHOLDS,
                        "performance", "Share")
    assert legend(fig) == ["Accuracy", "warning below 0.8: Accuracy", "critical below 0.7: Accuracy"]
    low, high = fig.axes[0].get_ylim()
    levels = [line.get_ydata()[0] for line in fig.axes[0].get_lines() if line.get_linestyle() in ("--", "-")
              and len(set(line.get_ydata())) == 1 and line.get_label().startswith(("warning", "critical"))]
    assert sorted(levels) == [0.7, 0.8] and all(low < y < high for y in levels)
    empty = series_figure([], ["accuracy", "precision"], THRESHOLDS, "performance", "Share")
    assert legend(empty) == [] and not empty.axes[0].get_lines()


def test_a_level_shared_by_metrics_is_one_line_naming_them() -> None:
    from ui.monitor_plots import series_figure

    fig = series_figure([point("precision", 0.8), point("f1_score", 0.75)], ["accuracy", "precision", "f1_score"],
                        THRESHOLDS, "performance", "Share")
    assert legend(fig) == ["Precision", "F1 score", "warning below 0.7: Precision, F1 score",
                           "critical below 0.4: Precision, F1 score"]


def test_the_estimate_is_named_in_words() -> None:
    from ui.monitor_plots import series_figure

    estimated = {"accuracy": [point("estimated_accuracy", 0.85, low=0.8, high=0.9)]}
    fig = series_figure([], ["accuracy"], THRESHOLDS, "performance", "Share", estimated=estimated)
    assert legend(fig)[0] == "Accuracy (estimated)" and "warning below 0.8: Accuracy" in legend(fig)


def test_the_hospital_bars_fit_their_figures_and_limits() -> None:
    from ui.monitor_plots import hospital_figure

    latest = {"north": {"image": point("image", 0.6, status="critical")}, "south": {"image": point("image", 0.1)},
              "east": {"prediction": point("prediction", 0.1)}}
    fig = hospital_figure(latest, "image", THRESHOLDS, "per hospital")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["north", "south"]
    assert 0.6 < ax.get_ylim()[1] < 0.8 and ax.get_ylabel() == "Image drift (KS)"
    assert legend(fig) == ["warning above 0.42: Image drift (KS)", "critical above 0.55: Image drift (KS)"]
    assert legend(hospital_figure({}, "image", THRESHOLDS, "per hospital")) == []


def test_every_metric_has_words_a_doctor_reads() -> None:
    from ui.monitor_words import METRIC_WORDS, metric_label

    assert set(METRIC_WORDS) == set(METRICS)
    assert metric_label("auc") == "ROC AUC" and metric_label("latency_p50_ms") == "p50 latency (ms)"
    assert metric_label("f1_score") == "F1 score" and metric_label("image") == "Image drift (KS)"
    assert metric_label("estimated_accuracy") == "Accuracy (estimated)"
    for words in METRIC_WORDS.values():
        assert "_" not in words.label and words.meaning.endswith(".")


@pytest.mark.parametrize("metric", list(METRICS))
def test_each_tile_says_what_it_measures_its_state_and_limits(metric: str) -> None:
    from ui.monitor_tab import MonitorView
    from ui.monitor_words import METRIC_WORDS

    limit = THRESHOLDS.limits.get(metric)
    status = "critical" if limit else "ok"
    text = visible_text(MonitorView.tiles_html({metric: point(metric, 0.595, status=status)}, THRESHOLDS))
    words = METRIC_WORDS[metric]
    assert words.label in text and words.meaning in text and "0.595" in text
    assert ("Critical" if limit else "OK") in text
    if limit is None:
        assert "No limit: shown for information, never alerts." in text
    elif limit.soft == limit.hard:
        assert f"critical {limit.direction} {limit.hard:g}." in text
    else:
        assert f"warning {limit.direction} {limit.soft:g}, critical {limit.direction} {limit.hard:g}." in text
    assert "Measured 2026-11-02 10:00 UTC." in text
    rest = text.replace(words.label, "").replace(words.meaning, "")
    assert not re.search(rf"\b{metric}\b", rest)  # no raw name like latency_p50_ms
    assert not re.search(r"\b(soft|hard|Auc|Latency P50 Ms)\b", text)


def test_tile_limits_say_which_way_is_worse() -> None:
    from ui.monitor_tab import MonitorView

    text = visible_text(MonitorView.tiles_html({"image": point("image", 0.3), "accuracy": point("accuracy", 0.9)},
                                               THRESHOLDS))
    assert "Limits: warning above 0.42, critical above 0.55. Higher is worse;" in text
    assert "Limits: warning below 0.8, critical below 0.7. Lower is worse;" in text
    slow = Thresholds.parse({"image": {"type": "drift", "soft": 0.1, "hard": 0.25, "breaches": 3}})
    assert "an alert goes out when 3 runs in a row are past a limit" in MonitorView.tiles_html(
        {"image": point("image", 0.3)}, slow)


def test_a_tile_without_a_figure_says_no_data() -> None:
    from ui.monitor_tab import MonitorView

    result = point("accuracy", None, n_labelled=3, coverage=0.05, estimated={"value": 0.9, "low": 0.8, "high": 0.95})
    html = MonitorView.tiles_html({"accuracy": result}, THRESHOLDS)
    assert "data-status='none'" in html
    text = visible_text(html)
    assert "No data" in text and "3 studies with a verdict (5% of the latest ones)" in text
    assert "Expected from the scores alone: 0.90 (range 0.80 to 0.95)" in text


def test_the_alert_table_reads_in_words_and_utc() -> None:
    from ui.monitor_tab import MonitorView

    rows = [{"fired_at": RUN, "severity": "critical", "metric": "latency_p50_ms", "hospital": "all", "value": 2500.0,
             "limit": 2000.0, "resolved_at": datetime(2026, 11, 2, 13, 30, tzinfo=timezone(timedelta(hours=2)))},
            {"fired_at": RUN.replace(tzinfo=UTC), "severity": "warning", "metric": "auc", "hospital": "north",
             "value": 0.7, "limit": 0.8, "resolved_at": None}]
    table = MonitorView.alert_table(rows)
    assert table[0][0] == "2026-11-02 10:00 UTC" and table[0][6] == "2026-11-02 11:30 UTC"  # from UTC+2
    assert [r[2] for r in table] == ["p50 latency (ms)", "ROC AUC"] and table[1][6] == "open"
    assert all(r[0].endswith(" UTC") for r in table)


def test_the_state_gives_its_times_in_utc() -> None:
    from ui.monitor_tab import MonitorView

    monitor = {"state": "active", "message": "", "last_drift_at": RUN, "last_health_at": None, "open_alerts": 1}
    text = MonitorView.state_markdown(monitor, "v1", "north")
    assert "Last drift run 2026-11-02 10:00 UTC" in text and "last health run not yet" in text
    assert "Monitor of model `v1`: active** · showing hospital north" in text


def test_the_monitor_css_styles_every_class_the_tab_writes() -> None:
    import ui.monitor_tab as tab

    assert "MONITOR_CSS" in tab.__all__
    html = tab.MonitorView.tiles_html({"image": point("image", 0.6, status="critical")}, THRESHOLDS)
    html += tab.MonitorView.atypical_html({"image": point("image", 0.6, atypical=[
        {"study_id": 1, "atypicality": 0.9, "score": 0.5}])})
    for name in set(re.findall(r"class='([^']+)'", html)) | {"mon-ok", "mon-warning", "mon-none"}:
        for cls in name.split():
            assert f".{cls} " in tab.MONITOR_CSS, cls
    assert "capitalize" not in tab.MONITOR_CSS


def test_the_tab_drawn_from_one_stored_run(tmp_path: Path) -> None:
    from ui.monitor_tab import MonitorView
    from xraylab.db import monitoring as store
    from xraylab.db.session import Database, upgrade_schema

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade_schema(db.engine)
    with db.session() as session:
        store.monitor_row(session, "v1", create_state="active")
        store.save_results(session, "v1", RUN, [store.ResultRecord("image", store.ALL, 1.0, 60, "critical", {}),
                                                store.ResultRecord("prediction", store.ALL, 0.595, 60, "critical", {})])
    view = MonitorView(db)
    snap = view.snapshot(None, None)
    drift, perf, health, per_hospital = view.figures(snap, snap["hospital"])
    assert span(drift) < timedelta(days=1) and "UTC" in drift.axes[0].get_xlabel()
    assert legend(drift)[:2] == ["Image drift (KS)", "Prediction drift (JS)"]
    assert legend(perf) == [] and legend(health) == []
    text = visible_text(view.tiles_html(snap["latest"], snap["thresholds"]))
    assert "Image drift (KS)" in text and "Prediction drift (JS)" in text and "UTC" in text
    db.dispose()
