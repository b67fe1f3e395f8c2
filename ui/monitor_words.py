"""The model monitor's metrics as a doctor reads them, for the Monitor tab's tiles, figures and alert table
(``ui.monitor_tab``, ``ui.monitor_plots``): a name and a sentence per metric, the states in words, and the levels
of a limit."""

from __future__ import annotations

from dataclasses import dataclass

from xraylab.monitor.thresholds import ESTIMATED_PREFIX, Limit, Status

__all__ = ["MetricWords", "METRIC_WORDS", "STATE_WORDS", "metric_label", "limit_levels"]


@dataclass(frozen=True)
class MetricWords:
    """A monitor metric as a doctor reads it: ``label`` names it (tiles, plot legends and axes, the alert
    table), ``meaning`` says in a sentence what it measures."""

    label: str
    meaning: str


_BY_VERDICT = "Over the latest studies with a doctor's verdict: "
# Every metric of ``thresholds.METRICS``, as ``xraylab.monitor`` computes it (drift.py, performance.py, health.py).
METRIC_WORDS: dict[str, MetricWords] = {
    "image": MetricWords(
        "Image drift (KS)",
        "How far the images scored since the previous run are from the images the model was validated on: "
        "the largest gap between their distributions (Kolmogorov-Smirnov statistic) over the image features "
        "that changed beyond chance; 0: no change, 1: entirely different."),
    "prediction": MetricWords(
        "Prediction drift (JS)",
        "How far the scores since the previous run are from the model's scores on its validation images: "
        "the Jensen-Shannon distance between their histograms and risk-band shares, counted when the change "
        "is beyond chance; 0: no change, 1: entirely different."),
    "accuracy": MetricWords("Accuracy", _BY_VERDICT + "the share where the model's call agrees with the verdict."),
    "precision": MetricWords(
        "Precision", _BY_VERDICT + "of the studies the model called pneumonia, the share the doctor confirmed."),
    "recall": MetricWords(
        "Recall (sensitivity)", _BY_VERDICT + "of the studies with pneumonia, the share the model flagged."),
    "specificity": MetricWords(
        "Specificity", _BY_VERDICT + "of the studies without pneumonia, the share the model called normal."),
    "f1_score": MetricWords("F1 score", _BY_VERDICT + "precision and recall in one figure (their harmonic mean)."),
    "auc": MetricWords(
        "ROC AUC", _BY_VERDICT + "how well the scores rank studies with pneumonia above those without; "
        "0.5: chance, 1: perfect."),
    "request_rate": MetricWords("Request rate (per s)", "Requests per second reaching the scoring service."),
    "error_rate": MetricWords("Error rate", "The share of requests to the scoring service that failed "
                                            "(server errors)."),
    "latency_p50_ms": MetricWords(
        "p50 latency (ms)", "Half of the requests take less than this, in milliseconds, in the slowest part of "
        "the scoring service."),
    "latency_p99_ms": MetricWords(
        "p99 latency (ms)", "99 in 100 requests take less than this, in milliseconds, in the slowest part of the "
        "scoring service."),
    "consumer_lag": MetricWords("Intake backlog (uploads)", "Uploaded images waiting to be taken in for scoring."),
    "dead_letters_per_min": MetricWords(
        "Set-aside uploads (per min)", "Uploads per minute that the intake could not process and set aside."),
    "replicas_alive": MetricWords(
        "Healthy replicas", "The fewest running healthy copies of any part of the scoring service."),
}
STATE_WORDS: dict[str, str] = {"ok": "OK", "warning": "Warning", "critical": "Critical", "none": "No data"}


def metric_label(metric: str) -> str:
    """The name a doctor reads for a metric, or for its estimate (``estimated_<metric>``)."""
    if metric.startswith(ESTIMATED_PREFIX):
        return f"{metric_label(metric.removeprefix(ESTIMATED_PREFIX))} (estimated)"
    words = METRIC_WORDS.get(metric)
    return words.label if words else metric.replace("_", " ")  # a metric of an older monitor, if ever stored


def limit_levels(limit: Limit) -> list[tuple[Status, float]]:
    """The levels of a limit as (state past it, value): the warning level, unless it is the critical one."""
    return ([("warning", limit.soft)] if limit.soft != limit.hard else []) + [("critical", limit.hard)]
