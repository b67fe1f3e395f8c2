"""Reads and idempotent writes, shared by the Writer deployment and the review UI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, select
from sqlalchemy.exc import IntegrityError

from xraylab.db.models import Prediction, Study
from xraylab.db.session import session_scope

__all__ = ["WriteResult", "record_prediction", "worklist", "get_study", "count_rows"]

STUDY_FIELDS = ("study_uid", "endpoint_id", "bucket", "object_key", "etag", "size_bytes", "content_type",
                "hospital", "patient_id", "patient_name", "study_date")
PREDICTION_FIELDS = ("model_version", "score", "band", "fetch_ms", "infer_ms")


@dataclass(frozen=True)
class WriteResult:
    study_id: int
    prediction_id: int
    created: bool  # False: the row was already there (a redelivered event)


def _get_or_create_study(engine: Engine, fields: dict[str, Any]) -> int:
    with session_scope(engine) as session:
        found = session.scalar(select(Study.id).where(Study.study_uid == fields["study_uid"]))
        if found is not None:
            return found
    try:
        with session_scope(engine) as session:
            study = Study(**{k: fields.get(k) for k in STUDY_FIELDS})
            session.add(study)
            session.flush()
            return study.id
    except IntegrityError:  # a concurrent writer inserted it first
        with session_scope(engine) as session:
            return session.scalar(select(Study.id).where(Study.study_uid == fields["study_uid"]))  # type: ignore[return-value]


def record_prediction(engine: Engine, study: dict[str, Any], prediction: dict[str, Any]) -> WriteResult:
    """Insert the study and its prediction unless they exist; safe to call again for the same event."""
    study_id = _get_or_create_study(engine, study)
    where = (Prediction.study_id == study_id) & (Prediction.model_version == prediction["model_version"])
    with session_scope(engine) as session:
        found = session.scalar(select(Prediction.id).where(where))
        if found is not None:
            return WriteResult(study_id, found, created=False)
    try:
        with session_scope(engine) as session:
            row = Prediction(study_id=study_id, **{k: prediction.get(k) for k in PREDICTION_FIELDS})
            session.add(row)
            session.flush()
            return WriteResult(study_id, row.id, created=True)
    except IntegrityError:
        with session_scope(engine) as session:
            return WriteResult(study_id, session.scalar(select(Prediction.id).where(where)), created=False)  # type: ignore[arg-type]


def worklist(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Studies with their latest prediction, highest risk first."""
    latest = (
        select(Prediction.study_id, func.max(Prediction.id).label("pid"))
        .group_by(Prediction.study_id)
        .subquery()
    )
    band_rank = case((Prediction.band == "Pneumonia", 0), (Prediction.band == "Unsure", 1), else_=2)
    query = (
        select(Study, Prediction)
        .join(latest, latest.c.study_id == Study.id)
        .join(Prediction, Prediction.id == latest.c.pid)
        .order_by(band_rank, Prediction.score.desc(), Study.id)
        .limit(limit)
    )
    with session_scope(engine) as session:
        return [_row(study, pred) for study, pred in session.execute(query).all()]


def get_study(engine: Engine, study_id: int) -> dict[str, Any] | None:
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
        if study is None:
            return None
        pred = session.scalar(
            select(Prediction).where(Prediction.study_id == study_id).order_by(Prediction.id.desc()).limit(1)
        )
        return _row(study, pred)


def count_rows(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {
            "studies": session.scalar(select(func.count(Study.id))) or 0,
            "predictions": session.scalar(select(func.count(Prediction.id))) or 0,
        }


def _row(study: Study, pred: Prediction | None) -> dict[str, Any]:
    row = {k: getattr(study, k) for k in STUDY_FIELDS}
    row["id"] = study.id
    row["received_at"] = study.received_at
    if pred is not None:
        row.update({k: getattr(pred, k) for k in PREDICTION_FIELDS})
    return row
