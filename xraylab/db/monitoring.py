"""The model monitor's reads and writes: its state per model version, the thresholds in effect, the
predictions a run covers, the verdicts joined with them, the figures of each run and the alerts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from xraylab.db.models import (
    MonitorAlert,
    MonitorResult,
    MonitorRow,
    MonitorSetting,
    Prediction,
    Study,
    VerdictRow,
    utcnow,
)
from xraylab.labels import PNEUMONIA_CLASS, VERDICT_CLASS
from xraylab.monitor.alerts import AlertEvent, Streak
from xraylab.monitor.thresholds import Thresholds, default_thresholds

__all__ = ["LivePrediction", "PerformanceWindow", "ResultRecord", "get_thresholds", "set_thresholds",
           "monitor_row", "set_state", "list_monitors", "newest_prediction_id", "new_predictions",
           "performance_window", "save_results", "prune_results", "load_streaks", "save_streaks", "record_alerts",
           "alerts", "series", "latest_results", "result_hospitals", "ALL"]

ALL = "all"  # the hospital value of a figure over all hospitals
THRESHOLDS = "thresholds"


@dataclass(frozen=True)
class LivePrediction:
    prediction_id: int
    study_id: int
    score: float
    band: str
    hospital: str
    endpoint_id: str
    bucket: str
    object_key: str


@dataclass(frozen=True)
class PerformanceWindow:
    """The newest predictions of a model version: every score, and the labels doctors gave some of them."""

    scores: list[float]
    hospitals: list[str]
    labels: list[int | None]  # 1 pneumonia, 0 normal, None: no usable verdict yet
    key: str = ""  # newest prediction id, labels, newest verdict id: what the figures would cover

    @property
    def n_labelled(self) -> int:
        return sum(label is not None for label in self.labels)


@dataclass(frozen=True)
class ResultRecord:
    metric: str
    hospital: str
    value: float | None
    n: int
    status: str
    detail: dict[str, Any]


def get_thresholds(session: Session) -> Thresholds:
    """The thresholds in effect: the last uploaded (``xraylab monitor thresholds FILE``), else the defaults."""
    stored = session.get(MonitorSetting, THRESHOLDS)
    return Thresholds.from_json(stored.value, source="stored thresholds") if stored else default_thresholds()


def set_thresholds(session: Session, thresholds: Thresholds) -> None:
    stored = session.get(MonitorSetting, THRESHOLDS)
    if stored is None:
        session.add(MonitorSetting(name=THRESHOLDS, value=thresholds.to_json(), updated_at=utcnow()))
    else:
        stored.value, stored.updated_at = thresholds.to_json(), utcnow()


def monitor_row(session: Session, model_version: str, *, create_state: str | None = None) -> MonitorRow | None:
    row = session.scalar(select(MonitorRow).where(MonitorRow.model_version == model_version))
    if row is None and create_state is not None:
        row = MonitorRow(model_version=model_version, state=create_state, created_at=utcnow(), updated_at=utcnow())
        session.add(row)
        session.flush()
    return row


def set_state(session: Session, model_version: str, state: str, message: str | None = None,
              **columns: datetime | int) -> None:
    row = monitor_row(session, model_version, create_state=state)
    assert row is not None
    row.state, row.message, row.updated_at = state, message, utcnow()
    for name, value in columns.items():
        setattr(row, name, value)


def list_monitors(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(MonitorRow).order_by(MonitorRow.id)).all()
    opened = dict(session.execute(select(MonitorAlert.model_version, func.count())
                                  .where(MonitorAlert.resolved_at.is_(None)).group_by(MonitorAlert.model_version)).all())
    return [{"model_version": r.model_version, "state": r.state, "message": r.message,
             "last_prediction_id": r.last_prediction_id, "last_health_at": r.last_health_at,
             "last_drift_at": r.last_drift_at, "open_alerts": opened.get(r.model_version, 0)} for r in rows]


def newest_prediction_id(session: Session, model_version: str) -> int:
    return int(session.scalar(select(func.max(Prediction.id)).where(Prediction.model_version == model_version)) or 0)


def new_predictions(session: Session, model_version: str, after_id: int, limit: int,
                    settled_before: datetime | None = None) -> list[LivePrediction]:
    """The newest ``limit`` predictions of a model version after prediction ``after_id``, oldest first; with
    ``settled_before``, only those stored before then (InnoDB hands out ids before commit, so a younger id can
    become visible after an older one: the run leaves the young ones to the next run rather than skip one)."""
    settled = Prediction.created_at <= settled_before if settled_before is not None else True
    query = (select(Prediction.id, Prediction.study_id, Prediction.score, Prediction.band, Study.hospital,
                    Study.endpoint_id, Study.bucket, Study.object_key)
             .join(Study, Study.id == Prediction.study_id)
             .where((Prediction.model_version == model_version) & (Prediction.id > after_id) & settled)
             .order_by(Prediction.id.desc()).limit(limit))
    rows = [LivePrediction(pid, sid, float(score), band, hospital or "unknown", endpoint, bucket, key)
            for pid, sid, score, band, hospital, endpoint, bucket, key in session.execute(query)]
    return rows[::-1]


def performance_window(session: Session, model_version: str, size: int) -> PerformanceWindow:
    """The newest ``size`` predictions of a model version, each with the class of the newest verdict on its
    study, if any (a "Not diagnostic" verdict gives no label)."""
    newest = session.execute(select(Prediction.id, Prediction.study_id, Prediction.score, Study.hospital)
                             .join(Study, Study.id == Prediction.study_id)
                             .where(Prediction.model_version == model_version)
                             .order_by(Prediction.id.desc()).limit(size)).all()
    study_ids = [row.study_id for row in newest]
    latest: dict[int, tuple[int, str]] = {}
    if study_ids:
        last_ids = (select(func.max(VerdictRow.id)).where(VerdictRow.study_id.in_(study_ids))
                    .group_by(VerdictRow.study_id))
        for verdict_id, study_id, label in session.execute(select(VerdictRow.id, VerdictRow.study_id, VerdictRow.label)
                                                           .where(VerdictRow.id.in_(last_ids))):
            latest[study_id] = (verdict_id, label)
    labels: list[int | None] = []
    for row in newest:
        cls = VERDICT_CLASS.get(latest.get(row.study_id, (0, ""))[1])
        labels.append(None if cls is None else int(cls == PNEUMONIA_CLASS))
    key = f"{newest[0].id if newest else 0}:{len(latest)}:{max((v for v, _ in latest.values()), default=0)}"
    return PerformanceWindow([float(r.score) for r in newest], [r.hospital or "unknown" for r in newest], labels,
                             key)


def save_results(session: Session, model_version: str, run_at: datetime, results: list[ResultRecord]) -> None:
    session.add_all(MonitorResult(model_version=model_version, run_at=run_at, metric=r.metric, hospital=r.hospital,
                                  value=r.value, n=r.n, status=r.status, detail=json.dumps(r.detail, default=float))
                    for r in results)


def prune_results(session: Session, model_version: str, before: datetime, batch: int = 10_000) -> int:
    """Delete up to ``batch`` figures of a model version older than ``before`` (its oldest first); returns how many."""
    old = session.scalars(select(MonitorResult.id).where((MonitorResult.model_version == model_version)
                                                        & (MonitorResult.run_at < before))
                          .order_by(MonitorResult.id).limit(batch)).all()
    if old:
        session.execute(delete(MonitorResult).where(MonitorResult.id.in_(old)))
    return len(old)


def load_streaks(row: MonitorRow) -> dict[str, Streak]:
    """The alert streaks of a monitor, by ``<metric>|<hospital>``."""
    return {key: Streak(**value) for key, value in json.loads(row.streaks or "{}").items()}


def save_streaks(row: MonitorRow, streaks: dict[str, Streak]) -> None:
    row.streaks = json.dumps({k: s.to_dict() for k, s in streaks.items()})


def record_alerts(session: Session, events: list[AlertEvent]) -> None:
    """A fired alert becomes an open row; a resolved one closes the open row of its series and severity."""
    for event in events:
        if event.event == "fired":
            session.add(MonitorAlert(model_version=event.model_version, metric=event.metric,
                                     hospital=event.hospital, severity=event.severity, value=event.value,
                                     limit_value=event.limit, message=event.message[:512],
                                     fired_at=datetime.fromisoformat(event.at)))
        else:
            session.execute(update(MonitorAlert).where(
                (MonitorAlert.model_version == event.model_version) & (MonitorAlert.metric == event.metric)
                & (MonitorAlert.hospital == event.hospital) & (MonitorAlert.severity == event.severity)
                & MonitorAlert.resolved_at.is_(None)).values(resolved_at=datetime.fromisoformat(event.at)))


def alerts(session: Session, model_version: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(MonitorAlert)
    if model_version:
        query = query.where(MonitorAlert.model_version == model_version)
    rows = session.scalars(query.order_by(MonitorAlert.id.desc()).limit(limit)).all()
    return [{"id": a.id, "model_version": a.model_version, "metric": a.metric, "hospital": a.hospital,
             "severity": a.severity, "value": a.value, "limit": a.limit_value, "message": a.message,
             "fired_at": a.fired_at, "resolved_at": a.resolved_at} for a in rows]


def series(session: Session, model_version: str, metrics: list[str], hospital: str = ALL,
           limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` figures of each of some metrics for one hospital (or all), oldest first."""
    points = []
    for metric in metrics:
        rows = session.scalars(select(MonitorResult).where(
            (MonitorResult.model_version == model_version) & (MonitorResult.metric == metric)
            & (MonitorResult.hospital == hospital))
            .order_by(MonitorResult.run_at.desc(), MonitorResult.id.desc()).limit(limit)).all()
        points += [{"run_at": r.run_at, "metric": r.metric, "value": r.value, "n": r.n, "status": r.status,
                    "detail": json.loads(r.detail or "{}")} for r in reversed(rows)]
    return points


def latest_results(session: Session, model_version: str, hospital: str = ALL) -> dict[str, dict[str, Any]]:
    """The newest figure of each metric for one hospital (or all)."""
    newest = (select(func.max(MonitorResult.id)).where((MonitorResult.model_version == model_version)
                                                       & (MonitorResult.hospital == hospital))
              .group_by(MonitorResult.metric))
    rows = session.scalars(select(MonitorResult).where(MonitorResult.id.in_(newest))).all()
    return {r.metric: {"run_at": r.run_at, "value": r.value, "n": r.n, "status": r.status,
                       "detail": json.loads(r.detail or "{}")} for r in rows}


def result_hospitals(session: Session, model_version: str) -> list[str]:
    found = session.scalars(select(MonitorResult.hospital).where(MonitorResult.model_version == model_version)
                            .distinct()).all()
    return sorted(h for h in found if h != ALL)
