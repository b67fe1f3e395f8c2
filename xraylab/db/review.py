"""The review side's reads and writes: the worklist (filtered, searched, paged, in risk order or sorted by a
column), the next unreviewed study, one study with its predictions, verdicts and the patient's prior studies,
verdicts (append-only), the audit trail and cached Grad-CAM maps.

Like ``crud.py``, every function takes the caller's ``session``; the review app opens one per action. Every
read of patient data takes the reader's ``scope`` (``xraylab.db.scope.ReadScope``, a required keyword): a study
outside it is not found, exactly as one that does not exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal, get_args

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from xraylab.bands import BAND_ORDER
from xraylab.db.crud import band_rank, study_row
from xraylab.db.models import AuditEvent, AuditListed, Heatmap, Prediction, Study, User, VerdictRow, utcnow
from xraylab.db.scope import ReadScope
from xraylab.labels import VERDICT_LABELS

__all__ = ["WorklistFilter", "WorklistPage", "worklist_page", "worklist_version", "hospitals", "study_detail",
           "record_verdict", "verdict_history", "record_audit", "audit_trail", "cached_heatmap", "store_heatmap",
           "StudyNotFoundError", "InvalidVerdictError", "MAX_NOTES", "ReviewStatus", "studies_by_keys",
           "study_in_scope", "SORT_KEYS", "DEFAULT_SORT", "MAX_SEARCH", "MAX_PRIORS", "next_unreviewed", "priors"]

MAX_NOTES = 2000  # characters of a verdict's notes
MAX_SEARCH = 200  # characters of a worklist search; more are ignored
MAX_PRIORS = 50  # a patient's prior studies shown with a study, newest first
# The worklist's orders (``WorklistFilter.sort``): "priority" is the triage order (unreviewed first, then band,
# highest risk first, then score, highest first); each other one sorts by one column, its empty values last in
# either direction, ties in id order.
SORT_KEYS = ("priority", "score", "study_date", "received", "hospital", "patient", "patient_id", "accession", "band")
DEFAULT_SORT = "priority"
ReviewStatus = Literal["all", "unreviewed", "reviewed"]


class StudyNotFoundError(LookupError):
    """No study with that id: it never existed, or it was deleted."""

    def __init__(self, study_id: int) -> None:
        super().__init__(f"study {study_id} does not exist (or was deleted)")
        self.study_id = study_id


class InvalidVerdictError(ValueError):
    """A verdict the app refuses: an unknown label, or notes too long."""


@dataclass(frozen=True)
class WorklistFilter:
    hospital: str | None = None
    band: str | None = None
    date_from: date | None = None  # study date, inclusive
    date_to: date | None = None
    status: ReviewStatus = "all"
    # Words that each must be found, in any case, in the patient's name (DOE^JOHN is "doe john"), patient ID or
    # accession number: "john doe", "doe john" and "doe" all find DOE^JOHN. Blank: no search.
    search: str | None = None
    sort: str = DEFAULT_SORT  # one of SORT_KEYS
    descending: bool = False  # the sort turned round (for "priority": reviewed first, lowest risk first)

    def __post_init__(self) -> None:
        if self.sort not in SORT_KEYS:
            raise ValueError(f"unknown sort {self.sort!r}: one of {', '.join(SORT_KEYS)}")
        object.__setattr__(self, "search", " ".join((self.search or "")[:MAX_SEARCH].split()) or None)
        object.__setattr__(self, "descending", bool(self.descending))
        if self.band is not None and self.band not in BAND_ORDER:
            raise ValueError(f"unknown band {self.band!r}: one of {', '.join(BAND_ORDER)}")
        if self.status not in get_args(ReviewStatus):
            raise ValueError(f"unknown review status {self.status!r}")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"the date range ends ({self.date_to}) before it starts ({self.date_from})")


@dataclass
class WorklistPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int
    filters: WorklistFilter = field(default_factory=WorklistFilter)

    @property
    def pages(self) -> int:
        return _page_count(self.total, self.page_size)


def _page_count(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


def _filtered(query: Any, filters: WorklistFilter, scope: ReadScope) -> Any:
    query = scope.where(query)
    if filters.hospital:
        query = query.where(Study.hospital == filters.hospital)
    if filters.band:
        query = query.where(Study.band_rank == band_rank(filters.band))
    if filters.date_from:
        query = query.where(Study.study_date >= filters.date_from.isoformat())
    if filters.date_to:
        query = query.where(Study.study_date <= filters.date_to.isoformat())
    if filters.status != "all":  # `= 1`, not `IS TRUE`, which MariaDB cannot look up in an index
        query = query.where(Study.reviewed == (filters.status == "reviewed"))
    for term in search_terms(filters.search):
        pattern = f"%{_escape_like(term)}%"
        query = query.where(or_(*(func.lower(column).like(pattern, escape=_LIKE_ESCAPE) for column in (
            func.replace(Study.patient_name, "^", " "), Study.patient_id, Study.accession_number))))
    return query.where(Study.band_rank.is_not(None))


_LIKE_ESCAPE = "!"  # not a backslash, which MariaDB reads as an escape in string literals as well


def _escape_like(term: str) -> str:
    """A search word as a LIKE pattern's literal text: ``%`` and ``_`` match themselves."""
    return term.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", _LIKE_ESCAPE + "%").replace(
        "_", _LIKE_ESCAPE + "_")


def search_terms(search: str | None) -> list[str]:
    """The lower-cased words of a search, a DICOM name's ``^`` read as a space (``DOE^JOHN``: doe, john)."""
    return (search or "").replace("^", " ").lower().split()


def _nulls_last(column: Any) -> Any:
    """An ORDER BY term that puts rows with no ``column`` after the others (SQLite and MariaDB alike, where
    MariaDB has no ``NULLS LAST``)."""
    return case((column.is_(None), 1), else_=0).asc()


def _order_by(sort: str, descending: bool) -> list[Any]:
    """The ORDER BY of a worklist sort, ending in the id: no two orders of the same rows differ. Empty values
    come last either way (``col IS NULL`` first in the order: SQLite and MariaDB alike, where MariaDB has no
    ``NULLS LAST``)."""
    def way(column: Any, reverse: bool = False) -> Any:
        return column.desc() if descending != reverse else column.asc()

    if sort == "priority":  # exactly the worklist index's order (ix_studies_worklist), or all of it turned round
        return [way(Study.reviewed), way(Study.band_rank), way(Study.score, reverse=True), way(Study.id)]
    if sort == "band":  # highest risk first, and the highest score first within a band (listed studies have one)
        return [way(Study.band_rank), way(Study.score, reverse=True), way(Study.id)]
    column = {"score": Study.score, "study_date": Study.study_date, "received": Study.received_at,
              "hospital": Study.hospital, "patient": func.lower(func.replace(Study.patient_name, "^", " ")),
              "patient_id": Study.patient_id, "accession": Study.accession_number}[sort]
    raw = {"patient": Study.patient_name}.get(sort, column)
    return [_nulls_last(raw), way(column), way(Study.id)]


def worklist_page(session: Session, filters: WorklistFilter | None = None, page: int = 1,
                  page_size: int = 50, *, scope: ReadScope) -> WorklistPage:
    """One page of the worklist of the studies in ``scope``, in ``filters.sort`` order: by default unreviewed
    studies first, then by band (highest risk first), then by score. Each row carries its latest prediction and
    who reviewed it (``reviewers``: name -> latest label)."""
    filters = filters or WorklistFilter()
    total = session.scalar(_filtered(select(func.count(Study.id)), filters, scope)) or 0
    page = min(max(1, page), _page_count(total, page_size))
    # The page's ids first (in the default order from the worklist index alone: it holds every sort key and the
    # id), then their rows: a deep page skips index entries, not whole rows.
    ids = list(session.scalars(
        _filtered(select(Study.id), filters, scope)
        .order_by(*_order_by(filters.sort, filters.descending))
        .offset((page - 1) * page_size).limit(page_size)
    ))
    by_id = {s.id: s for s in session.scalars(select(Study).where(Study.id.in_(ids)))} if ids else {}
    studies = [by_id[i] for i in ids if i in by_id]
    latest = _latest_predictions(session, ids)
    reviewers: dict[int, dict[str, str]] = {}
    if ids:
        for study_id, name, label in session.execute(
                select(VerdictRow.study_id, User.name, VerdictRow.label).join(User, User.id == VerdictRow.user_id)
                .where(VerdictRow.study_id.in_(ids)).order_by(VerdictRow.id)):
            reviewers.setdefault(study_id, {})[name] = label  # the latest verdict of each doctor
    rows = []
    for study in studies:
        row = study_row(study, latest.get(study.id))
        row["reviewers"] = reviewers.get(study.id, {})
        rows.append(row)
    return WorklistPage(rows, total, page, page_size, filters)


def next_unreviewed(session: Session, filters: WorklistFilter | None, after_id: int | None, *,
                    scope: ReadScope) -> int | None:
    """The study to open after ``after_id`` ("save and go to the next"): the first unreviewed study in the order of
    ``filters`` (its search, hospital, band, dates and sort; its status taken as unreviewed) other than
    ``after_id``, within ``scope``; None when there is none."""
    filters = replace(filters or WorklistFilter(), status="unreviewed")
    query = _filtered(select(Study.id), filters, scope)
    if after_id is not None:
        query = query.where(Study.id != after_id)
    return session.scalar(query.order_by(*_order_by(filters.sort, filters.descending)).limit(1))


def _latest_predictions(session: Session, study_ids: list[int]) -> dict[int, Prediction]:
    if not study_ids:
        return {}
    newest = (select(func.max(Prediction.id)).where(Prediction.study_id.in_(study_ids))
              .group_by(Prediction.study_id))
    return {p.study_id: p for p in session.scalars(select(Prediction).where(Prediction.id.in_(newest)))}


def studies_by_keys(session: Session, bucket: str, keys: list[str]) -> list[dict[str, Any]]:
    """The studies stored for these object keys of ``bucket``, each with its latest prediction."""
    studies = session.scalars(select(Study).where((Study.bucket == bucket) & Study.object_key.in_(keys))).all()
    latest = _latest_predictions(session, [s.id for s in studies])
    return [study_row(s, latest.get(s.id)) for s in studies]


def worklist_version(session: Session) -> tuple[int, int, int]:
    """Changes whenever a study, a prediction or a verdict is added: what live refresh polls (three index
    look-ups, however large the tables)."""
    return (session.scalar(select(func.max(Study.id))) or 0, session.scalar(select(func.max(Prediction.id))) or 0,
            session.scalar(select(func.max(VerdictRow.id))) or 0)


def hospitals(session: Session, *, scope: ReadScope) -> list[str]:
    """The hospitals with studies that ``scope`` reads (the worklist's filter choices)."""
    if not scope.network:
        return sorted(scope.hospitals)  # the user's own, whether or not they have studies yet
    return [h for h in session.scalars(select(Study.hospital).where(Study.hospital.is_not(None))
                                       .distinct().order_by(Study.hospital))]


def study_in_scope(session: Session, study_id: int, scope: ReadScope) -> Study:
    """The study, if ``scope`` reads it; else ``StudyNotFoundError``, as for a study that does not exist."""
    study = session.get(Study, study_id)
    if study is None or not scope.allows(study.hospital):
        raise StudyNotFoundError(study_id)
    return study


def study_detail(session: Session, study_id: int, *, scope: ReadScope) -> dict[str, Any]:
    """The study's metadata, its latest prediction (with ``prediction_id`` and ``predicted_at``), every
    prediction (``predictions``), every verdict (``verdicts``, oldest first) and the patient's other studies
    (``priors``, see ``priors``)."""
    study = study_in_scope(session, study_id, scope)
    predictions = session.scalars(select(Prediction).where(Prediction.study_id == study_id)
                                  .order_by(Prediction.id)).all()
    row = study_row(study, predictions[-1] if predictions else None)
    row["predictions"] = [{"model_version": p.model_version, "score": p.score, "band": p.band,
                           "created_at": p.created_at} for p in predictions]
    row["verdicts"] = verdict_history(session, study_id)
    row["priors"] = priors(session, study, scope=scope)
    return row


def priors(session: Session, study: Study, *, scope: ReadScope, limit: int = MAX_PRIORS) -> list[dict[str, Any]]:
    """The same patient's other studies that ``scope`` reads, newest study date first (then newest received): the
    same Patient ID from the same hospital, which issues it (two hospitals' "P1" are two patients). None for a
    study with no Patient ID or no hospital (whose IDs no one issued that we know). Each: ``id``, ``study_date``,
    ``received_at``, ``band`` and ``score`` (the latest prediction's), ``reviewed``, ``accession_number``,
    ``study_description``, ``modality``."""
    if not study.patient_id or not study.hospital:
        return []
    query = scope.where(select(Study).where((Study.patient_id == study.patient_id)
                                           & (Study.hospital == study.hospital) & (Study.id != study.id)))
    found = session.scalars(query.order_by(_nulls_last(Study.study_date), Study.study_date.desc(),
                                           Study.received_at.desc(), Study.id.desc()).limit(limit)).all()
    latest = _latest_predictions(session, [s.id for s in found])
    return [{"id": s.id, "study_date": s.study_date, "received_at": s.received_at,
             "band": latest[s.id].band if s.id in latest else None,
             "score": s.score, "reviewed": s.reviewed,
             "accession_number": s.accession_number, "study_description": s.study_description,
             "modality": s.modality} for s in found]


def verdict_history(session: Session, study_id: int) -> list[dict[str, Any]]:
    return [{"id": v.id, "doctor": name, "label": v.label, "notes": v.notes or "", "created_at": v.created_at,
             "model_version": v.model_version, "score": v.score}
            for v, name in session.execute(select(VerdictRow, User.name).join(User, User.id == VerdictRow.user_id)
                                           .where(VerdictRow.study_id == study_id).order_by(VerdictRow.id))]


def record_verdict(session: Session, study_id: int, user_id: int, label: str, notes: str | None = None, *,
                   scope: ReadScope, prediction_id: int | None = None) -> int:
    """Add a verdict (never changes another one) with the prediction the doctor saw (``prediction_id``, as shown
    when the study was opened; default the latest), and mark the study reviewed; returns the verdict's id.
    Raises ``InvalidVerdictError`` or ``StudyNotFoundError``."""
    if label not in VERDICT_LABELS:
        raise InvalidVerdictError(f"unknown verdict {label!r}: one of {', '.join(VERDICT_LABELS)}")
    notes = (notes or "").strip() or None
    if notes is not None and len(notes) > MAX_NOTES:
        raise InvalidVerdictError(f"notes are {len(notes)} characters; at most {MAX_NOTES}")
    # Marking the study first takes its row lock: two doctors' verdicts on one study queue here, both kept.
    now = utcnow()
    marked = session.execute(scope.where(update(Study).where(Study.id == study_id)).values(
        reviewed=True, verdict_count=Study.verdict_count + 1, last_verdict_at=now))
    if marked.rowcount == 0:  # type: ignore[attr-defined]
        raise StudyNotFoundError(study_id)
    latest = None
    if prediction_id is not None:  # the one shown, should a newer model have scored the study meanwhile
        latest = session.scalar(select(Prediction).where((Prediction.id == prediction_id)
                                                         & (Prediction.study_id == study_id)))
    latest = latest or _latest_predictions(session, [study_id]).get(study_id)
    verdict = VerdictRow(study_id=study_id, user_id=user_id, label=label, notes=notes, created_at=now,
                         prediction_id=latest.id if latest else None,
                         model_version=latest.model_version if latest else None,
                         score=latest.score if latest else None)
    session.add(verdict)
    session.flush()
    return verdict.id


def record_audit(session: Session, user_name: str | None, action: str, study_id: int | None = None,
                 detail: str | None = None, *, listed: list[int] | None = None) -> None:
    """One line of the audit trail. ``detail`` must never carry patient data (ids, actions, filters, labels
    only); ``listed``: the studies a listing showed (a worklist page), each findable by ``audit_trail``."""
    event = AuditEvent(at=utcnow(), user_name=user_name, action=action, study_id=study_id,
                       detail=(detail or None) and detail[:512])
    session.add(event)
    if listed:
        session.flush()
        session.add_all(AuditListed(audit_id=event.id, study_id=i) for i in sorted(set(listed)))


def audit_trail(session: Session, study_id: int | None = None, user_name: str | None = None,
                limit: int = 1000, *, patient_id: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` events, oldest first: of one study (opened, its pictures, verdicts, and the worklist
    pages that listed it), of one user, or of every study of one patient (``patient_id``: who saw patient P)."""
    query = select(AuditEvent)
    studies: list[int] | None = None
    if patient_id is not None:
        studies = list(session.scalars(select(Study.id).where(Study.patient_id == patient_id)))
    if study_id is not None:
        studies = [study_id] if studies is None or study_id in studies else []
    if studies is not None:
        listing = select(AuditListed.audit_id).where(AuditListed.study_id.in_(studies))
        query = query.where(AuditEvent.study_id.in_(studies) | AuditEvent.id.in_(listing))
    if user_name is not None:
        query = query.where(AuditEvent.user_name == user_name)
    newest = session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)).all()  # the last ``limit``
    listed: dict[int, list[int]] = {}
    if studies:
        for audit_id, listed_id in session.execute(select(AuditListed.audit_id, AuditListed.study_id).where(
                AuditListed.audit_id.in_([e.id for e in newest]) & AuditListed.study_id.in_(studies))):
            listed.setdefault(audit_id, []).append(listed_id)
    return [{"at": e.at, "user": e.user_name, "action": e.action, "study_id": e.study_id, "detail": e.detail,
             "listed": sorted(listed.get(e.id, []))} for e in reversed(newest)]


def cached_heatmap(session: Session, study_id: int, model_version: str) -> bytes | None:
    return session.scalar(select(Heatmap.png).where((Heatmap.study_id == study_id)
                                                    & (Heatmap.model_version == model_version)))


def store_heatmap(session: Session, study_id: int, model_version: str, png: bytes) -> None:
    """Cache a map; a concurrent request that stored the same one first wins (the maps are equal)."""
    from sqlalchemy.exc import IntegrityError

    try:
        with session.begin_nested():
            session.add(Heatmap(study_id=study_id, model_version=model_version, png=png))
    except IntegrityError:
        pass
