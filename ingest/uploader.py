"""The hospital side, simulated: puts X-ray images with study metadata into the source bucket, as JPEGs or as
DICOM files, or sends DICOM to the PACS by C-STORE (``ingest.pacs_sender``).

A JPEG's metadata travels as S3 user metadata (``xraylab.messages.StudyMetadata``: ``x-amz-meta-hospital``,
``-patient-id``, ``-patient-name``, ``-patient-sex``, ``-patient-age``, ``-study-date``, ``-study-description``,
``-accession-number``); a DICOM file carries it in its tags (``ingest.dicom_files``), with only
``x-amz-meta-hospital`` beside it. The pipeline's Fetcher reads either back. Patients here are invented: each
patient's sex, birth date and accession numbers are drawn from its ID, so that a JPEG and a DICOM file of the same
study say the same.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from xraylab.dicom import DICOM_MEDIA_TYPE
from xraylab.labels import CLASSES, NORMAL_CLASS, PNEUMONIA_CLASS
from xraylab.messages import StudyMetadata, age_between

__all__ = ["StudyUpload", "Drift", "DicomOptions", "upload_study", "upload_generated", "upload_files",
           "upload_labelled", "generated_studies", "GeneratedStudy", "send_generated_to_pacs"]

log = logging.getLogger("xraylab.uploader")

HOSPITALS = ("st-mary", "northgate", "riverside")
FIRST = ("Ana", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lea")
LAST = ("Moreau", "Okafor", "Novak", "Silva", "Berg", "Haddad", "Kowalski", "Lindqvist", "Rossi", "Tanaka")


@dataclass(frozen=True)
class StudyUpload:
    key: str  # the S3 key, or for a study sent to the PACS its Orthanc instance id
    metadata: StudyMetadata
    label: str | None = None  # only known for generated images


@dataclass(frozen=True)
class DicomOptions:
    """How generated studies are written as DICOM (``ingest.dicom_files``)."""

    syntax: str = "explicit"
    bits: int = 8  # 8, or 16 (12 stored)
    photometric: str = "MONOCHROME2"
    burn_in: bool = False  # the patient's name and id burned into the pixels too


@dataclass(frozen=True)
class GeneratedStudy:
    """One generated study: where it goes, its metadata, its 8-bit pixels and the label they were drawn with."""

    key: str  # without its file suffix
    metadata: StudyMetadata
    pixels: np.ndarray
    label: str


def upload_study(client: Any, bucket: str, key: str, data: bytes, metadata: StudyMetadata, *,
                 content_type: str | None = None) -> None:
    """Store an image with its study metadata as S3 user metadata (what the Fetcher reads back)."""
    client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata.to_s3_metadata(),
                      ContentType=content_type or mimetypes.guess_type(key)[0] or "application/octet-stream")


def _fake_patient(rng: np.random.Generator) -> tuple[str, str]:
    return f"P{rng.integers(100000, 999999)}", f"{rng.choice(FIRST)} {rng.choice(LAST)}"


STUDY_DESCRIPTIONS = ("XR CHEST PA", "XR CHEST PA AND LATERAL", "XR CHEST 1 VIEW")


@dataclass(frozen=True)
class _PatientFacts:
    sex: str
    birth_date: date
    accession: str
    description: str


def _patient_facts(patient_id: str, rng: np.random.Generator | None = None) -> _PatientFacts:
    """An invented patient's sex, birth date, an accession number and the study's description, drawn from its ID
    (or from ``rng``): the same for the JPEG's metadata and for the DICOM tags of one study."""
    rng = rng or np.random.default_rng(zlib.crc32(patient_id.encode()))
    accession = f"A{rng.integers(10**6, 10**7)}"
    birth = date(int(rng.integers(1930, 2010)), int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    facts = np.random.default_rng(zlib.crc32(b"facts:" + patient_id.encode()))  # drawn apart: the draws above stay
    return _PatientFacts(sex=str(facts.choice(["F", "M", "F", "M", "O"])), birth_date=birth, accession=accession,
                         description=str(facts.choice(STUDY_DESCRIPTIONS)))


def _invented(hospital: str, patient: tuple[str, str], study_date: str) -> StudyMetadata:
    """An upload's metadata for an invented patient: what a JPEG carries as S3 user metadata."""
    patient_id, patient_name = patient
    facts = _patient_facts(patient_id)
    age = age_between(facts.birth_date, date.fromisoformat(study_date))
    return StudyMetadata(hospital, patient_id, patient_name, study_date, accession_number=facts.accession,
                         patient_sex=facts.sex, patient_age=age, study_description=facts.description)


@dataclass(frozen=True)
class Drift:
    """Drift to inject into generated images (``xraylab.synthetic.apply_drift``), at some hospitals or all."""

    kind: str
    strength: float = 1.0
    hospitals: frozenset[str] = frozenset()  # empty: every hospital

    def __post_init__(self) -> None:
        from xraylab.synthetic import DRIFT_KINDS

        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"unknown drift {self.kind!r}: one of {', '.join(DRIFT_KINDS)}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"drift strength {self.strength} is not in (0, 1]")
        unknown = self.hospitals - set(HOSPITALS)
        if unknown:
            raise ValueError(f"unknown hospital(s) {', '.join(sorted(unknown))}: one of {', '.join(HOSPITALS)}")


def generated_studies(count: int, *, seed: int = 0, pneumonia_ratio: float = 0.5, prefix: str = "",
                      drift: Drift | None = None, hospitals: Sequence[str] = HOSPITALS) -> Iterable[GeneratedStudy]:
    """``count`` synthetic radiographs from ``hospitals`` (each drawn at random), with ``drift`` injected if
    given, and invented patients."""
    from xraylab.synthetic import apply_drift, generate_xray

    rng = np.random.default_rng(seed)
    for _ in range(count):
        hospital = str(rng.choice(list(hospitals)))
        patient = _fake_patient(rng)
        study_date = (date(2026, 11, 1) + timedelta(days=int(rng.integers(0, 22)))).isoformat()
        pneumonia = bool(rng.random() < pneumonia_ratio)
        pixels = generate_xray(rng, pneumonia)
        if drift is not None and (not drift.hospitals or hospital in drift.hospitals):
            pixels = apply_drift(pixels, drift.kind, drift.strength, rng)
        yield GeneratedStudy(f"{prefix}{hospital}/{study_date}/{uuid.uuid4().hex[:12]}",
                             _invented(hospital, patient, study_date), pixels,
                             PNEUMONIA_CLASS if pneumonia else NORMAL_CLASS)


def upload_generated(client: Any, bucket: str, count: int, *, seed: int = 0, pneumonia_ratio: float = 0.5,
                     prefix: str = "", drift: Drift | None = None, hospitals: Sequence[str] = HOSPITALS,
                     dicom: DicomOptions | None = None) -> list[StudyUpload]:
    """Upload ``count`` generated studies (``generated_studies``) as JPEGs, or as DICOM files with ``dicom``;
    returns what was uploaded (with the generating label)."""
    from xraylab.synthetic import encode_jpeg

    uploads = []
    for study in generated_studies(count, seed=seed, pneumonia_ratio=pneumonia_ratio, prefix=prefix, drift=drift,
                                   hospitals=hospitals):
        if dicom is None:
            key = study.key + ".jpeg"
            upload_study(client, bucket, key, encode_jpeg(study.pixels), study.metadata, content_type="image/jpeg")
        else:
            key = study.key + ".dcm"
            upload_study(client, bucket, key, dicom_of(study, dicom), StudyMetadata(hospital=study.metadata.hospital),
                         content_type=DICOM_MEDIA_TYPE)
        uploads.append(StudyUpload(key, study.metadata, study.label))
    log.info("uploaded %d generated studies to bucket %s", count, bucket)
    return uploads


def send_generated_to_pacs(target: Any, count: int, *, dicom: DicomOptions, seed: int = 0,
                           pneumonia_ratio: float = 0.5, drift: Drift | None = None,
                           hospitals: Sequence[str] = HOSPITALS, batch: int = 32) -> list[StudyUpload]:
    """Send ``count`` generated studies to the PACS by C-STORE (``ingest.pacs_sender.PacsTarget``), ``batch`` per
    association; each upload's key is the instance id the PACS gives it."""
    import pydicom

    from ingest.pacs_sender import send_to_pacs
    from xraylab.orthanc import orthanc_instance_id

    uploads: list[StudyUpload] = []
    pending: list[tuple[bytes, StudyUpload]] = []

    def flush() -> None:
        send_to_pacs([data for data, _ in pending], target)
        uploads.extend(upload for _, upload in pending)
        pending.clear()

    for study in generated_studies(count, seed=seed, pneumonia_ratio=pneumonia_ratio, drift=drift,
                                   hospitals=hospitals):
        data = dicom_of(study, dicom)
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        key = orthanc_instance_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        pending.append((data, StudyUpload(key, study.metadata, study.label)))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    log.info("sent %d generated studies to the PACS", len(uploads))
    return uploads


def modality_study(metadata: StudyMetadata, rng: np.random.Generator | None = None):  # -> ModalityStudy
    """What a modality would write in the tags for a study with this metadata."""
    from ingest.dicom_files import ModalityStudy

    facts = _patient_facts(metadata.patient_id or "", rng)
    return ModalityStudy(patient_id=metadata.patient_id or "", patient_name=metadata.patient_name or "",
                         study_date=date.fromisoformat(metadata.study_date or date.today().isoformat()),
                         hospital=metadata.hospital or "", accession=metadata.accession_number or facts.accession,
                         birth_date=facts.birth_date, sex=metadata.patient_sex or facts.sex,
                         description=metadata.study_description or facts.description)


def dicom_of(study: GeneratedStudy, options: DicomOptions) -> bytes:
    """A generated study as a DICOM file."""
    from ingest.dicom_files import dicom_bytes

    return dicom_bytes(study.pixels, modality_study(study.metadata), syntax=options.syntax, bits=options.bits,
                       photometric=options.photometric, burn_in=options.burn_in)


def upload_labelled(client: Any, bucket: str, root: Path, count: int, *, seed: int = 0,
                    prefix: str = "") -> list[StudyUpload]:
    """Upload ``count`` real X-rays drawn (seeded, without replacement) from a labelled folder
    ``root/{NORMAL,PNEUMONIA}/*.jpeg`` (a split of the Kaggle layout), each from a hospital drawn at random with
    an invented patient; returns them with their folder's label. ``ValueError`` when ``root`` has no such images."""
    files = [(path, cls) for cls in CLASSES if (root / cls).is_dir()
             for path in sorted((root / cls).iterdir()) if path.suffix.lower() in (".jpeg", ".jpg", ".png")]
    if not files:
        raise ValueError(f"{root} holds no NORMAL/ or PNEUMONIA/ images")
    rng = np.random.default_rng(seed)
    uploads = []
    for i in rng.permutation(len(files))[:count]:
        path, label = files[int(i)]
        hospital = str(rng.choice(list(HOSPITALS)))
        patient = _fake_patient(rng)
        study_date = (date(2026, 11, 1) + timedelta(days=int(rng.integers(0, 22)))).isoformat()
        metadata = _invented(hospital, patient, study_date)
        key = f"{prefix}{hospital}/{study_date}/{uuid.uuid4().hex[:12]}{path.suffix.lower()}"
        upload_study(client, bucket, key, path.read_bytes(), metadata)
        uploads.append(StudyUpload(key, metadata, label))
    log.info("uploaded %d labelled X-rays from %s to bucket %s", len(uploads), root, bucket)
    return uploads


def upload_files(client: Any, bucket: str, paths: Iterable[Path], *, hospital: str, prefix: str = "",
                 seed: int = 0) -> list[StudyUpload]:
    """Upload image files from disk: a JPEG or PNG with invented patient metadata, a DICOM file with its own
    tags (and ``hospital`` beside them)."""
    from xraylab.dicom import is_dicom

    rng = np.random.default_rng(seed)
    uploads = []
    for path in paths:
        data = Path(path).read_bytes()
        patient = _fake_patient(rng)
        study_date = date.today().isoformat()
        key = f"{prefix}{hospital}/{study_date}/{Path(path).name}"
        if is_dicom(data):
            metadata = StudyMetadata(hospital)
            upload_study(client, bucket, key, data, metadata, content_type=DICOM_MEDIA_TYPE)
        else:
            metadata = _invented(hospital, patient, study_date)
            upload_study(client, bucket, key, data, metadata)
        uploads.append(StudyUpload(key, metadata))
    return uploads


def full_size_dicom(path: Path, syntax: str, *, photometric: str = "MONOCHROME2", seed: int = 0,
                    hospital: str = HOSPITALS[0]) -> tuple[bytes, StudyMetadata]:
    """A real film (a greyscale JPEG at its original size, e.g. ``../shared/data/chest-xray/full-resolution``) as the
    DX file a modality would send: 12 bits stored in 16 (``dicom_files.build_dataset``), in ``syntax``, with an
    invented patient; 2,890 x 2,534 uncompressed is 14.6 MB. The same picture as the JPEG, so it scores alike."""
    from PIL import Image

    from ingest.dicom_files import dicom_bytes

    rng = np.random.default_rng(seed)
    patient_id, patient_name = _fake_patient(rng)
    metadata = StudyMetadata(hospital, patient_id, patient_name, date.today().isoformat())
    with Image.open(path) as film:
        pixels = np.asarray(film.convert("L"))
    return dicom_bytes(pixels, modality_study(metadata, rng), syntax=syntax, bits=16,
                       photometric=photometric), metadata
