"""Reads and idempotent writes, shared by the Writer deployment and the review UI.

Every function takes the caller's ``session`` (one transaction per unit of work, opened with
``Database.session()``), as in the FastAPI template's ``crud.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from xraylab.bands import BAND_ORDER
from xraylab.db.models import Base, Prediction, Study
from xraylab.messages import StudyRecord, Verdict, WriteResult, age_label

__all__ = ["record_prediction", "record_predictions", "get_study", "count_rows", "STUDY_COLUMNS",
           "PREDICTION_COLUMNS", "band_rank", "study_row"]

STUDY_COLUMNS = ("study_uid", "endpoint_id", "bucket", "object_key", "etag", "size_bytes", "content_type",
                 "hospital", "patient_id", "patient_name", "study_date", "study_instance_uid", "modality",
                 "view_position", "manufacturer", "accession_number", "patient_sex", "patient_age",
                 "study_description")
PREDICTION_COLUMNS = ("model_version", "score", "band", "fetch_ms", "infer_ms")

Row = TypeVar("Row", bound=Base)


def _insert_or_get(session: Session, row: Row, existing: Select[tuple[int]], *,
                   exclusive: bool = False) -> tuple[int, bool]:
    """(id, created): insert ``row`` unless a unique key says it exists, then return the existing id.

    The insert runs in a SAVEPOINT so that a duplicate (a redelivered event, or a concurrent writer
    that got there first) rolls back only itself. The look-up after a duplicate is a locking read, so
    that it sees the other writer's committed row even under MariaDB's REPEATABLE READ snapshot;
    ``exclusive`` when the caller may update that row next (a shared lock it then upgraded would deadlock
    with every other writer holding one)."""
    try:
        with session.begin_nested():
            session.add(row)
        return row.id, True  # type: ignore[attr-defined]
    except IntegrityError:
        found = session.scalar(existing.with_for_update(read=not exclusive))
        if found is None:
            raise
        return found, False


def record_prediction(session: Session, study: StudyRecord, verdict: Verdict, *,
                      fetch_ms: float | None = None) -> WriteResult:
    """Insert the study and its prediction unless they exist; safe to call again for the same event."""
    # A known study is locked exclusively: should this be a new model's score, its worklist keys change below,
    # and concurrent writers of the same study queue here instead of deadlocking there.
    study_id, study_created = _insert_or_get(session, Study(**_study_columns(study, verdict)),
                                             select(Study.id).where(Study.study_uid == study.study_uid),
                                             exclusive=True)
    prediction = Prediction(**_prediction_columns(study_id, verdict, fetch_ms))
    prediction_id, created = _insert_or_get(session, prediction, select(Prediction.id).where(
        (Prediction.study_id == study_id) & (Prediction.model_version == verdict.model_version)))
    if created and not study_created:  # another model's score of a known study: the worklist follows it
        session.execute(update(Study).where(Study.id == study_id).values(
            band_rank=band_rank(verdict.band), score=verdict.score))
    return WriteResult(study_id, prediction_id, created)


def record_predictions(session: Session,
                       rows: Sequence[tuple[StudyRecord, Verdict, float | None]]) -> list[WriteResult]:
    """Many ``record_prediction`` calls in a few statements: the studies are inserted together, then their
    predictions together, in one SAVEPOINT. Should any of them be stored already (a redelivered batch, a
    concurrent writer, the same object twice in one batch), the savepoint is rolled back and the batch
    takes the row-by-row path, so the result is always the same as calling ``record_prediction`` each.
    The insert comes first, with no read before it, so that SQLite takes its write lock by waiting its
    busy timeout rather than failing to upgrade a read transaction ("database is locked")."""
    if rows and len({study.study_uid for study, _, _ in rows}) == len(rows):
        try:
            with session.begin_nested():
                return _insert_new(session, rows)
        except IntegrityError:
            pass  # rolled back to the savepoint: row by row below
    return [record_prediction(session, study, verdict, fetch_ms=fetch_ms) for study, verdict, fetch_ms in rows]


def _insert_new(session: Session, rows: Sequence[tuple[StudyRecord, Verdict, float | None]]) -> list[WriteResult]:
    session.execute(insert(Study), [_study_columns(study, verdict) for study, verdict, _ in rows])
    study_ids: dict[str, int] = {uid: sid for uid, sid in session.execute(
        select(Study.study_uid, Study.id).where(Study.study_uid.in_([s.study_uid for s, _, _ in rows])))}
    keys = [(study_ids[study.study_uid], verdict.model_version) for study, verdict, _ in rows]
    session.execute(insert(Prediction), [_prediction_columns(study_id, verdict, fetch_ms)
                                         for (study_id, _), (_, verdict, fetch_ms) in zip(keys, rows, strict=True)])
    prediction_ids = {(study_id, version): pid for pid, study_id, version in session.execute(
        select(Prediction.id, Prediction.study_id, Prediction.model_version)
        .where(tuple_(Prediction.study_id, Prediction.model_version).in_(keys)))}
    return [WriteResult(key[0], prediction_ids[key], True) for key in keys]


def band_rank(band: str) -> int:
    """The band's place in the worklist's order (``BAND_ORDER``: highest risk first; unknown bands last)."""
    return BAND_ORDER.index(band) if band in BAND_ORDER else len(BAND_ORDER)


def _study_columns(study: StudyRecord, verdict: Verdict) -> dict[str, Any]:
    return {**study.columns(), "band_rank": band_rank(verdict.band), "score": verdict.score}


def _prediction_columns(study_id: int, verdict: Verdict, fetch_ms: float | None) -> dict[str, Any]:
    return {"study_id": study_id, "model_version": verdict.model_version, "score": verdict.score,
            "band": verdict.band, "fetch_ms": fetch_ms, "infer_ms": verdict.infer_ms}


def get_study(session: Session, study_id: int) -> dict[str, Any] | None:
    study = session.get(Study, study_id)
    if study is None:
        return None
    pred = session.scalar(
        select(Prediction).where(Prediction.study_id == study_id).order_by(Prediction.id.desc()).limit(1)
    )
    return study_row(study, pred)


def count_rows(session: Session) -> dict[str, int]:
    return {
        "studies": session.scalar(select(func.count(Study.id))) or 0,
        "predictions": session.scalar(select(func.count(Prediction.id))) or 0,
    }


def study_row(study: Study, pred: Prediction | None) -> dict[str, Any]:
    """A study as a dict: its columns, its review state, and ``pred``'s (its latest prediction, with
    ``prediction_id`` and ``predicted_at``) when given. ``patient_age`` as shown (``34 y``; the column holds
    DICOM's Age String, ``034Y``)."""
    row: dict[str, Any] = {k: getattr(study, k) for k in STUDY_COLUMNS}
    row["patient_age"] = age_label(study.patient_age)
    row.update(id=study.id, received_at=study.received_at, reviewed=study.reviewed,
               verdict_count=study.verdict_count, last_verdict_at=study.last_verdict_at)
    if pred is not None:
        row.update({k: getattr(pred, k) for k in PREDICTION_COLUMNS})
        row.update(prediction_id=pred.id, predicted_at=pred.created_at)
    return row
