"""The Monitor tab's figures (matplotlib, drawn on the server): each metric as a time series against its soft
and hard limits, the estimated performance with its interval beside the realised one, the health figures, and
the latest image drift per hospital."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from matplotlib.figure import Figure

from xraylab.monitor.thresholds import Thresholds

__all__ = ["series_figure", "hospital_figure", "COLOURS"]

COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "critical": "#c62828"}
LINE_COLOURS = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#4e342e", "#ad1457"]


def _limits(ax: Any, thresholds: Thresholds, metrics: list[str]) -> None:
    drawn: set[tuple[str, float]] = set()
    for metric in metrics:
        limit = thresholds.limits.get(metric)
        if limit is None:
            continue
        for kind, value in (("soft", limit.soft), ("hard", limit.hard)):
            if (kind, value) in drawn:
                continue
            drawn.add((kind, value))
            colour = COLOURS["warning" if kind == "soft" else "critical"]
            ax.axhline(value, color=colour, linestyle="--" if kind == "soft" else "-", linewidth=1.2, alpha=0.9,
                       label=f"{kind} limit {value:g}" + (f" ({metric})" if len(metrics) > 1 else ""))


def series_figure(points: list[dict[str, Any]], metrics: list[str], thresholds: Thresholds, title: str, *,
                  estimated: dict[str, list[dict[str, Any]]] | None = None, unit_interval: bool = True) -> Figure:
    """One line per metric over the runs (a dot per run, coloured by its status), the limits as horizontal
    lines; ``estimated``: per metric, the estimate with its interval as a dashed line and a band."""
    fig = Figure(figsize=(7.5, 3.2), dpi=100, layout="constrained")  # no pyplot: its state is not thread-safe
    ax = fig.subplots()
    by_metric: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for point in points:
        if point["value"] is not None:
            by_metric[point["metric"]].append(point)
    for i, metric in enumerate(metrics):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        rows = by_metric.get(metric, [])
        if rows:
            ax.plot([r["run_at"] for r in rows], [r["value"] for r in rows], color=colour, linewidth=1.6,
                    label=metric.replace("_", " "))
            ax.scatter([r["run_at"] for r in rows], [r["value"] for r in rows], s=18, zorder=3,
                       c=[COLOURS.get(r["status"], colour) for r in rows])
        est = (estimated or {}).get(metric, [])
        if est:
            times = [r["run_at"] for r in est]
            ax.plot(times, [r["value"] for r in est], color=colour, linestyle=":", linewidth=1.4,
                    label=f"{metric.replace('_', ' ')} (estimated)")
            ax.fill_between(times, [r["detail"].get("low", r["value"]) for r in est],
                            [r["detail"].get("high", r["value"]) for r in est], color=colour, alpha=0.12)
    _limits(ax, thresholds, metrics)
    if unit_interval:
        ax.set_ylim(-0.02, 1.02)
    if not any(by_metric.get(m) for m in metrics) and not any((estimated or {}).values()):
        ax.text(0.5, 0.5, "no figures yet", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=8)
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


def hospital_figure(latest: dict[str, dict[str, Any]], metric: str, thresholds: Thresholds, title: str) -> Figure:
    """The latest figure of ``metric`` per hospital as bars coloured by status, against the limits."""
    fig = Figure(figsize=(7.5, 2.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    names = sorted(h for h, results in latest.items() if metric in results and results[metric]["value"] is not None)
    values = [latest[h][metric]["value"] for h in names]
    ax.bar(names, values, color=[COLOURS.get(latest[h][metric]["status"], "#1565c0") for h in names])
    for i, h in enumerate(names):
        ax.text(i, values[i] + 0.02, f"{values[i]:.2f} (n={latest[h][metric]['n']})", ha="center", fontsize=8)
    _limits(ax, thresholds, [metric])
    ax.set_ylim(0, 1.1)
    if not names:
        ax.text(0.5, 0.5, "no figures yet", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_title(title, fontsize=11, loc="left")
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig
