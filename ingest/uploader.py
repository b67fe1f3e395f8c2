"""The hospital side, simulated: puts X-ray images with study metadata into the source bucket.

Metadata travels as S3 user metadata (``xraylab.messages.StudyMetadata``: ``x-amz-meta-hospital``,
``-patient-id``, ``-patient-name``, ``-study-date``); the pipeline's Fetcher reads it back. Patient
names here are invented.
"""

from __future__ import annotations

import logging
import mimetypes
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from xraylab.labels import NORMAL_CLASS, PNEUMONIA_CLASS
from xraylab.messages import StudyMetadata

__all__ = ["StudyUpload", "Drift", "upload_study", "upload_generated", "upload_files"]

log = logging.getLogger("xraylab.uploader")

HOSPITALS = ("st-mary", "northgate", "riverside")
FIRST = ("Ana", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lea")
LAST = ("Moreau", "Okafor", "Novak", "Silva", "Berg", "Haddad", "Kowalski", "Lindqvist", "Rossi", "Tanaka")


@dataclass(frozen=True)
class StudyUpload:
    key: str
    metadata: StudyMetadata
    label: str | None = None  # only known for generated images


def upload_study(client: Any, bucket: str, key: str, data: bytes, metadata: StudyMetadata, *,
                 content_type: str | None = None) -> None:
    """Store an image with its study metadata as S3 user metadata (what the Fetcher reads back)."""
    client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata.to_s3_metadata(),
                      ContentType=content_type or mimetypes.guess_type(key)[0] or "application/octet-stream")


def _fake_patient(rng: np.random.Generator) -> tuple[str, str]:
    return f"P{rng.integers(100000, 999999)}", f"{rng.choice(FIRST)} {rng.choice(LAST)}"


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


def upload_generated(client: Any, bucket: str, count: int, *, seed: int = 0, pneumonia_ratio: float = 0.5,
                     prefix: str = "", drift: Drift | None = None,
                     hospitals: Sequence[str] = HOSPITALS) -> list[StudyUpload]:
    """Upload ``count`` synthetic radiographs from ``hospitals`` (each drawn at random), with ``drift`` injected
    if given; returns what was uploaded (with the generating label)."""
    from xraylab.synthetic import apply_drift, encode_jpeg, generate_xray

    rng = np.random.default_rng(seed)
    uploads = []
    for _ in range(count):
        hospital = str(rng.choice(list(hospitals)))
        patient_id, patient_name = _fake_patient(rng)
        study_date = (date(2026, 11, 1) + timedelta(days=int(rng.integers(0, 22)))).isoformat()
        pneumonia = bool(rng.random() < pneumonia_ratio)
        key = f"{prefix}{hospital}/{study_date}/{uuid.uuid4().hex[:12]}.jpeg"
        metadata = StudyMetadata(hospital, patient_id, patient_name, study_date)
        pixels = generate_xray(rng, pneumonia)
        if drift is not None and (not drift.hospitals or hospital in drift.hospitals):
            pixels = apply_drift(pixels, drift.kind, drift.strength, rng)
        upload_study(client, bucket, key, encode_jpeg(pixels), metadata, content_type="image/jpeg")
        uploads.append(StudyUpload(key, metadata, PNEUMONIA_CLASS if pneumonia else NORMAL_CLASS))
    log.info("uploaded %d generated studies to bucket %s", count, bucket)
    return uploads


def upload_files(client: Any, bucket: str, paths: Iterable[Path], *, hospital: str, prefix: str = "",
                 seed: int = 0) -> list[StudyUpload]:
    """Upload image files from disk (JPEG/PNG), each with invented patient metadata."""
    rng = np.random.default_rng(seed)
    uploads = []
    for path in paths:
        patient_id, patient_name = _fake_patient(rng)
        study_date = date.today().isoformat()
        key = f"{prefix}{hospital}/{study_date}/{Path(path).name}"
        metadata = StudyMetadata(hospital, patient_id, patient_name, study_date)
        upload_study(client, bucket, key, Path(path).read_bytes(), metadata)
        uploads.append(StudyUpload(key, metadata))
    return uploads
