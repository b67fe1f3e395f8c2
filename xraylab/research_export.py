"""The de-identified research export (``xraylab export research``): DICOM studies whose latest band is one of
``RESEARCH_BANDS`` (the reference pipeline exports the Unsure ones) are copied to ``RESEARCH_BUCKET``,
de-identified by ``xraylab.deid`` under the HMAC key ``RESEARCH_KEY``.

Each exported file is stored as ``<pseudonym>/<new study UID>/<new SOP instance UID>.dcm``: the same study under
the same key always lands on the same key, so an export interrupted after the upload and before its log row is
simply done again. The export log (``research_exports``) names the study by its row id and the patient by the
pseudonym, with the key's id (a digest, not the key), the band, the model and the method written into the file;
never a name, a patient id or an original UID. JPEG and PNG studies have no tags to de-identify and are left out
(counted as ``not_dicom``); a study whose object is gone or cannot be de-identified is counted with why.
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
from xraylab.dicom import is_dicom, read_dataset
from xraylab.errors import RejectedInputError
from xraylab.imaging import InvalidImageError
from xraylab.settings import Settings
from xraylab.sources import Sources

__all__ = ["ExportReport", "export_research", "key_id"]

log = logging.getLogger("xraylab.research_export")


@dataclass
class ExportReport:
    exported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # why: not_dicom, missing_object, not_deidentifiable...

    def to_dict(self) -> dict[str, Any]:
        return {"exported": self.exported, "skipped": dict(self.skipped)}


def key_id(key: bytes) -> str:
    """Which key an export used: 16 hex digits of a SHA-256 of it (the key itself cannot be read back)."""
    return hashlib.sha256(b"xraylab-research-key:" + key).hexdigest()[:16]


def _candidates(db: Database, ranks: list[int], kid: str, limit: int) -> list[int]:
    """Ids of the studies in the bands not yet exported under this key, oldest first."""
    exported = select(ResearchExport.study_id).where(ResearchExport.key_id == kid)
    with db.session() as session:
        return list(session.scalars(select(Study.id).where(Study.band_rank.in_(ranks), Study.id.not_in(exported))
                                    .order_by(Study.id).limit(limit)))


def export_research(db: Database, settings: Settings, *, bands: list[str] | None = None, limit: int = 1000,
                    sources: Sources | None = None) -> ExportReport:
    """Export up to ``limit`` studies of ``bands`` (default ``settings.research_bands()``) not yet exported under
    ``RESEARCH_KEY``; the report counts what was exported and what was left out, and why."""
    from xraylab.deid import DeidPolicy, deidentify

    key = settings.RESEARCH_KEY.get_secret_value().encode()
    if not key:
        raise ValueError("XRAYLAB_RESEARCH_KEY is not set: the export needs a secret key for its pseudonyms")
    policy = DeidPolicy(key, max_shift_days=settings.RESEARCH_MAX_SHIFT_DAYS)
    kid = key_id(key)
    sources = sources or Sources(settings)
    endpoint = settings.RESEARCH_ENDPOINT or settings.S3_ENDPOINT_ID
    target = sources.s3(endpoint)
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
                report.skipped["not_dicom"] += 1
                continue
            clean = deidentify(read_dataset(data), policy)
        except RejectedInputError as exc:
            report.skipped[str(exc.reason)] += 1
            log.warning("study %s not exported: %s", study["study_uid"], exc.reason)
            continue
        except (InvalidImageError, ValueError) as exc:
            report.skipped["not_deidentifiable"] += 1
            log.warning("study %s not exported: %s", study["study_uid"], type(exc).__name__)
            continue
        name = str(clean.PatientID)  # the pseudonym of the tags' Patient ID
        object_key = f"{name}/{clean.StudyInstanceUID}/{clean.SOPInstanceUID}.dcm"
        buf = io.BytesIO()
        clean.save_as(buf, enforce_file_format=True)
        target.put_object(Bucket=settings.RESEARCH_BUCKET, Key=object_key, Body=buf.getvalue(),
                          ContentType="application/dicom")
        with db.session() as session:
            session.add(ResearchExport(study_id=study_id, key_id=kid, pseudonym=name, bucket=settings.RESEARCH_BUCKET,
                                       object_key=object_key, band=study.get("band"),
                                       model_version=study.get("model_version"),
                                       method="; ".join(clean.DeidentificationMethod)[:255]))
        report.exported += 1
        log.info("study %s exported as %s", study["study_uid"], object_key)
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
