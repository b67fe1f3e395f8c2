"""The schema: studies (one uploaded image), predictions (one model's score of a study), and the review
side: users with their sessions and API keys, doctors' verdicts (the labels), the audit trail and
cached Grad-CAM heatmaps; and the model monitor's state, figures and alerts.

Uniqueness makes writes idempotent: a study is identified by ``study_uid`` (a hash of endpoint,
bucket, key and eTag: ``xraylab.messages.study_uid``), and a study gets at most one prediction per
model version.

The worklist's sort keys live on ``studies`` (``reviewed``, ``band_rank``, ``score`` of the latest
prediction), kept by the writes that change them, so that one index serves its order and paging stays
fast at 100,000 studies (``benchmarks/worklist.py``). Verdicts are never updated: a change of mind or
a second doctor's opinion is a new row.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "Study", "Prediction", "User", "UserHospital", "LoginThrottle", "LoginDevice", "ApiKey",
           "UserSession", "VerdictRow", "AuditEvent", "AuditListed", "Heatmap", "MonitorRow",
           "MonitorSetting", "MonitorResult", "MonitorAlert", "ResearchExport", "Delivery", "utcnow", "as_utc"]


def _byte_for_byte(length: int) -> String:
    """A string column compared byte for byte: a binary collation on MariaDB (SQLite compares so already)."""
    return String(length).with_variant(mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql")


# Hospitals' names compare byte for byte, as a reader's scope does in Python.
HOSPITAL_NAME = _byte_for_byte(128)
# A patient id too (migration 0007): a prior study is the same patient's, not one whose id differs in case or
# trailing spaces.
PATIENT_ID = _byte_for_byte(128)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite and MariaDB give back naive datetimes; every time here is written in UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        # The worklist's order (unreviewed first, then band, then score) and its per-hospital view.
        Index("ix_studies_worklist", "reviewed", "band_rank", text("score DESC"), "id"),
        Index("ix_studies_hospital_worklist", "hospital", "reviewed", "band_rank", text("score DESC"), "id"),
        Index("ix_studies_study_date", "study_date"),
        Index("ix_studies_patient", "patient_id", "hospital"),  # a patient's prior studies, who saw patient P
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    endpoint_id: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[str] = mapped_column(String(255))
    object_key: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str | None] = mapped_column(String(128))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(128))
    hospital: Mapped[str | None] = mapped_column(HOSPITAL_NAME)
    patient_id: Mapped[str | None] = mapped_column(PATIENT_ID)
    patient_name: Mapped[str | None] = mapped_column(String(256))
    study_date: Mapped[str | None] = mapped_column(String(32))
    # What the worklist shows of the patient and the study (DICOM's tags, or an upload's metadata): PatientSex
    # (M, F or O), PatientAge as an Age String (034Y) and StudyDescription.
    patient_sex: Mapped[str | None] = mapped_column(String(1))
    patient_age: Mapped[str | None] = mapped_column(String(4))
    study_description: Mapped[str | None] = mapped_column(String(64))
    # A DICOM study's own attributes (empty for a JPEG or PNG).
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    view_position: Mapped[str | None] = mapped_column(String(16))
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))  # the RIS's order (DICOM AccessionNumber)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The worklist's sort keys: the latest prediction's band (index in xraylab.bands.BAND_ORDER) and score,
    # and whether any doctor recorded a verdict (with how many verdicts and when the last one came).
    band_rank: Mapped[int | None] = mapped_column(SmallInteger)
    score: Mapped[float | None] = mapped_column(Float)
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("0"))
    verdict_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_verdict_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    predictions: Mapped[list[Prediction]] = relationship(back_populates="study")


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("study_id", "model_version", name="uq_prediction_study_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(16), index=True)
    fetch_ms: Mapped[float | None] = mapped_column(Float)
    infer_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="predictions")


class User(Base):
    """A person (role ``doctor`` or ``admin``) or a machine client's owner. Passwords are argon2 hashes; a
    directory account (``source`` ``directory``) has none that can match: its password is the directory's.

    What a user may read of patients: the studies of its hospitals (``hospitals``), or of every hospital with
    the network-wide reading grant (``network_reader``) that an admin gives explicitly. A role reads nothing
    by itself: an admin without hospitals or the grant manages accounts and reads no patient."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("0"))
    network_reader: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("0"))
    source: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hospitals: Mapped[list[UserHospital]] = relationship(cascade="all, delete-orphan", lazy="selectin")


class UserHospital(Base):
    """One hospital whose patients a user may read."""

    __tablename__ = "user_hospitals"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    hospital: Mapped[str] = mapped_column(HOSPITAL_NAME, primary_key=True)


class LoginThrottle(Base):
    """Consecutive failed logins of one name, whether it is an account's or not: the same rule and the same
    table for both, so that neither the answer nor its time tells which names exist."""

    __tablename__ = "login_throttle"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginDevice(Base):
    """A browser where a user signed in before (its cookie's SHA-256): such a login is not held back by the
    per-address limit nor by a lock someone else's guesses put on the account (OWASP's device cookies)."""

    __tablename__ = "login_devices"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A bearer key for the HTTP API: ``xrk_<key_id>_<secret>``; only the secret's SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(128))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UserSession(Base):
    """A browser session: the cookie's token is random; only its SHA-256 is stored."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("0"))


class VerdictRow(Base):
    """A doctor's verdict on a study: the label the monitor reads. Never updated, never deleted by the app;
    the prediction it was given against is kept beside it."""

    __tablename__ = "verdicts"
    __table_args__ = (Index("ix_verdicts_study", "study_id", "id"), Index("ix_verdicts_created_at", "created_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    label: Mapped[str] = mapped_column(String(16))
    notes: Mapped[str | None] = mapped_column(Text)
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id", ondelete="SET NULL"))
    model_version: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """Who did what, when: logins, studies opened, verdicts recorded. ``study_id`` is no foreign key, so the
    trail outlives a deleted study; ``detail`` never holds patient names."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_study", "study_id", "id"), Index("ix_audit_at", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    user_name: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(512))


class AuditListed(Base):
    """A study shown in a listing (a worklist page) that one audit event records: who saw which names."""

    __tablename__ = "audit_listed"
    __table_args__ = (Index("ix_audit_listed_study", "study_id"),)

    audit_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class Heatmap(Base):
    """A Grad-CAM map of one study under one model, cached as an 8-bit PNG at the model's input size."""

    __tablename__ = "heatmaps"
    __table_args__ = (UniqueConstraint("study_id", "model_version", name="uq_heatmap_study_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(64))
    png: Mapped[bytes] = mapped_column(LargeBinary(2**24 - 1))  # MEDIUMBLOB on MySQL
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MonitorRow(Base):
    """The monitor of one served model version: its state (``xraylab.monitor.states``), where its last drift
    run stopped (the newest prediction id it covered) and its alert streaks (JSON)."""

    __tablename__ = "monitors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    last_prediction_id: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # What the last performance figures covered (newest prediction, labels, newest verdict): unchanged, no new run.
    performance_key: Mapped[str | None] = mapped_column(String(64))
    streaks: Mapped[str | None] = mapped_column(Text().with_variant(mysql.MEDIUMTEXT(), "mysql"))
    last_health_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_drift_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MonitorSetting(Base):
    """Settings of the monitor that every node must see alike, such as the thresholds in effect (JSON)."""

    __tablename__ = "monitor_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MonitorResult(Base):
    """One figure of one monitor run: a metric for all hospitals (``hospital`` = "all") or one, its value, the
    number of images or labels behind it, its status under the thresholds then in effect, and details (JSON)."""

    __tablename__ = "monitor_results"
    __table_args__ = (Index("ix_monitor_results_series", "model_version", "metric", "hospital", "run_at"),
                      Index("ix_monitor_results_age", "model_version", "run_at"))  # retention's range

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(String(64))
    run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    metric: Mapped[str] = mapped_column(String(32))
    hospital: Mapped[str] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)


class MonitorAlert(Base):
    """An alert: fired when a limit was crossed, resolved (``resolved_at``) when the metric came back."""

    __tablename__ = "monitor_alerts"
    __table_args__ = (Index("ix_monitor_alerts_open", "model_version", "resolved_at"),
                      Index("ix_monitor_alerts_fired", "fired_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))
    hospital: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    limit_value: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(String(512))
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ResearchExport(Base):
    """The export log: what became of a study under one key: ``exported`` (one de-identified copy in the research
    bucket) or ``refused`` (with the reason, so no later run tries it again). It names the study by its row id and
    the patient by the keyed pseudonym only: never a name, a patient id or a UID."""

    __tablename__ = "research_exports"
    __table_args__ = (UniqueConstraint("study_id", "key_id", name="uq_research_export_study_key"),
                      Index("ix_research_exports_exported_at", "exported_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    key_id: Mapped[str] = mapped_column(String(16))  # which pseudonymisation key (a digest of it, not the key)
    status: Mapped[str] = mapped_column(String(16))  # exported | refused
    reason: Mapped[str | None] = mapped_column(String(64))  # why refused: not_deidentifiable, missing_object...
    pseudonym: Mapped[str | None] = mapped_column(String(64))
    bucket: Mapped[str | None] = mapped_column(String(255))
    object_key: Mapped[str | None] = mapped_column(String(1024))
    band: Mapped[str | None] = mapped_column(String(16))
    model_version: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(255))  # the de-identification method, as written in the file
    exported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Delivery(Base):
    """The outbox: one model's result of one study for one destination (``pacs/<name>``: the SR and the Grad-CAM
    picture stored into that PACS; ``ris/<name>``: an HL7 ORU^R01 to that RIS). Written in the transaction that
    stores the prediction, so that no result is scored and forgotten; ``queued`` until the destination took it
    (``sent``) or refused it for good (``failed``, with the reason; ``xraylab outbox retry`` queues it again).
    ``message_id`` is what a resend repeats for the receiver to de-duplicate: the SR's SOP Instance UID, or the
    HL7 message control id."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("prediction_id", "destination", name="uq_delivery_prediction_destination"),
                      Index("ix_deliveries_due", "status", "destination", "next_attempt_at", "id"),
                      Index("ix_deliveries_study", "study_id"),
                      Index("ix_deliveries_sent_at", "sent_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16))  # queued | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(512))
    message_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
