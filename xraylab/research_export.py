"""The de-identified research export (``xraylab export research``): DICOM studies whose latest band is one of
``RESEARCH_BANDS`` (the reference pipeline exports the Unsure ones) are copied to ``RESEARCH_BUCKET``,
de-identified by ``xraylab.deid`` under the HMAC key ``RESEARCH_KEY``.

Each exported file is stored as ``<pseudonym>/<new study UID>/<new SOP instance UID>.dcm``: the same study under
the same key always lands on the same key, so an export interrupted after the upload and before its log row is
simply done again. The export log (``research_exports``) names the study by its row id and the patient by the
pseudonym, with the key's id (a digest, not the key), the band, the model and the method written into the file;
never a name, a patient id or an original UID. Only DICOM studies are candidates (JPEG and PNG have no tags to
de-identify); one that cannot be exported is logged as refused, with why, and not tried again under that key:
``burned_in_text`` when OCR still reads text in its pixels once cleaned, ``no_issuer`` when neither its Issuer of
Patient ID nor the study's hospital says whose record number its Patient ID is. Every image is looked for text by
OCR (``xraylab.ocr``): without the ``tesseract`` command the export does not start.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from xraylab.db.crud import band_rank, get_study
from xraylab.db.models import ResearchExport, Study
from xraylab.db.session import Database
from xraylab.dicom import DICOM_MEDIA_TYPE, is_dicom, read_dataset
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.imaging import InvalidImageError
from xraylab.settings import Settings
from xraylab.sources import Sources
from xraylab.storage import make_s3_client

__all__ = ["ExportReport", "export_research", "key_id"]

log = logging.getLogger("xraylab.research_export")


@dataclass
class ExportReport:
    exported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # refused, by why: missing_object, not_deidentifiable...

    def to_dict(self) -> dict[str, Any]:
        return {"exported": self.exported, "skipped": dict(self.skipped)}


def key_id(key: bytes) -> str:
    """Which key an export used: 16 hex digits of a SHA-256 of it (the key itself cannot be read back)."""
    return hashlib.sha256(b"xraylab-research-key:" + key).hexdigest()[:16]


def _candidates(db: Database, ranks: list[int], kid: str, limit: int) -> list[int]:
    """Ids of the DICOM studies in the bands that this key has neither exported nor refused, oldest first."""
    done = select(ResearchExport.study_id).where(ResearchExport.key_id == kid)
    with db.session() as session:
        return list(session.scalars(
            select(Study.id).where(Study.band_rank.in_(ranks), Study.study_instance_uid.is_not(None),
                                   Study.id.not_in(done)).order_by(Study.id).limit(limit)))


def _log(db: Database, study: dict[str, Any], kid: str, **columns: Any) -> None:
    with db.session() as session:
        session.add(ResearchExport(study_id=study["id"], key_id=kid, band=study.get("band"),
                                   model_version=study.get("model_version"), **columns))


def export_research(db: Database, settings: Settings, *, bands: list[str] | None = None, limit: int = 1000,
                    sources: Sources | None = None) -> ExportReport:
    """Export up to ``limit`` DICOM studies of ``bands`` (default ``settings.research_bands()``) that
    ``RESEARCH_KEY`` has not exported or refused yet; the report counts what was exported and what was refused,
    and why. A study that cannot be exported (its object gone, its pixels undecodable, burned-in text no rule
    covers) is logged as refused and not tried again; a store or database that is down stops the run. Raises
    ``xraylab.ocr.TesseractMissingError`` before anything is read when Tesseract is not installed: every image
    is looked for burned-in text, never exported unlooked at."""
    from xraylab.deid import DeidPolicy, DeidRefused, deidentify
    from xraylab.ocr import OcrError, TesseractMissingError, require_tesseract

    require_tesseract()
    key = settings.RESEARCH_KEY.get_secret_value().encode()
    if not key:
        raise ValueError("XRAYLAB_RESEARCH_KEY is not set: the export needs a secret key for its pseudonyms")
    policy = DeidPolicy(key, max_shift_days=settings.RESEARCH_MAX_SHIFT_DAYS)
    kid = key_id(key)
    sources = sources or Sources(settings)
    target = make_s3_client(settings.s3_endpoint(settings.RESEARCH_ENDPOINT or None, "export"))  # its own identity
    _ensure_bucket(target, settings.RESEARCH_BUCKET)
    report = ExportReport()
    for study_id in _candidates(db, [band_rank(b) for b in bands or settings.research_bands()], kid, limit):
        with db.session() as session:
            study = get_study(session, study_id)
        if study is None:
            continue
        try:
            data = sources.fetch(study["endpoint_id"], study["bucket"], study["object_key"]).data
            if not is_dicom(data):
                raise InvalidImageError("not a DICOM file", RejectReason.NOT_DICOM)
            # the hospital issued the Patient ID where the file names no issuer: one pseudonym per (hospital, id)
            clean = deidentify(read_dataset(data), policy, hospital=study.get("hospital"))
            buf = io.BytesIO()
            clean.save_as(buf, enforce_file_format=True)
        except (RejectedInputError, InvalidImageError, DeidRefused) as exc:
            reason = str(exc.reason)
        except TesseractMissingError:  # uninstalled under a running export: stop, refuse nothing for it
            raise
        except OcrError:  # Tesseract failed on this image: it is not exported unlooked at
            reason = "ocr_failed"
            log.warning("study %s: OCR failed on its pixels", study["study_uid"])
        except Exception as exc:  # pydicom or a decoder on this file: its type only (messages can quote tags)
            reason = "not_deidentifiable"
            log.warning("study %s cannot be de-identified (%s)", study["study_uid"], type(exc).__name__)
        else:
            name = str(clean.PatientID)  # the pseudonym of the tags' Patient ID
            object_key = f"{name}/{clean.StudyInstanceUID}/{clean.SOPInstanceUID}.dcm"
            target.put_object(Bucket=settings.RESEARCH_BUCKET, Key=object_key, Body=buf.getvalue(),
                              ContentType=DICOM_MEDIA_TYPE)
            _log(db, study, kid, status="exported", pseudonym=name, bucket=settings.RESEARCH_BUCKET,
                 object_key=object_key, method="; ".join(clean.DeidentificationMethod)[:255])
            report.exported += 1
            log.info("study %s exported as %s", study["study_uid"], object_key)
            continue
        _log(db, study, kid, status="refused", reason=reason)
        report.skipped[reason] += 1
        log.warning("study %s not exported: %s", study["study_uid"], reason)
    return report


def _ensure_bucket(client: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    from xraylab.storage import MISSING_CODES, error_code

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) not in MISSING_CODES:
            raise
        client.create_bucket(Bucket=bucket)
