"""What is delivered about one scored study: ``ScoredStudy``, read from its study and prediction rows and the card of
the model that scored it, and the identifiers a resend repeats (DICOM UIDs derived from the study and the model
version, so that a receiver sees the same instance again, and a newer model's result is a new series)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from xraylab.bands import NORMAL, PNEUMONIA, UNSURE

__all__ = ["ScoredStudy", "FINDINGS", "result_uid", "RESULT_KINDS"]

# The band as the finding a report states.
FINDINGS = {PNEUMONIA: "pneumonia likely", UNSURE: "pneumonia indeterminate", NORMAL: "pneumonia unlikely"}

# The objects derived from one (study, model version): each has its own UID, the same on every resend.
RESULT_KINDS = ("sr-series", "sr-instance", "heatmap-series", "heatmap-instance")


@dataclass(frozen=True)
class ScoredStudy:
    """One model's score of one study, with what its receivers need: the study's identifiers (from its DICOM tags,
    or an upload's metadata) and the model's name, version, card and notice."""

    study_id: int  # the studies row
    study_uid: str  # xraylab's id of the stored object (a hash: ``xraylab.messages.study_uid``)
    prediction_id: int
    score: float
    band: str  # xraylab.bands: Pneumonia, Unsure or Normal
    model_name: str  # the card's architecture
    model_version: str
    card_reference: str  # where the model's card is read (the registry's location of card.json)
    notice: str  # the card's notice: what the model was trained on, research use or synthetic
    research_only: bool  # every model here: "for research use only, not a medical device" (or synthetic)
    scored_at: datetime  # the prediction's time (UTC)
    hospital: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None  # "Given Middle Family", as the studies table stores it
    accession_number: str | None = None
    study_instance_uid: str | None = None  # DICOM only
    study_date: str | None = None  # YYYY-MM-DD
    modality: str | None = None

    @property
    def finding(self) -> str:
        return FINDINGS.get(self.band, f"band {self.band}")


def result_uid(kind: str, study_uid: str, model_version: str) -> str:
    """The UID of one derived object (``RESULT_KINDS``) of one study under one model version: ``2.25.`` and a
    name-based UUID (version 5) of the three (ISO/IEC 9834-8), so that a resend carries the same UID and the PACS
    stores it once."""
    if kind not in RESULT_KINDS:
        raise ValueError(f"unknown result kind {kind!r}")
    return f"2.25.{uuid.uuid5(_NAMESPACE, '|'.join((kind, study_uid, model_version))).int}"


_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:xraylab:results")
