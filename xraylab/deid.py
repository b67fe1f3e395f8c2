"""De-identification of one DICOM dataset for a research export: the Basic Application Level Confidentiality
Profile (PS3.15 Annex E, table E.1-1) with the Retain Longitudinal Temporal Information With Modified Dates and
Clean Pixel Data options.

The table (which attribute gets which action: D dummy, Z empty, X remove, U new UID, and the combinations) is
the one the ``dicom-anonymizer`` package (KitwareMedical) generates from the standard, read as data; the
actions are ours, all keyed by ``DeidPolicy.key``, so that exports made at different times with the same key
link up (same new UIDs, same pseudonym, same date shift for a patient) and nothing can be linked back without it.
A patient is the pair (issuer, Patient ID): the issuer is the dataset's Issuer of Patient ID where it has one,
else the hospital the study came from (``deidentify(..., hospital=)``), so that record 123 of two hospitals is
two research subjects:

* UIDs with the U action (study, series, SOP instance, frame of reference, referenced SOP instance ...):
  ``2.25.<first 16 bytes of HMAC-SHA256(key, uid)>`` as a decimal; SOP Class and Transfer Syntax UIDs stay.
* Patient ID and Patient's Name: ``pseudonym(patient_id, key, issuer=)``, 32 hex digits of an HMAC-SHA256.
* Dates (DA, and the date of DT values) of the attributes the table lists, whatever their basic action (the
  option's "C"): shifted by the patient's ``date_shift_days`` (1 to ``max_shift_days`` days back, never 0); a DT's
  UTC offset is removed, and so is Timezone Offset From UTC (a time zone says where). Times (TM) stay as they
  were: the shift is whole days. Patient's Birth Date is emptied, Patient's Birth Time removed.
* Other attributes the table lists, per the table, choosing, where it allows several actions: X/Z, X/Z/D and
  Z/D -> empty, X/D -> removed, X/Z/U* (Referenced/Source Image Sequence) -> items keep only their UIDs.
* Everything else is removed (a keep-list, at every depth of sequences), but for ``KEPT_ATTRIBUTES``: what the
  image needs to be shown, measured and valid DICOM, none of which names or identifies anyone. Private
  attributes, curves (50xx) and overlays (60xx) are removed always.
* Burned-in text (``xraylab.deid_pixels``): looked for by OCR in every image, and blurred where ``TextRule``s say
  it is; an image in which OCR still reads text once cleaned is refused (``DeidRefused``). The pixels are
  written back uncompressed, in Explicit VR Little Endian.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import importlib
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

from pydicom import DataElement, Dataset, Sequence
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from xraylab.deid_pixels import (
    DEFAULT_TEXT_RULES,
    DeidRefused,
    FractionalRegion,
    Region,
    TextRule,
    blur_regions,
    clean_pixel_data,
)

__all__ = ["DeidPolicy", "DeidRefused", "deidentify", "pseudonym", "remap_uid", "date_shift_days", "profile_action",
           "patient_issuer", "PROFILE_TABLE", "KEPT_ATTRIBUTES", "Region", "FractionalRegion", "TextRule",
           "DEFAULT_TEXT_RULES", "blur_regions"]

PROFILE_TABLE = "dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c"  # PS3.15 2026c, table E.1-1
# The table's categories -> the one action we take (see the module docstring for the choices).
_CATEGORY_ACTIONS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z", "X_Z_TAGS": "Z",
                     "X_D_TAGS": "X", "X_Z_D_TAGS": "Z", "X_Z_U_STAR_TAGS": "U*"}
_DUMMY = {**dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"), "ANONYMIZED"),
          "DS": "0", "IS": "0", **dict.fromkeys(("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"), 0)}
_PATIENT_ID, _BIRTH_DATE, _BIRTH_TIME = Tag("PatientID"), Tag("PatientBirthDate"), Tag("PatientBirthTime")
# Removed whatever the table says: the time zone says where a patient was (the table's X, made sure of).
_ALSO_REMOVED = frozenset(Tag(k) for k in ("TimezoneOffsetFromUTC",))
# The keep-list: attributes table E.1-1 does not list that survive, as they are. Each one is needed to show or
# measure the picture or for the file to be a valid image IOD (DX, CR, DX/CR's General modules), and holds a
# code, a number or a UID of a class, never free text, a name, a date or an instance's UID. Any attribute neither
# listed by the table nor here is removed, in sequence items too: an unknown one is assumed to identify.
KEPT_ATTRIBUTES = frozenset(Tag(k) for k in (
    # SOP Common, General Series / Equipment / Image (their Type 1 and 2 attributes the table does not list)
    "SpecificCharacterSet", "SOPClassUID", "Modality", "SeriesNumber", "InstanceNumber", "ImageType",
    "Manufacturer",  # Type 2 of General Equipment, and what the text rules match: a vendor, never a person
    "PresentationIntentType",
    # Image Pixel
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio", "NumberOfFrames", "FrameIncrementPointer",
    "SmallestImagePixelValue", "LargestImagePixelValue", "PixelData",
    # Modality LUT, VOI LUT and presentation: how it is shown (LUT Explanation, free text, is not kept)
    "RescaleIntercept", "RescaleSlope", "RescaleType", "ModalityLUTSequence", "ModalityLUTType", "WindowCenter",
    "WindowWidth", "VOILUTFunction", "VOILUTSequence", "LUTDescriptor", "LUTData", "PresentationLUTShape",
    "PixelIntensityRelationship", "PixelIntensityRelationshipSign",
    # geometry and what the picture shows
    "PixelSpacing", "ImagerPixelSpacing", "PixelSpacingCalibrationType", "EstimatedRadiographicMagnificationFactor",
    "PatientOrientation", "ViewPosition", "BodyPartExamined", "Laterality", "ImageLaterality",
    "AnatomicRegionSequence", "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",  # codes
    # compression and burned-in text
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod", "BurnedInAnnotation",
    # the items of the X/Z/U* sequences: the class of the instance referred to
    "ReferencedSOPClassUID",
    # what deidentify writes (any input value is replaced)
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified"))
_UTC_OFFSET = re.compile(r"[+-]\d{4}$")  # the &ZZXX of a DT value
_OPTIONS = {  # the method text (LO: 64 characters a value) and CID 7050 code of the profile and each option
    "basic": ("PS3.15 E.1 Basic Application Confidentiality Profile",
              codes.DCM.BasicApplicationConfidentialityProfile),
    "dates": ("Retain Longitudinal Temporal Information With Modified Dates",
              codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption),
    "pixels": ("Clean Pixel Data", codes.DCM.CleanPixelDataOption),
}


@dataclass(frozen=True)
class DeidPolicy:
    """The secret ``key`` (keep it out of the export: with it, pseudonyms and UIDs can be recomputed from the
    originals), the widest date shift, and the rules that say where burned-in text is."""

    key: bytes
    max_shift_days: int = 365
    text_rules: tuple[TextRule, ...] = DEFAULT_TEXT_RULES

    def __post_init__(self) -> None:
        _require_key(self.key)
        if self.max_shift_days < 1:
            raise ValueError("max_shift_days must be at least 1")


def _require_key(key: bytes) -> None:
    if not key:
        raise ValueError("an empty de-identification key would make pseudonyms and UIDs public")


def _hmac(key: bytes, message: str) -> bytes:
    _require_key(key)
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _patient_key(patient_id: str, issuer: str) -> str:
    """The patient, (issuer, Patient ID), as one unambiguous string (JSON: no pair of strings can look like
    another)."""
    patient_id, issuer = str(patient_id).strip(), str(issuer or "").strip()
    if not patient_id:
        raise DeidRefused("no_patient_id", "no Patient ID: a stable pseudonym and date shift need one")
    if not issuer:
        raise DeidRefused("no_issuer", "no issuer of the Patient ID (no Issuer of Patient ID, no hospital): the same "
                                       "id at two hospitals would be one research subject")
    return json.dumps([issuer, patient_id])


def patient_issuer(ds: Dataset, hospital: str | None) -> str:
    """Who issued ``ds``'s Patient ID: its Issuer of Patient ID (0010,0021) where it has one, else ``hospital``,
    the hospital the study came from ("" when neither is known)."""
    return str(ds.get("IssuerOfPatientID") or "").strip() or str(hospital or "").strip()


def pseudonym(patient_id: str, key: bytes, *, issuer: str) -> str:
    """The patient's replacement ID: 32 hex digits of HMAC-SHA256(key, "patient-id:" + [issuer, id] as JSON),
    fits LO and PN. The same id from another issuer (hospital) is another patient."""
    return _hmac(key, "patient-id:" + _patient_key(patient_id, issuer)).hex()[:32]


def remap_uid(uid: str, key: bytes) -> str:
    """The new UID for ``uid``: "2.25." and the first 16 bytes of HMAC-SHA256(key, uid) as an integer (a
    UUID-derived UID, at most 44 characters), the same for the same ``uid`` and ``key``."""
    return "2.25." + str(int.from_bytes(_hmac(key, str(uid).strip().rstrip("\0"))[:16], "big"))


def date_shift_days(patient_id: str, key: bytes, max_days: int, *, issuer: str) -> int:
    """The patient's date shift, in days: from -``max_days`` to -1, from HMAC-SHA256(key, "date-shift:" +
    [issuer, id] as JSON)."""
    if max_days < 1:
        raise ValueError("max_days must be at least 1")
    digest = _hmac(key, "date-shift:" + _patient_key(patient_id, issuer))
    return -(int.from_bytes(digest[:8], "big") % max_days + 1)


@cache
def _profile_table() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    table = importlib.import_module(PROFILE_TABLE)
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, action in _CATEGORY_ACTIONS.items():
        for entry in getattr(table, category):
            if len(entry) == 2:
                exact[Tag(*entry)] = action
            else:  # repeating groups: (group, element, group mask, element mask)
                masked.append((*entry, action))
    return exact, tuple(masked)


def profile_action(tag: int) -> str | None:
    """What we do to the attribute ``tag`` by table E.1-1 ("D", "Z", "X", "U" or "U*"), None if not listed."""
    exact, masked = _profile_table()
    tag = Tag(tag)
    if tag in exact:
        return exact[tag]
    for group, element, group_mask, element_mask, action in masked:
        if tag.group & group_mask == group and tag.element & element_mask == element:
            return action
    return None


def _shift(value: str, days: int) -> str | None:
    """A DA or DT value with its date moved by ``days`` and its UTC offset removed; None when it holds no full
    date to move."""
    text = _UTC_OFFSET.sub("", str(value).strip())
    if len(text) == 10 and text[4] == "." and text[7] == ".":  # the retired YYYY.MM.DD form
        text = text.replace(".", "")
    if not text[:8].isdigit():
        return None
    try:
        moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}{text[8:]}"


@dataclass(frozen=True)
class _Context:
    key: bytes
    shift_days: int
    issuer: str


def _values(elem: DataElement) -> list:
    value = elem.value
    return [] if value is None or value == "" else list(value) if elem.VM > 1 else [value]


def _with(elem: DataElement, values: list) -> DataElement:
    return DataElement(elem.tag, elem.VR, values if len(values) > 1 else values[0] if values else elem.empty_value)


def _clean_element(elem: DataElement, ctx: _Context) -> DataElement | None:
    tag: BaseTag = elem.tag
    if tag.is_private or (tag.group & 0xFF00) in (0x5000, 0x6000) or tag in _ALSO_REMOVED:  # private, curves,
        return None  # overlays
    if tag == _BIRTH_DATE:
        return DataElement(tag, elem.VR, elem.empty_value)
    if tag == _BIRTH_TIME:
        return None
    if tag == _PATIENT_ID:
        return _with(elem, [pseudonym(v, ctx.key, issuer=ctx.issuer) for v in _values(elem) if str(v).strip()])
    action = profile_action(tag)
    if action is None:  # the keep-list: kept as it is (a sequence's items cleaned), or removed
        if tag not in KEPT_ATTRIBUTES:
            return None
        if elem.VR == "SQ":
            return DataElement(tag, "SQ", Sequence([_clean_dataset(item, ctx) for item in elem.value]))
        return copy.deepcopy(elem)
    if elem.VR in ("DA", "DT"):  # the option keeps every listed date (whatever the basic action), moved
        shifted = [_shift(v, ctx.shift_days) for v in _values(elem)]
        return _with(elem, [] if None in shifted else shifted)
    if elem.VR == "TM":  # and every listed time, as it was: the dates move by whole days
        return copy.deepcopy(elem)
    if action == "X":
        return None
    if elem.VR == "SQ":
        if action in ("D", "Z"):
            return DataElement(tag, "SQ", Sequence())
        items = elem.value
        if action == "U*":  # keep only the items' UIDs
            items = [_only_uids(item) for item in items]
        return DataElement(tag, "SQ", Sequence([_clean_dataset(item, ctx) for item in items]))
    if elem.VR == "UI":
        return _with(elem, [remap_uid(v, ctx.key) for v in _values(elem)])
    if action == "D" and elem.VR in _DUMMY:
        return DataElement(tag, elem.VR, _DUMMY[elem.VR])
    return DataElement(tag, elem.VR, elem.empty_value)


def _only_uids(item: Dataset) -> Dataset:
    kept = Dataset()
    for elem in item:
        if elem.VR == "UI":
            kept.add(copy.deepcopy(elem))
    return kept


def _clean_dataset(src: Dataset, ctx: _Context) -> Dataset:
    out = Dataset()
    for elem in src:
        cleaned = _clean_element(elem, ctx)
        if cleaned is not None:
            out.add(cleaned)
    return out


def deidentify(ds: Dataset, policy: DeidPolicy, *, hospital: str | None) -> Dataset:
    """A de-identified copy of ``ds`` (``ds`` itself is left as it was), with new file meta information.
    ``hospital``: the hospital the study came from, the issuer of its Patient ID where the dataset does not name
    one (Issuer of Patient ID).

    Raises ``DeidRefused`` (a ``ValueError``; its ``reason`` says why) for a dataset without Patient ID or without
    an issuer for it, one whose pixels still hold text that OCR reads once cleaned, one that says it has burned-in
    annotation where neither OCR nor a rule finds any, or one with colour pixels; ``xraylab.ocr
    .TesseractMissingError`` when Tesseract is not installed."""
    issuer = patient_issuer(ds, hospital)
    patient_id = str(ds.get("PatientID") or "")
    ctx = _Context(policy.key, date_shift_days(patient_id, policy.key, policy.max_shift_days, issuer=issuer), issuer)
    out = _clean_dataset(ds, ctx)
    out.PatientID = out.PatientName = pseudonym(patient_id, policy.key, issuer=issuer)
    source_meta = getattr(ds, "file_meta", Dataset())
    out.file_meta = meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or source_meta.get("MediaStorageSOPClassUID")
    meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID") or remap_uid(
        source_meta.get("MediaStorageSOPInstanceUID", ""), policy.key)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the pixels are written anew, uncompressed (any input)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    options = ["basic", "dates"]
    if "PixelData" in ds:  # looked for by OCR and cleaned, or refused (DeidRefused)
        clean_pixel_data(ds, out, policy.text_rules)
        out.BurnedInAnnotation = "NO"
        options.append("pixels")
    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    out.DeidentificationMethod = [_OPTIONS[name][0] for name in options]
    out.DeidentificationMethodCodeSequence = Sequence([_code_item(_OPTIONS[name][1]) for name in options])
    return out


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item
