"""The Monitor tab's figures (matplotlib, drawn on the server): each metric as a time series against its warning
and critical limits, the estimated performance with its interval beside the realised one, the health figures,
and the latest image drift per hospital. The axes fit what is drawn, times read in UTC, and a limit is drawn
(and in the legend) only for a metric the figure shows."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from ui.monitor_words import limit_levels, metric_label
from ui.review_views import in_utc
from xraylab.monitor.thresholds import ESTIMATED_PREFIX, Thresholds

__all__ = ["series_figure", "hospital_figure", "COLOURS", "MIN_TIME_SPAN"]

COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "critical": "#c62828"}
LINE_COLOURS = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#4e342e", "#ad1457"]
MIN_TIME_SPAN = timedelta(hours=6)  # the narrowest time axis: one run is shown 3 hours either side
MARGIN = 0.06  # of the span of the data, either side


def _limits(ax: Axes, thresholds: Thresholds, metrics: list[str]) -> list[float]:
    """Draw the limits of ``metrics`` (those the figure shows), one line per level however many metrics share
    it, labelled with the metrics' names; returns the levels drawn."""
    shared: dict[tuple[str, str, float], list[str]] = defaultdict(list)
    for metric in metrics:
        limit = thresholds.limits.get(metric)
        if limit is not None:
            for state, value in limit_levels(limit):
                shared[(state, str(limit.direction), value)].append(metric_label(metric))
    for (state, direction, value), labels in shared.items():
        ax.axhline(value, color=COLOURS[state], linestyle="--" if state == "warning" else "-", linewidth=1.2,
                   alpha=0.9, label=f"{state} {direction} {value:g}: {', '.join(labels)}")
    return [value for _, _, value in shared]


def _fit_times(ax: Axes, times: list[datetime]) -> None:
    """The time axis over ``times`` with a margin, at least ``MIN_TIME_SPAN`` wide, labelled in UTC."""
    first, last = min(times), max(times)
    span = last - first
    pad = span * MARGIN if span >= MIN_TIME_SPAN else (MIN_TIME_SPAN - span) / 2
    ax.set_xlim(first - pad, last + pad)
    locator = AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel("Time of the run (UTC)", fontsize=8)


def _fit_values(ax: Axes, values: list[float]) -> None:
    low, high = min(values), max(values)
    pad = (high - low) * MARGIN or max(abs(high) * MARGIN, 0.05)
    ax.set_ylim(low - pad, high + pad)


def _no_figures(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no figures yet", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _finish(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.tick_params(labelsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def series_figure(points: list[dict[str, Any]], metrics: list[str], thresholds: Thresholds, title: str,
                  ylabel: str, *, estimated: dict[str, list[dict[str, Any]]] | None = None) -> Figure:
    """One line per metric over the runs (a dot per run, coloured by its status), the limits of the metrics
    with figures as horizontal lines; ``estimated``: per metric, the estimate with its interval as a dotted line
    and a band. The axes fit the figures and the limits drawn."""
    fig = Figure(figsize=(7.5, 3.2), dpi=100, layout="constrained")  # no pyplot: its state is not thread-safe
    ax = fig.subplots()
    by_metric: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for point in points:
        if point["value"] is not None:
            by_metric[point["metric"]].append(point)
    shown: list[str] = []
    times: list[datetime] = []
    values: list[float] = []
    for i, metric in enumerate(metrics):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        rows = by_metric.get(metric, [])
        if rows:
            at = [in_utc(r["run_at"]) for r in rows]
            ax.plot(at, [r["value"] for r in rows], color=colour, linewidth=1.6, label=metric_label(metric))
            ax.scatter(at, [r["value"] for r in rows], s=18, zorder=3,
                       c=[COLOURS.get(r["status"], colour) for r in rows])
            times += at
            values += [r["value"] for r in rows]
        est = (estimated or {}).get(metric, [])
        if est:
            at = [in_utc(r["run_at"]) for r in est]
            low = [r["detail"].get("low", r["value"]) for r in est]
            high = [r["detail"].get("high", r["value"]) for r in est]
            ax.plot(at, [r["value"] for r in est], color=colour, linestyle=":", linewidth=1.4,
                    label=metric_label(ESTIMATED_PREFIX + metric))
            ax.fill_between(at, low, high, color=colour, alpha=0.12)
            times += at
            values += low + high + [r["value"] for r in est]
        if rows or est:
            shown.append(metric)
    if times:
        _fit_times(ax, times)
        _fit_values(ax, values + _limits(ax, thresholds, shown))
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.25)
    else:
        _no_figures(ax)
    _finish(ax, title)
    return fig


def hospital_figure(latest: dict[str, dict[str, Any]], metric: str, thresholds: Thresholds, title: str) -> Figure:
    """The latest figure of ``metric`` per hospital as bars coloured by status, against the metric's limits."""
    fig = Figure(figsize=(7.5, 2.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    names = sorted(h for h, results in latest.items() if metric in results and results[metric]["value"] is not None)
    if names:
        values = [latest[h][metric]["value"] for h in names]
        bars = ax.bar(names, values, color=[COLOURS.get(latest[h][metric]["status"], "#1565c0") for h in names])
        ax.bar_label(bars, [f"{v:.2f} ({latest[h][metric]['n']} images)" for h, v in zip(names, values, strict=True)],
                     fontsize=8, padding=2)
        top = max(values + _limits(ax, thresholds, [metric]))
        ax.set_ylim(0, top * 1.2 or 1.0)  # room for the bars' labels
        ax.set_ylabel(metric_label(metric), fontsize=8)
    else:
        _no_figures(ax)
    _finish(ax, title)
    return fig
