"""The DICOM objects xraylab stores back into a hospital's PACS for one scored study: a structured report of the
finding and score, and a secondary capture of the Grad-CAM heatmap. Both belong to the source image's study (same
StudyInstanceUID, patient and study modules copied from the source instance) and each sits in its own new series.

Report: a TID 1500 Measurement Report (highdicom) in a **Comprehensive SR** (1.2.840.10008.5.1.4.1.1.88.33), not a
Comprehensive 3D SR: there are no 3-D coordinates to carry, and Comprehensive SR is the SR class a PACS and its
viewers most widely accept (dciodvfy and dsrdump validate and render it). One measurement group (TID 1501) holds:

- Finding (DCM 121071), a qualitative evaluation coded from the band: Pneumonia -> SCT 233604007 "Pneumonia",
  Unsure -> SCT 82334004 "Indeterminate", Normal -> SCT 260385009 "Negative" (qualifier values of CID 4220 / CID
  250 in the DICOM content mapping resource; "Negative" as in "negative for pneumonia": the model only looks for
  pneumonia, so "Normal" (a statement about the whole film) would claim too much);
- the band as xraylab states it (``ScoredStudy.finding``, "pneumonia likely" ...): a second qualitative
  evaluation in the private scheme ``99XRAYLAB`` (declared in the Coding Scheme Identification Sequence), concept
  ``triage-band`` "Pneumonia triage band", value the band's name with the finding text as its meaning, so that a
  reader sees the same words as the worklist;
- the score, a measurement (TID 300): concept ``99XRAYLAB pneumonia-score`` "Pneumonia probability score" (DICOM
  has no code for a model's score of a diagnosis; DCM 111047 is "Probability of cancer", DCM 122157 "Probability"
  says nothing of what), unit UCUM ``1`` "no units";
- the algorithm (TID 4019): name and version of the model, its parameters the card reference, the card's notice,
  and, where the model is research only, ``RESEARCH_STATEMENT`` ("... not a medical device"), which every SR
  renderer shows with the algorithm;
- the source image as the measurement group's source image (and so in the evidence sequence).

The observer is a device (TID 1004: xraylab and the model), the procedure reported SCT 399208008 "Plain chest
X-ray", the title DCM 126000 "Imaging Measurement Report". The document is COMPLETE, UNVERIFIED and PRELIMINARY:
a triage aid that no radiologist has signed.

Heatmap: a **Secondary Capture** image (``highdicom.sc.SCImage``), RGB 8 bits, uncompressed (explicit VR little
endian; a lossy JPEG of a heatmap would smear exactly what it shows), conversion type WSD (workstation), image type
DERIVED\\SECONDARY, the source image in its Source Image Sequence and the Grad-CAM origin, the model version and the
notice in Derivation Description and Image Comments. The overlay itself adds no text, but it is drawn over the
film, which may carry burned-in patient data: BurnedInAnnotation repeats the source's value where that says "NO",
and is "YES" otherwise (unknown is treated as present, so de-identification does not trust the map).

Both objects: Manufacturer "xraylab", Software Versions the model version, Content Date/Time the scoring time,
Specific Character Set UTF-8 (ISO_IR 192: the notice and names may be non-ASCII), Institution Name when given, file
meta information so ``save_as(path, enforce_file_format=True)`` writes a Part 10 file. Their UIDs come from
``result_uid`` (the study and the model version): a resend repeats them, a new model version makes new series.

Times: DICOM dates and times in one instance share one time zone (Timezone Offset From UTC, when present, applies to
all of them, including the study date and time copied from the source). Where the source carries an offset, the
scoring time is written in that offset and the offset repeated; where it carries none, the study's times are in the
hospital's unstated local time, so no offset is written (stating "+0000" would relabel the copied study time) and
the content date and time are the scoring time in UTC.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sc import SCImage
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    ComprehensiveSR,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from delivery.result import ScoredStudy, result_uid
from xraylab.bands import NORMAL, PNEUMONIA, UNSURE
from xraylab.dicom import RESULT_MANUFACTURER

__all__ = [
    "build_report",
    "build_heatmap_image",
    "result_datasets",
    "RESEARCH_STATEMENT",
    "PRIVATE_SCHEME",
    "BAND_CODES",
    "SCORE_CONCEPT",
    "SR_SERIES_NUMBER",
    "HEATMAP_SERIES_NUMBER",
]

logger = logging.getLogger(__name__)

RESEARCH_STATEMENT = "For research use only, not a medical device."
SR_SERIES_NUMBER = 9901
HEATMAP_SERIES_NUMBER = 9902

# xraylab's own concepts, in a private coding scheme ("99" prefix: PS3.16 8.2, local schemes).
PRIVATE_SCHEME = "99XRAYLAB"
_CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME, name="xraylab pneumonia triage concepts", responsible_organization="xraylab"
)
SCORE_CONCEPT = CodedConcept("pneumonia-score", PRIVATE_SCHEME, "Pneumonia probability score")
_BAND_CONCEPT = CodedConcept("triage-band", PRIVATE_SCHEME, "Pneumonia triage band")

# The band as a finding (DCM 121071 "Finding"): SNOMED CT codes.
FINDING = CodedConcept("121071", "DCM", "Finding")
BAND_CODES: dict[str, CodedConcept] = {
    PNEUMONIA: CodedConcept("233604007", "SCT", "Pneumonia"),
    UNSURE: CodedConcept("82334004", "SCT", "Indeterminate"),
    NORMAL: CodedConcept("260385009", "SCT", "Negative"),
}
PLAIN_CHEST_XRAY = CodedConcept("399208008", "SCT", "Plain chest X-ray")
SOURCE_FOR_PROCESSING = CodedConcept("121322", "DCM", "Source image for image processing operation")

_SOURCE_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")
_UTF8 = "ISO_IR 192"
_LOCAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:xraylab:results:content")


def build_report(source: pydicom.Dataset, result: ScoredStudy, *, manufacturer: str = RESULT_MANUFACTURER,
                 institution_name: str | None = None) -> pydicom.Dataset:
    """The Comprehensive SR (TID 1500 Measurement Report) of ``result`` for the study of ``source`` (the scored image
    instance as the PACS holds it; its pixels are not needed): finding, score, algorithm and notice, the source image
    as evidence. A new series (``result_uid("sr-series", ...)``, number 9901) in the source's study."""
    evidence = _evidence(source, result)
    band_code = BAND_CODES.get(result.band)
    if band_code is None:
        raise ValueError(f"unknown band {result.band!r}: one of {', '.join(BAND_CODES)}")
    zone, when = _content_time(source, result)

    algorithm = AlgorithmIdentification(
        name=result.model_name, version=result.model_version, parameters=_algorithm_parameters(result),
        manufacturer=manufacturer,
    )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=_content_uid("tracking", result.study_uid, result.model_version),
            identifier=f"pneumonia triage {result.model_version}",
        ),
        algorithm_id=algorithm,
        qualitative_evaluations=[
            QualitativeEvaluation(FINDING, band_code),
            QualitativeEvaluation(_BAND_CONCEPT, CodedConcept(result.band.lower()[:16], PRIVATE_SCHEME,
                                                              _lo(result.finding))),
        ],
        measurements=[Measurement(name=SCORE_CONCEPT, value=float(result.score), unit=codes.UCUM.NoUnits)],
        source_images=[SourceImageForMeasurementGroup(evidence.SOPClassUID, evidence.SOPInstanceUID)],
    )
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=_content_uid("device", result.model_name, result.model_version),
            name=manufacturer, manufacturer_name=manufacturer, model_name=result.model_name,
        ),
    )
    content = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=PLAIN_CHEST_XRAY,
        imaging_measurements=[group],
    )
    report = ComprehensiveSR(
        evidence=[evidence],
        content=content[0],
        series_instance_uid=result_uid("sr-series", result.study_uid, result.model_version),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid("sr-instance", result.study_uid, result.model_version),
        instance_number=1,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=_lo(f"xraylab pneumonia triage {result.model_version}"),
        coding_schemes=[_CODING_SCHEME],
        **_made_by(result, when, manufacturer, institution_name),
    )
    _set_creation_and_zone(report, zone)
    logger.debug("built SR %s for study %s (model %s)", report.SOPInstanceUID, result.study_id, result.model_version)
    return report


def build_heatmap_image(source: pydicom.Dataset, result: ScoredStudy, overlay_rgb: np.ndarray, *,
                        manufacturer: str = RESULT_MANUFACTURER,
                        institution_name: str | None = None) -> pydicom.Dataset:
    """The Secondary Capture of ``overlay_rgb`` ((H, W, 3) uint8: the Grad-CAM map already blended over the film)
    for the study of ``source``: RGB, uncompressed, a new series (``result_uid("heatmap-series", ...)``, number 9902)
    with the Grad-CAM origin, the model version and the notice in its derivation description and image comments."""
    overlay = np.asarray(overlay_rgb)
    if overlay.dtype != np.uint8 or overlay.ndim != 3 or overlay.shape[2] != 3 or 0 in overlay.shape:
        raise ValueError(f"overlay_rgb must be an (H, W, 3) uint8 array, got {overlay.dtype} {overlay.shape}")
    evidence = _evidence(source, result)
    zone, when = _content_time(source, result)
    orientation = _patient_orientation(source)
    image = SCImage.from_ref_dataset(
        ref_dataset=evidence,
        pixel_array=np.ascontiguousarray(overlay),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=result_uid("heatmap-series", result.study_uid, result.model_version),
        series_number=HEATMAP_SERIES_NUMBER,
        sop_instance_uid=result_uid("heatmap-instance", result.study_uid, result.model_version),
        instance_number=1,
        patient_orientation=orientation or ("L", "F"),
        series_description=_lo(f"xraylab Grad-CAM {result.model_version}"),
        **_made_by(result, when, manufacturer, institution_name),
    )
    if orientation is None:  # unknown: Patient Orientation is type 2 here, empty rather than guessed
        image.PatientOrientation = ""
    # General Series Laterality (2C): the source's side where it states one (R or L); absent for an unpaired body part
    # (the source's, e.g. CHEST), empty where the body part is unknown.
    side = str(source.get("Laterality") or source.get("ImageLaterality") or "").upper()
    if source.get("BodyPartExamined"):
        image.BodyPartExamined = source.BodyPartExamined
    if side in ("R", "L"):
        image.Laterality = side
    elif not source.get("BodyPartExamined"):
        image.Laterality = ""
    image.ConversionType = "WSD"  # made on a workstation, not digitized from film or a video interface
    image.BurnedInAnnotation = "NO" if str(source.get("BurnedInAnnotation", "")).upper() == "NO" else "YES"
    derivation = (f"Grad-CAM map of pneumonia model {result.model_name} {result.model_version} blended over the "
                  f"source image; score {result.score:.3f}, {result.finding}.")
    image.DerivationDescription = derivation[:1024]
    statement = RESEARCH_STATEMENT if result.research_only and not _states_research(result.notice) else ""
    image.ImageComments = " ".join(filter(None, (derivation, result.notice, statement)))[:10240]
    reference = Dataset()
    reference.ReferencedSOPClassUID = evidence.SOPClassUID
    reference.ReferencedSOPInstanceUID = evidence.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = [SOURCE_FOR_PROCESSING]
    image.SourceImageSequence = [reference]
    _set_creation_and_zone(image, zone)
    image.DateOfSecondaryCapture = image.InstanceCreationDate
    image.TimeOfSecondaryCapture = image.InstanceCreationTime
    logger.debug("built heatmap SC %s for study %s (model %s)", image.SOPInstanceUID, result.study_id,
                 result.model_version)
    return image


def result_datasets(source: pydicom.Dataset, result: ScoredStudy, overlay_rgb: np.ndarray, *,
                    manufacturer: str = RESULT_MANUFACTURER,
                    institution_name: str | None = None) -> list[pydicom.Dataset]:
    """Both objects of one scored study, in the order they are sent: ``[report, heatmap image]``."""
    report = build_report(source, result, manufacturer=manufacturer, institution_name=institution_name)
    image = build_heatmap_image(source, result, overlay_rgb, manufacturer=manufacturer,
                                institution_name=institution_name)
    return [report, image]


def _made_by(result: ScoredStudy, when: datetime, manufacturer: str, institution_name: str | None) -> dict[str, Any]:
    """What the report and the picture alike say of where, when and by what they were made, and how they are
    encoded."""
    return {"manufacturer": _lo(manufacturer), "institution_name": _lo(institution_name) if institution_name else None,
            "manufacturer_model_name": _lo(result.model_name), "software_versions": _lo(result.model_version),
            "content_date": DA(when.date()), "content_time": TM(when.time().replace(tzinfo=None)),
            "series_date": DA(when.date()), "series_time": TM(when.time().replace(tzinfo=None)),
            "transfer_syntax_uid": ExplicitVRLittleEndian, "specific_character_set": _UTF8}


def _evidence(source: Dataset, result: ScoredStudy) -> Dataset:
    """A header-only copy of ``source`` with the patient and study attributes highdicom reads (type 2: present,
    empty where the PACS left them out, or where the source's value is not valid: a sex other than M, F or O, a
    birth date that is no date, which highdicom would refuse); checks it is the study ``result`` scored."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not source.get(keyword):
            raise ValueError(f"source has no {keyword}")
    if result.study_instance_uid and result.study_instance_uid != source.StudyInstanceUID:
        raise ValueError("source is not an image of the scored study (StudyInstanceUID differs)")
    evidence = Dataset()
    for element in source:
        if element.tag.group > 0x0002 and element.tag != 0x7FE00010:  # no file meta, no pixels
            evidence.add(element)
    if str(evidence.get("PatientSex") or "").strip().upper() not in ("M", "F", "O"):
        evidence.PatientSex = None
    else:
        evidence.PatientSex = str(evidence.PatientSex).strip().upper()
    if not _is_date(evidence.get("PatientBirthDate")):
        evidence.PatientBirthDate = None
    for keyword in _SOURCE_TYPE2:
        if keyword not in evidence:
            setattr(evidence, keyword, None)
    return evidence


def _is_date(value: object) -> bool:
    text = str(value or "").strip()
    try:
        return len(text) == 8 and datetime.strptime(text, "%Y%m%d") is not None
    except ValueError:
        return False


def _content_time(source: Dataset, result: ScoredStudy) -> tuple[timezone | None, datetime]:
    """The zone to state (the source's offset, or none) and the scoring time in it (UTC where none)."""
    scored = result.scored_at if result.scored_at.tzinfo else result.scored_at.replace(tzinfo=UTC)
    zone = _offset(source.get("TimezoneOffsetFromUTC"))
    return zone, scored.astimezone(zone or UTC)


def _offset(value: object) -> timezone | None:
    text = str(value or "").strip()
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        return None
    minutes = int(text[1:3]) * 60 + int(text[3:])
    return timezone(timedelta(minutes=minutes if text[0] == "+" else -minutes))


def _set_creation_and_zone(ds: Dataset, zone: timezone | None) -> None:
    """Instance creation date and time in the instance's zone (highdicom writes the machine's local time), and the
    source's offset where it stated one."""
    now = datetime.now(zone or UTC)
    ds.InstanceCreationDate = DA(now.date())
    ds.InstanceCreationTime = TM(now.time().replace(tzinfo=None, microsecond=0))
    if zone is not None:
        offset = int(zone.utcoffset(None).total_seconds() // 60)
        sign = "-" if offset < 0 else "+"
        ds.TimezoneOffsetFromUTC = f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


def _patient_orientation(source: Dataset) -> tuple[str, str] | None:
    value = source.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    return str(value[0]), str(value[1])


def _algorithm_parameters(result: ScoredStudy) -> list[str]:
    parameters = [f"card: {result.card_reference}"]
    if result.notice:
        parameters.append(f"notice: {result.notice}")
    if result.research_only:
        parameters.append(RESEARCH_STATEMENT)
    return parameters


def _states_research(notice: str) -> bool:
    return "not a medical device" in (notice or "").lower()


def _content_uid(kind: str, *parts: str) -> str:
    """A deterministic UID for an item inside the report (tracking, device), like ``result_uid`` but outside its
    kinds: the same content on every resend."""
    return f"2.25.{uuid.uuid5(_LOCAL_NAMESPACE, '|'.join((kind, *parts))).int}"


def _lo(text: str, limit: int = 64) -> str:
    """``text`` as a LO value: no backslash (the value separator) or control characters, at most ``limit``."""
    cleaned = "".join(" " if (ord(c) < 32 or c == "\\") else c for c in str(text)).strip()
    return cleaned[:limit].rstrip()
