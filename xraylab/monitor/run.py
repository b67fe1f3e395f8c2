"""One monitor run for one model version: the figures, their status under the thresholds, and the alerts.

- ``drift_run``: the images scored since the last drift run (the newest ``MONITOR_MAX_IMAGES`` of them; the
  run waits while there are fewer than ``MONITOR_MIN_IMAGES``) are read from S3 and measured as the model's
  reference was (``features.image_features``); image drift and prediction drift for all hospitals and for
  each hospital with ``MONITOR_MIN_SLICE`` images; performance over the newest
  ``MONITOR_PERFORMANCE_WINDOW`` predictions, realised from the doctors' verdicts and estimated from the
  scores (CBPE) beside it. It keeps the most atypical images of the run.
- ``health_run``: the health figures read from Prometheus (``health.read_health``).

Both store every figure (``xraylab.db.monitoring``), move each series' alert streak (``alerts.advance``),
deliver what fires or resolves, and hand each figure to ``publish`` (the actor sets a Prometheus gauge).
Patient data never enters a figure or a log line: studies are named by id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from xraylab.bands import Bands
from xraylab.db import monitoring as store
from xraylab.db.models import utcnow
from xraylab.db.session import Database
from xraylab.kafka_security import client_config
from xraylab.monitor.alerts import (
    AlertEvent,
    AlertSink,
    KafkaSink,
    LogSink,
    Streak,
    WebhookSink,
    advance,
    deliver,
    expire,
)
from xraylab.monitor.drift import ImageDrift, atypicality, image_drift, prediction_drift
from xraylab.monitor.features import ImageFeatures, image_features, make_embedder
from xraylab.monitor.performance import disagreement, estimate_performance, realised
from xraylab.monitor.reference import Reference, load_reference
from xraylab.monitor.thresholds import ESTIMATED_PREFIX, METRICS, Thresholds
from xraylab.registry import open_registry
from xraylab.settings import Settings

__all__ = ["MonitorRunner", "RunSummary", "default_sinks", "PERFORMANCE_METRICS", "Publish", "ESTIMATE_LEVEL"]

log = logging.getLogger("xraylab.monitor.run")

# The monitor's performance figures and what ``realised``/``estimate_performance`` call them.
PERFORMANCE_METRICS = {"accuracy": "accuracy", "precision": "precision", "recall": "recall",
                       "specificity": "specificity", "f1_score": "f1", "auc": "auc"}
# The interval of an estimate: the realised figure of a calibrated model falls outside it once in 100 windows,
# so "realised outside the interval" is worth a look (NannyML's alert band is wider still, 3 sigma).
ESTIMATE_LEVEL = 0.99
N_DRAWS = 500  # label draws behind each estimate's interval
EXPIRE_RUNS = 3  # runs of its kind without a figure before a series' open alert is resolved
Publish = Callable[[str, str, float], None]  # (metric, hospital, value)


@dataclass
class RunSummary:
    kind: str
    model_version: str
    ran: bool
    message: str = ""
    seconds: float = 0.0
    n_images: int = 0
    figures: dict[str, float | None] = field(default_factory=dict)  # all hospitals
    events: list[AlertEvent] = field(default_factory=list)


def default_sinks(settings: Settings) -> list[AlertSink]:
    sinks: list[AlertSink] = [LogSink(), KafkaSink(client_config(settings, "monitor"), settings.ALERT_TOPIC)]
    url = settings.ALERT_WEBHOOK_URL.get_secret_value()
    if url:
        sinks.append(WebhookSink(url))
    return sinks


def _clean(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


class MonitorRunner:
    """The monitor of one model version; ``prepare`` loads its model and reference once (raises
    ``NoReferenceError`` or ``ModelNotFoundError`` when it cannot be monitored)."""

    def __init__(self, settings: Settings, db: Database, model_version: str, *,
                 sinks: Sequence[AlertSink] | None = None, publish: Publish | None = None) -> None:
        self.settings, self.db, self.model_version = settings, db, model_version
        self.sinks = list(sinks) if sinks is not None else default_sinks(settings)
        self.publish = publish
        self.reference: Reference | None = None
        self._embedder: Any = None
        self._card: Any = None
        self._clients: dict[str, Any] = {}

    def prepare(self) -> None:
        if self.reference is None:
            registry = open_registry(self.settings)
            self.reference = load_reference(registry, self.model_version)
            model, self._card = registry.load_model(self.model_version)
            self._embedder = make_embedder(model)

    # -- image drift, prediction drift, performance -------------------------------------------------------------

    def drift_run(self) -> RunSummary:
        t0 = time.perf_counter()
        self.prepare()
        s = self.settings
        settled_before = utcnow() - timedelta(seconds=s.MONITOR_SETTLE_S)
        with self.db.session() as session:
            row = store.monitor_row(session, self.model_version, create_state="ready")
            after = row.last_prediction_id if row else 0
            performance_key = row.performance_key if row else None
            live = store.new_predictions(session, self.model_version, after, s.MONITOR_MAX_IMAGES, settled_before)
            window = store.performance_window(session, self.model_version, s.MONITOR_PERFORMANCE_WINDOW)
            thresholds = store.get_thresholds(session)
        log.info("drift run of %s: %d scored since prediction %d", self.model_version, len(live), after)
        results: list[store.ResultRecord] = []
        summary = RunSummary("drift", self.model_version, ran=True)
        if len(live) >= s.MONITOR_MIN_IMAGES:
            results += self._drift_figures(live, thresholds, summary)
        else:
            summary.message = f"{len(live)} new images since the last run; image drift waits for {s.MONITOR_MIN_IMAGES}"
            summary.n_images = len(live)
        if window.key != performance_key:  # new predictions or verdicts: the same window again is no new run
            results += self._performance_figures(window, thresholds)
        covered = live[-1].prediction_id if len(live) >= s.MONITOR_MIN_IMAGES else after  # the next run starts after
        summary.events = self._finish(results, thresholds, last_prediction_id=covered, last_drift_at=utcnow(),
                                      performance_key=window.key)
        summary.figures = {r.metric: r.value for r in results if r.hospital == store.ALL}
        summary.seconds = time.perf_counter() - t0
        log.info("drift run of %s: %d images in %.1f s, %s", self.model_version, summary.n_images, summary.seconds,
                 {k: None if v is None else round(v, 3) for k, v in summary.figures.items()})
        return summary

    def _fetch(self, live: list[store.LivePrediction]) -> list[bytes | None]:
        from xraylab.storage import get_object

        def one(p: store.LivePrediction) -> bytes | None:
            try:
                client = self._clients.get(p.endpoint_id)
                if client is None:
                    from xraylab.storage import make_s3_client

                    client = self._clients[p.endpoint_id] = make_s3_client(self.settings.s3_endpoint(p.endpoint_id))
                return get_object(client, p.bucket, p.object_key, max_bytes=self.settings.MAX_IMAGE_BYTES,
                                  endpoint_id=p.endpoint_id).data
            except Exception as exc:  # gone or unreachable: the run goes on without it
                log.warning("monitor could not read study %d: %s", p.study_id, type(exc).__name__)
                return None

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, live))

    def features(self, images: Sequence[bytes]) -> ImageFeatures:
        self.prepare()
        return image_features(self._embedder, self._card.preprocess_spec(), images, self.settings.image_limits())

    def image_drift(self, embeddings: np.ndarray, readable: np.ndarray) -> ImageDrift:
        """Live images' features (``features``) against the model's reference; a reference kept without readable
        statistics (older models) is compared on the embeddings alone."""
        self.prepare()
        ref = self.reference
        assert ref is not None
        if ref.readable is None:
            ref_readable, readable = np.zeros((len(ref.embeddings), 0)), np.zeros((len(embeddings), 0))
            names: tuple[str, ...] = ()
        else:  # a statistic the reference could not record (NaN: the sizes of resized training copies) is left out
            known = ~np.isnan(ref.readable).any(axis=0)
            ref_readable, readable = ref.readable[:, known], np.asarray(readable)[:, known]
            names = tuple(name for name, keep in zip(ref.stat_names, known, strict=True) if keep)
        return image_drift(ref.embeddings, embeddings, ref_readable, readable, names,
                           n_permutations=self.settings.MONITOR_PERMUTATIONS)

    def _slices(self, hospitals: Sequence[str]) -> dict[str, np.ndarray]:
        """All hospitals, and each hospital with ``MONITOR_MIN_SLICE`` rows: its mask over ``hospitals``."""
        names = np.asarray(hospitals)
        slices = {store.ALL: np.ones(len(names), bool)}
        for hospital in sorted(set(names)):
            mask = names == hospital
            if mask.sum() >= self.settings.MONITOR_MIN_SLICE:
                slices[hospital] = mask
        return slices

    def _drift_figures(self, live: list[store.LivePrediction], thresholds: Thresholds,
                       summary: RunSummary) -> list[store.ResultRecord]:
        assert self.reference is not None
        ref = self.reference
        fetched = self._fetch(live)
        present = [i for i, data in enumerate(fetched) if data is not None]
        feats = self.features([fetched[i] for i in present])
        rows = [live[present[k]] for k in feats.kept]
        summary.n_images = len(rows)
        results: list[store.ResultRecord] = []
        if len(rows) < 2:
            summary.message = "the new images could not be read"
            return results
        bands = Bands.from_card(self._card.bands)
        scores = np.array([p.score for p in rows])
        odd = atypicality(ref.embeddings, feats.embeddings)
        for hospital, mask in self._slices([p.hospital for p in rows]).items():
            image = self.image_drift(feats.embeddings[mask], feats.readable[mask])
            detail = image.to_dict()
            order = np.argsort(-odd[mask])[: self.settings.MONITOR_ATYPICAL]
            sliced = [r for r, m in zip(rows, mask, strict=True) if m]
            detail["atypical"] = [{"study_id": sliced[i].study_id, "atypicality": round(float(odd[mask][i]), 4),
                                   "score": round(sliced[i].score, 4)} for i in order]
            detail["unreadable"] = len(live) - len(rows) if hospital == store.ALL else None
            results.append(store.ResultRecord("image", hospital, image.score, int(mask.sum()),
                                              thresholds.status("image", image.score), detail))
            pred = prediction_drift(ref.scores, scores[mask], band_edges=(bands.unsure, bands.pneumonia))
            results.append(store.ResultRecord("prediction", hospital, pred.score, int(mask.sum()),
                                              thresholds.status("prediction", pred.score), pred.to_dict()))
        return results

    def _performance_figures(self, window: store.PerformanceWindow,
                             thresholds: Thresholds) -> list[store.ResultRecord]:
        if not window.scores:
            return []
        scores = np.asarray(window.scores)
        labels = np.array([-1 if v is None else v for v in window.labels])
        results = []
        for hospital, mask in self._slices(window.hospitals).items():
            labelled = mask & (labels >= 0)
            n_window, n_labelled = int(mask.sum()), int(labelled.sum())
            estimate = estimate_performance(scores[mask], n_draws=N_DRAWS, level=ESTIMATE_LEVEL)
            coverage = n_labelled / n_window
            real: dict[str, Any] = {}
            mismatch: list[str] = []
            if n_labelled >= 2:
                real = realised(labels[labelled], scores[labelled])
                # Against the estimate for the same labelled studies: does the model do as its scores say?
                mismatch = disagreement(estimate_performance(scores[labelled], n_draws=N_DRAWS, level=ESTIMATE_LEVEL),
                                        real)
            for metric, key in PERFORMANCE_METRICS.items():
                est = estimate[key]
                value = _clean(real.get(key)) if n_labelled >= self.settings.MONITOR_MIN_SLICE else None
                detail = {"n_labelled": n_labelled, "n_window": n_window, "coverage": round(coverage, 4),
                          "estimated": est.to_dict(), "disagrees": key in mismatch,
                          "realised_small_sample": _clean(real.get(key)) if value is None and real else None}
                results.append(store.ResultRecord(metric, hospital, value, n_labelled,
                                                  thresholds.status(metric, value), detail))
                results.append(store.ResultRecord(ESTIMATED_PREFIX + metric, hospital, _clean(est.value), n_window,
                                                  thresholds.status(metric, _clean(est.value)),
                                                  {"low": est.low, "high": est.high, "n_window": n_window}))
        return results

    # -- health ----------------------------------------------------------------------------------------------------

    def health_run(self) -> RunSummary:
        from xraylab.monitor.health import read_health

        t0 = time.perf_counter()
        reading = read_health(self.settings.PROMETHEUS_URL)
        with self.db.session() as session:
            thresholds = store.get_thresholds(session)
        results = [store.ResultRecord(metric, store.ALL, _clean(value), 0, thresholds.status(metric, _clean(value)),
                                      {"breakdown": [[labels, v] for labels, v in reading.breakdown.get(metric, [])]})
                   for metric, value in reading.values.items()]
        summary = RunSummary("health", self.model_version, ran=reading.error is None, message=reading.error or "")
        summary.events = self._finish(results, thresholds, last_health_at=utcnow())
        summary.figures = {r.metric: r.value for r in results}
        summary.seconds = time.perf_counter() - t0
        log.info("health run of %s in %.1f s: %s", self.model_version, summary.seconds,
                 reading.error or {k: v for k, v in summary.figures.items() if v is not None})
        return summary

    # -- storing, alerting, publishing -----------------------------------------------------------------------------

    def _finish(self, results: list[store.ResultRecord], thresholds: Thresholds,
                **row_updates: Any) -> list[AlertEvent]:
        run_at = utcnow()
        events: list[AlertEvent] = []
        with self.db.session() as session:
            row = store.monitor_row(session, self.model_version, create_state="ready")
            assert row is not None
            streaks = store.load_streaks(row)
            figured: set[str] = set()
            for result in results:
                limit = thresholds.limits.get(result.metric)
                if limit is None or result.value is None:
                    continue  # no limit, or no figure (too few labels, no traffic): neither a breach nor a recovery
                key = f"{result.metric}|{result.hospital}"
                figured.add(key)
                events += advance(streaks.setdefault(key, Streak()), result.status,  # type: ignore[arg-type]
                                  result.value, limit, model_version=self.model_version, metric=result.metric,
                                  hospital=result.hospital)
            # A series of a kind this run measured, but without a figure of its own now (a hospital gone quiet, a
            # limit removed): its open alert is resolved after EXPIRE_RUNS such runs, at once if its limit is gone.
            kinds = {METRICS[r.metric] for r in results if r.metric in METRICS and r.value is not None}
            for key, streak in streaks.items():
                metric, hospital = key.split("|", 1)
                if key not in figured and (METRICS.get(metric) in kinds or metric not in thresholds.limits):
                    events += expire(streak, thresholds.limits.get(metric), model_version=self.model_version,
                                     metric=metric, hospital=hospital, after_runs=EXPIRE_RUNS)
            store.save_results(session, self.model_version, run_at, results)
            store.prune_results(session, self.model_version,
                                run_at - timedelta(days=self.settings.MONITOR_RETENTION_DAYS))
            store.save_streaks(row, streaks)
            store.record_alerts(session, events)
            for name, value in row_updates.items():
                setattr(row, name, value)
        deliver(events, self.sinks)
        if self.publish is not None:
            for result in results:
                if result.value is not None:
                    self.publish(result.metric, result.hospital, result.value)
        return events

    def close(self) -> None:
        for sink in self.sinks:
            closer = getattr(sink, "close", None)
            if closer:
                closer()

