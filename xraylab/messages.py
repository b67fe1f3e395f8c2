"""The typed messages that travel between the pipeline's stages, one definition each.

    S3 event --events.parse_s3_event--> ObjectToProcess
    ObjectToProcess --Fetcher (sources: bytes + StudyMetadata = FetchedObject, decoded where read)--> PreparedObject
    PreparedObject.image (a ModelInput: the model-sized array, not the bytes) --Classifier--> Verdict
    PreparedObject.record (StudyRecord); (StudyRecord, Verdict) --Writer--> WriteResult
    the whole step --> Outcome (OutcomeStatus WRITTEN / DUPLICATE / REJECTED), read by the ingest actor

They carry no credentials. Only ``StudyMetadata`` (and so ``FetchedObject`` and ``StudyRecord``)
carries patient data; logs name studies by ``study_uid``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

import numpy as np

from xraylab.errors import RejectedInputError, RejectReason

__all__ = ["ObjectToProcess", "StudyMetadata", "FetchedObject", "StudyRecord", "ModelInput", "PreparedObject",
           "Verdict", "WriteResult", "OutcomeStatus", "Outcome", "study_uid", "PATIENT_SEXES", "patient_sex",
           "patient_age", "age_between", "age_label", "clean_text", "MAX_STUDY_DESCRIPTION"]


@dataclass(frozen=True)
class ObjectToProcess:
    """One object an S3 event asks us to process. Carries no credentials and no patient data."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    endpoint_id: str | None = None
    event_name: str = "ObjectCreated:Put"
    event_time: str | None = None
    # The key read the other way, where it differs: AWS and MinIO URL-encode keys in events and Ceph RGW
    # does not, so a key that is not found as ``key`` is tried as ``alt_key`` before it counts as missing.
    alt_key: str | None = None


_RFC2047_PREFIX, _RFC2047_SUFFIX = "=?utf-8?b?", "?="


def _encode_header(value: str) -> str:
    """S3 user metadata must be ASCII: non-ASCII values travel RFC 2047 base64-encoded."""
    if value.isascii():
        return value
    return _RFC2047_PREFIX + base64.b64encode(value.encode("utf-8")).decode("ascii") + _RFC2047_SUFFIX


def _decode_header(name: str, value: str) -> str:
    """A header as the uploader wrote it. A broken encoded word is refused (``bad_metadata``) rather than
    stored as it is: a patient name that reads as garbage must not end up beside an X-ray."""
    if value.lower().startswith(_RFC2047_PREFIX) and value.endswith(_RFC2047_SUFFIX):
        try:
            decoded = base64.b64decode(value[len(_RFC2047_PREFIX):-len(_RFC2047_SUFFIX)], validate=True)
            return decoded.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise RejectedInputError(RejectReason.BAD_METADATA,
                                     f"x-amz-meta-{name} is an RFC 2047 word that does not decode: {type(exc).__name__}"
                                     ) from exc
    if not value.isprintable():
        raise RejectedInputError(RejectReason.BAD_METADATA, f"x-amz-meta-{name} holds control characters")
    return value


PATIENT_SEXES = ("M", "F", "O")  # DICOM PatientSex: male, female, other
_SEX_WORDS = {"MALE": "M", "FEMALE": "F", "OTHER": "O"}
MAX_STUDY_DESCRIPTION = 64  # DICOM StudyDescription is an LO: 64 characters
_AGE = re.compile(r"^(\d{1,3})\s*([DWMY])?$", re.IGNORECASE)
_AGE_UNITS = {"D": "d", "W": "w", "M": "m", "Y": "y"}
_MAX_AGE = {"D": 999, "W": 999, "M": 999, "Y": 150}


def clean_text(value: str | None, limit: int) -> str | None:
    """Printable text (control characters dropped), trimmed to ``limit`` characters; None when empty."""
    if value is None:
        return None
    text = " ".join("".join(ch for ch in str(value) if ch.isprintable()).split())
    return text[:limit].strip() or None


def patient_sex(value: str | None) -> str | None:
    """DICOM PatientSex (``M``, ``F`` or ``O``) from a tag or an upload's metadata (any case; ``male``, ``female``
    and ``other`` too); None for anything else."""
    text = (clean_text(value, 16) or "").upper()
    return text if text in PATIENT_SEXES else _SEX_WORDS.get(text)


def patient_age(value: str | None) -> str | None:
    """An age as DICOM's Age String (``034Y``; units D, W, M, Y), from ``034Y``, ``34y``, ``34 Y`` or ``34``
    (years); None for anything else, or for more than 150 years."""
    match = _AGE.match(clean_text(value, 16) or "")
    if match is None:
        return None
    number, unit = int(match.group(1)), (match.group(2) or "Y").upper()
    return f"{number:03d}{unit}" if number <= _MAX_AGE[unit] else None


def age_between(birth: date, on: date) -> str | None:
    """The Age String of someone born on ``birth`` at ``on``: years from 2, months under that, then weeks, then
    days, as modalities fill PatientAge; None when ``on`` comes before ``birth``."""
    if on < birth:
        return None
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 2:
        return patient_age(f"{years}Y")
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    if months >= 1:
        return f"{months:03d}M"
    days = (on - birth).days
    return f"{days // 7:03d}W" if days >= 7 else f"{days:03d}D"


def age_label(value: str | None) -> str | None:
    """An Age String as shown: ``034Y`` -> ``34 y``, ``006M`` -> ``6 m``; None when it is none."""
    age = patient_age(value)
    return f"{int(age[:3])} {_AGE_UNITS[age[3]]}" if age else None


@dataclass(frozen=True)
class StudyMetadata:
    """Patient and study data of one upload: carried as S3 user metadata (``x-amz-meta-<name>``) for a JPEG or
    PNG, read from the tags for a DICOM object (``xraylab.dicom.tag_metadata``, which also fills the four marked
    DICOM only).

    ``S3_KEYS`` is the one place the metadata names are spelled: the uploader writes them with
    ``to_s3_metadata`` and the Fetcher reads them with ``from_s3_metadata``."""

    hospital: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    study_date: str | None = None
    study_instance_uid: str | None = None  # DICOM only, as are the three below
    modality: str | None = None
    view_position: str | None = None
    manufacturer: str | None = None
    accession_number: str | None = None  # the RIS's order; DICOM's AccessionNumber, or an upload's metadata
    # What the worklist shows of the patient and the study: DICOM's PatientSex (M, F or O), PatientAge as an Age
    # String (034Y; from PatientBirthDate at StudyDate where the tag is absent) and StudyDescription, or an upload's
    # metadata. Checked here whatever their source: a sex other than M/F/O, or an age that is no age, is None.
    patient_sex: str | None = None
    patient_age: str | None = None
    study_description: str | None = None

    S3_KEYS = {"hospital": "hospital", "patient_id": "patient-id", "patient_name": "patient-name",
               "study_date": "study-date", "accession_number": "accession-number", "patient_sex": "patient-sex",
               "patient_age": "patient-age", "study_description": "study-description"}

    def __post_init__(self) -> None:
        object.__setattr__(self, "patient_sex", patient_sex(self.patient_sex))
        object.__setattr__(self, "patient_age", patient_age(self.patient_age))
        object.__setattr__(self, "study_description", clean_text(self.study_description, MAX_STUDY_DESCRIPTION))

    def to_s3_metadata(self) -> dict[str, str]:
        return {key: _encode_header(value) for attr, key in self.S3_KEYS.items()
                if (value := getattr(self, attr)) is not None}

    @classmethod
    def from_s3_metadata(cls, metadata: dict[str, str]) -> StudyMetadata:
        """Raises ``RejectedInputError`` (``bad_metadata``) for a value that cannot be decoded."""
        lowered = {k.lower(): v for k, v in metadata.items()}
        return cls(**{attr: _decode_header(key, lowered[key]) if key in lowered else None
                      for attr, key in cls.S3_KEYS.items()})


@dataclass(frozen=True)
class FetchedObject:
    """An object's bytes and what the store says about it; ``key`` is the key it was found under."""

    data: bytes
    etag: str | None
    content_type: str | None
    metadata: StudyMetadata = field(default_factory=StudyMetadata)
    endpoint_id: str = ""
    fetch_ms: float = 0.0
    key: str | None = None


def study_uid(endpoint_id: str, bucket: str, key: str, etag: str | None) -> str:
    """Stable id of one uploaded object version; logs use it instead of anything about the patient."""
    raw = "\x1f".join([endpoint_id, bucket, key, etag or ""])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class StudyRecord:
    """What the ``studies`` table stores about one uploaded object."""

    study_uid: str
    endpoint_id: str
    bucket: str
    object_key: str
    etag: str | None = None
    size_bytes: int | None = None
    content_type: str | None = None
    metadata: StudyMetadata = field(default_factory=StudyMetadata)

    @classmethod
    def of(cls, item: ObjectToProcess, fetched: FetchedObject) -> StudyRecord:
        etag = fetched.etag or item.etag
        key = fetched.key or item.key
        return cls(study_uid=study_uid(fetched.endpoint_id, item.bucket, key, etag),
                   endpoint_id=fetched.endpoint_id, bucket=item.bucket, object_key=key, etag=fetched.etag,
                   size_bytes=len(fetched.data), content_type=fetched.content_type, metadata=fetched.metadata)

    def columns(self) -> dict[str, Any]:
        """Column name -> value for the ``studies`` row."""
        values = {k: v for k, v in asdict(self).items() if k != "metadata"}
        return {**values, **asdict(self.metadata)}


@dataclass(frozen=True)
class ModelInput:
    """An image decoded where its bytes were read (the edge: the Fetcher, or the Ingress for HTTP) into what the
    model takes: ``float32 (H, W, 1)`` in [0, 1], 64 KB at 128 px where the study was up to 20 MB. ``spec`` is the
    preprocessing it went through (``PreprocessSpec.key()``); the Classifier scores it only with a model of that
    spec."""

    pixels: np.ndarray
    spec: str
    decode_ms: float = 0.0


@dataclass(frozen=True)
class PreparedObject:
    """What the Fetcher hands on for one object: the row it becomes and its model input. The bytes stay in the
    Fetcher, so a study crosses no deployment hop at its own size."""

    record: StudyRecord
    image: ModelInput
    fetch_ms: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one image."""

    score: float
    band: str
    model_version: str
    synthetic_model: bool
    infer_ms: float = 0.0
    notice: str = ""  # the scoring model's card notice: trained on generated images, or research use only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WriteResult:
    study_id: int
    prediction_id: int
    created: bool  # False: the row was already there (a redelivered event)


class OutcomeStatus(StrEnum):
    WRITTEN = "written"  # a new prediction row
    DUPLICATE = "duplicate"  # the row was already there: a redelivered event
    REJECTED = "rejected"  # bad input: goes to the dead-letter topic


@dataclass(frozen=True)
class Outcome:
    """What became of one object. Transient failures are raised, never returned."""

    status: OutcomeStatus
    study_uid: str | None = None
    reason: RejectReason | None = None
    detail: str = ""
    study_id: int | None = None
    prediction_id: int | None = None
    verdict: Verdict | None = None
    total_ms: float = 0.0

    @classmethod
    def rejected(cls, reason: RejectReason, detail: str, study_uid: str | None) -> Outcome:
        return cls(OutcomeStatus.REJECTED, study_uid=study_uid, reason=reason, detail=detail)
