"""The delivery outbox (table ``deliveries``): results waiting for, sent to, or refused by a PACS or a RIS.

The Writer queues a result in the same transaction that stores its prediction (``enqueue``), so a study is never
scored and then forgotten by a crash between the two; the deliverer (``delivery/worker.py``) takes the due rows of
one destination at a time, in order (``due``), and marks each ``sent``, ``failed`` (refused for good, with the
reason) or, on a transient failure, queued again for later (``retry_later``). ``xraylab outbox list|retry`` read
and requeue them; ``summary`` gives the Monitor tab and the metrics their figures. Like ``crud.py``, each
function takes the caller's session.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.orm import Session

from xraylab.db.models import Delivery, Prediction, Study, as_utc, utcnow
from xraylab.delivery_config import DeliveryConfig
from xraylab.messages import StudyRecord, Verdict, WriteResult

__all__ = ["QUEUED", "SENT", "FAILED", "STATUSES", "enqueue", "enqueue_results", "due", "mark_sent", "mark_failed",
           "retry_later", "requeue", "list_deliveries", "summary", "DestinationSummary", "pending_destinations",
           "delivery_job", "states_of"]

QUEUED, SENT, FAILED = "queued", "sent", "failed"
STATUSES = (QUEUED, SENT, FAILED)


def enqueue(session: Session, items: Iterable[tuple[int, int, Sequence[str]]]) -> int:
    """Queue each ``(study_id, prediction_id, destination ids)``; returns the rows added. Call it only for new
    predictions, in their transaction (a prediction is new once, so no row is queued twice)."""
    now = utcnow()
    rows = [{"study_id": study_id, "prediction_id": prediction_id, "destination": destination, "status": QUEUED,
             "attempts": 0, "next_attempt_at": now, "created_at": now}
            for study_id, prediction_id, destinations in items for destination in destinations]
    if rows:
        session.execute(insert(Delivery), rows)
    return len(rows)


def enqueue_results(session: Session, config: DeliveryConfig,
                    rows: Sequence[tuple[StudyRecord, Verdict, float | None]], results: Sequence[WriteResult], *,
                    pacs_endpoint_id: str) -> int:
    """Queue the new predictions among ``results`` (``crud.record_predictions``' answer for ``rows``) for their
    hospitals' destinations: the RIS for every study, the PACS for a study that came from the PACS."""
    return enqueue(session, [
        (result.study_id, result.prediction_id,
         [d.id for d in config.destinations(study.metadata.hospital, from_pacs=study.endpoint_id == pacs_endpoint_id)])
        for (study, _, _), result in zip(rows, results, strict=True) if result.created])


def pending_destinations(session: Session) -> list[str]:
    """The destinations with queued rows."""
    return list(session.scalars(select(Delivery.destination).where(Delivery.status == QUEUED).distinct()))


def due(session: Session, destination: str, *, now: datetime | None = None, limit: int = 20) -> list[Delivery]:
    """The destination's queued rows whose time has come, oldest first."""
    now = now or utcnow()
    return list(session.scalars(
        select(Delivery).where(Delivery.status == QUEUED, Delivery.destination == destination,
                               Delivery.next_attempt_at <= now).order_by(Delivery.id).limit(limit)))


def delivery_job(session: Session, delivery_id: int) -> dict[str, Any] | None:
    """One row with its study and prediction, as the deliverer needs them (None when the row is gone)."""
    found = session.execute(
        select(Delivery, Study, Prediction).join(Study, Study.id == Delivery.study_id)
        .join(Prediction, Prediction.id == Delivery.prediction_id).where(Delivery.id == delivery_id)).first()
    if found is None:
        return None
    delivery, study, prediction = found
    return {"delivery": delivery, "study": study, "prediction": prediction}


def _attempted(delivery_id: int, **values: Any) -> Any:
    return update(Delivery).where(Delivery.id == delivery_id, Delivery.status == QUEUED).values(
        attempts=Delivery.attempts + 1, **values)


def mark_sent(session: Session, delivery_id: int, message_id: str, *, now: datetime | None = None) -> None:
    session.execute(_attempted(delivery_id, status=SENT, message_id=message_id, sent_at=now or utcnow(),
                               last_error=None))


def mark_failed(session: Session, delivery_id: int, reason: str, *, message_id: str | None = None) -> None:
    """Refused for good (an AE rejection, an HL7 AR/AE acknowledgement, a source that is gone): set aside with
    the reason until ``requeue``."""
    session.execute(_attempted(delivery_id, status=FAILED, last_error=reason[:512], message_id=message_id))


def retry_later(session: Session, delivery_id: int, error: str, at: datetime) -> None:
    """A transient failure (the destination down, a timeout): tried again at ``at``."""
    session.execute(_attempted(delivery_id, next_attempt_at=at, last_error=error[:512]))


def requeue(session: Session, *, ids: Sequence[int] = (), destination: str | None = None) -> int:
    """Failed rows (these ids, or every failed row, of one destination where given) queued again, due now."""
    query = update(Delivery).where(Delivery.status == FAILED)
    if ids:
        query = query.where(Delivery.id.in_(list(ids)))
    if destination:
        query = query.where(Delivery.destination == destination)
    return int(session.execute(query.values(status=QUEUED, next_attempt_at=utcnow())).rowcount or 0)  # type: ignore[attr-defined]


def list_deliveries(session: Session, *, status: str | None = None, destination: str | None = None,
                    limit: int = 50) -> list[dict[str, Any]]:
    """The newest rows (no patient data: study row ids, destinations, states, reasons)."""
    query = select(Delivery, Study.study_uid).join(Study, Study.id == Delivery.study_id)
    if status:
        query = query.where(Delivery.status == status)
    if destination:
        query = query.where(Delivery.destination == destination)
    return [{"id": d.id, "study_id": d.study_id, "study_uid": uid, "prediction_id": d.prediction_id,
             "destination": d.destination, "status": d.status, "attempts": d.attempts,
             "next_attempt_at": as_utc(d.next_attempt_at), "created_at": as_utc(d.created_at),
             "sent_at": as_utc(d.sent_at),
             "message_id": d.message_id, "last_error": d.last_error}
            for d, uid in session.execute(query.order_by(Delivery.id.desc()).limit(limit))]


def states_of(session: Session, study_ids: Sequence[int]) -> dict[str, dict[str, int]]:
    """Destination -> state -> rows, of these studies' deliveries."""
    out: dict[str, dict[str, int]] = {}
    for start in range(0, len(study_ids), 500):
        for destination, status, count in session.execute(
                select(Delivery.destination, Delivery.status, func.count(Delivery.id))
                .where(Delivery.study_id.in_(list(study_ids[start:start + 500])))
                .group_by(Delivery.destination, Delivery.status)):
            states = out.setdefault(destination, {})
            states[status] = states.get(status, 0) + int(count)
    return out


@dataclass(frozen=True)
class DestinationSummary:
    destination: str
    queued: int
    sent: int
    failed: int
    oldest_queued_s: float | None  # how long the oldest queued result has waited: the delivery lag now
    median_lag_s: float | None  # of the results sent in the window: from being queued to being taken
    sent_in_window: int


def summary(session: Session, *, now: datetime | None = None, window: timedelta = timedelta(hours=24)
            ) -> list[DestinationSummary]:
    """Per destination: rows in each state, the oldest queued row's age, and the median lag of the window's
    sends."""
    now = now or utcnow()
    counts = session.execute(
        select(Delivery.destination,
               func.sum(case((Delivery.status == QUEUED, 1), else_=0)),
               func.sum(case((Delivery.status == SENT, 1), else_=0)),
               func.sum(case((Delivery.status == FAILED, 1), else_=0)),
               func.min(case((Delivery.status == QUEUED, Delivery.created_at), else_=None)))
        .group_by(Delivery.destination).order_by(Delivery.destination)).all()
    since = now - window
    lags: dict[str, list[float]] = {}
    for destination, created, sent in session.execute(
            select(Delivery.destination, Delivery.created_at, Delivery.sent_at)
            .where(and_(Delivery.status == SENT, Delivery.sent_at >= since)).order_by(Delivery.id.desc())
            .limit(5000)):
        lags.setdefault(destination, []).append((as_utc(sent) - as_utc(created)).total_seconds())  # type: ignore[operator]
    out = []
    for destination, queued, sent, failed, oldest in counts:
        window_lags = sorted(lags.get(destination, []))
        out.append(DestinationSummary(
            destination=destination, queued=int(queued or 0), sent=int(sent or 0), failed=int(failed or 0),
            oldest_queued_s=(now - as_utc(oldest)).total_seconds() if oldest is not None else None,  # type: ignore[operator]
            median_lag_s=window_lags[len(window_lags) // 2] if window_lags else None,
            sent_in_window=len(window_lags)))
    return out
