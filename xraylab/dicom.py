"""DICOM objects as the pipeline reads them (pydicom 3, with the pylibjpeg plugins for compressed pixel data).

Two things come out of a DICOM Part 10 file: its pixels as the 0-255 grey picture a radiologist would see
(``to_grey``), which ``xraylab.imaging.DecodeImage`` feeds to the one preprocessing chain, and its patient and
study attributes (``tag_metadata``), which the Fetcher stores instead of S3 user metadata. What cannot be scored
is refused with ``InvalidImageError`` and a reason naming it: ``not_dicom`` (named or typed DICOM but no Part 10
header), ``unsupported_transfer_syntax`` (no decoder installed), ``multi_frame``, ``not_image_dicom`` (a report,
an RT plan: no pixel data), ``unsupported_dicom`` (a photometric interpretation or bit depth it cannot render).

From stored value to grey level, as PS3.3 C.11 orders the steps: the Modality LUT (or Rescale Slope/Intercept),
then the VOI LUT (its first one) or the first Window Center/Width with its VOI LUT Function, then MONOCHROME1
inverted so that bone is white, as in a JPEG. An image with neither a VOI LUT nor a window maps its nominal
range when it has at most 8 bits stored (an 8-bit DICOM and the same picture as an 8-bit JPEG are the same
input), else the range its pixels really use.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from xraylab.errors import RejectedInputError, RejectReason
from xraylab.imaging import ImageLimits, InvalidImageError, check_size
from xraylab.messages import (
    MAX_STUDY_DESCRIPTION,
    FetchedObject,
    StudyMetadata,
    age_between,
    patient_age,
    patient_sex,
)

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["is_dicom", "claims_dicom", "refuse_misnamed", "read_dataset", "check_supported", "to_grey",
           "decode_grey", "tag_metadata", "with_tags", "dicom_size", "MONOCHROME", "DICOM_SUFFIXES", "DICOM_MEDIA_TYPE",
           "is_own_result", "RESULT_MANUFACTURER", "is_read_failure", "first_value", "decode_checked"]

T = TypeVar("T")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
DICOM_MEDIA_TYPE = "application/dicom"
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def claims_dicom(name: str | None, content_type: str | None) -> bool:
    """Whether a file's name or media type says it is DICOM."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == DICOM_MEDIA_TYPE or (name or "").lower().endswith(DICOM_SUFFIXES)


def refuse_misnamed(data: bytes, name: str | None, content_type: str | None) -> None:
    """Refuse (``not_dicom``) an object whose name or media type says DICOM while its bytes are not."""
    if claims_dicom(name, content_type) and not is_dicom(data):
        said = "media type application/dicom" if not (name or "").lower().endswith(DICOM_SUFFIXES) else "name"
        raise InvalidImageError(f"its {said} says DICOM, but there is no DICOM Part 10 header ('DICM' at byte 128)",
                                RejectReason.NOT_DICOM)


def is_read_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to read this input (to be refused), rather than the process being stopped.
    Decoders written in Rust (pylibjpeg-rle) panic with a ``BaseException`` of their own on corrupt data."""
    return not isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


def read_dataset(data: bytes, *, header_only: bool = False) -> Dataset:
    """The dataset of a Part 10 file; ``header_only`` stops before the pixel data (cheap: the tags only).
    Whatever fails in parsing is refused as ``not_image``, naming the error's type only: its message may quote
    element bytes, and so patient data."""
    import pydicom

    if not is_dicom(data):
        raise InvalidImageError("no DICOM Part 10 header ('DICM' at byte 128)", RejectReason.NOT_DICOM)
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=header_only)
    except BaseException as exc:
        if not is_read_failure(exc):
            raise
        raise InvalidImageError(f"unreadable DICOM ({type(exc).__name__})") from None


def _sop_class(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    return f"{uid.name} ({uid})" if uid else "no SOP Class UID"


RESULT_MANUFACTURER = "xraylab"  # what the results delivered to a PACS say they are made by (delivery/)


def is_own_result(ds: Dataset) -> bool:
    """Whether an instance is one of the results xraylab stores into a PACS (``delivery.dicom_results``): its
    Manufacturer is ``RESULT_MANUFACTURER`` and it is derived (Secondary Capture or a structured report)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    derived = sop_class == "1.2.840.10008.5.1.4.1.1.7" or sop_class.startswith("1.2.840.10008.5.1.4.1.1.88.")
    return derived and str(ds.get("Manufacturer", "")).strip() == RESULT_MANUFACTURER


def check_supported(ds: Dataset) -> None:
    """Refuse what the classifier cannot score, naming what: no pixel data (a non-image SOP class), several
    frames, a transfer syntax with no decoder installed, a photometric interpretation or bit depth not handled."""
    from pydicom.pixels import get_decoder

    if is_own_result(ds):
        raise InvalidImageError("an xraylab result (its SR or Grad-CAM picture), not a radiograph to score",
                                RejectReason.OWN_RESULT)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise InvalidImageError(f"no pixel data: SOP class {_sop_class(ds)} is not an image",
                                RejectReason.NOT_IMAGE_DICOM)
    if "PixelData" not in ds:
        raise InvalidImageError("float pixel data (a parametric map) is not a radiograph",
                                RejectReason.UNSUPPORTED_DICOM)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise InvalidImageError(f"{frames} frames in one instance ({_sop_class(ds)}); one radiograph per instance "
                                "is scored", RejectReason.MULTI_FRAME)
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not syntax:
        raise InvalidImageError("no Transfer Syntax UID in the file meta information", RejectReason.NOT_IMAGE)
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise InvalidImageError(f"transfer syntax {syntax.name} ({syntax}) has no pixel data decoder here",
                                RejectReason.UNSUPPORTED_TRANSFER_SYNTAX)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in MONOCHROME + _COLOUR:
        raise InvalidImageError(f"photometric interpretation {photometric or '(none)'} is not handled",
                                RejectReason.UNSUPPORTED_DICOM)
    bits = int(ds.get("BitsAllocated") or 0)
    if bits not in (1, 8, 16, 32):
        raise InvalidImageError(f"{bits} bits allocated per sample is not handled", RejectReason.UNSUPPORTED_DICOM)


def dicom_size(ds: Dataset) -> tuple[int, int]:
    """(width, height) from Columns and Rows, before any pixel is decoded."""
    return int(ds.get("Columns") or 0), int(ds.get("Rows") or 0)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Window Center/Width to [0, 1] (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID), in ``values``' own
    memory (a float array of the caller's: at 7 MP each temporary array costs milliseconds)."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-6)))
    if function == "LINEAR_EXACT":
        low, span = center - width / 2.0, max(width, 1e-6)
    else:  # LINEAR: the width must be at least 1
        width = max(width, 1.0)
        low, span = center - 0.5 - (width - 1.0) / 2.0, max(width - 1.0, 1e-6)
    values -= low
    values /= span
    return np.clip(values, 0.0, 1.0, out=values)


def first_value(value: Any) -> float:
    """The first of a multi-valued DS (several windows: the first is the default one)."""
    from pydicom.multival import MultiValue

    if isinstance(value, MultiValue | list | tuple):
        value = value[0]
    return float(value)


def _to_unit(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored monochrome values -> [0, 1] presentation values (Modality LUT, VOI, then MONOCHROME1 inverted)."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    modality = apply_modality_lut(stored, ds)
    # float32 holds any 16-bit stored value exactly and grey levels to 1e-5 of 255; float64 doubles the time of
    # every step below on a 7 MP radiograph
    values = np.array(modality, dtype=np.float32)  # a copy of its own: the window works in it
    voi_luts = ds.get("VOILUTSequence")
    if voi_luts:  # a LUT is indexed by (integer) modality values
        entry_bits = int(voi_luts[0].LUTDescriptor[2]) or 16
        indices = modality if np.issubdtype(modality.dtype, np.integer) else np.round(values).astype(np.int64)
        unit = np.asarray(apply_voi(indices, ds, index=0), np.float64) / float(2 ** entry_bits - 1)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        center, width = first_value(ds.WindowCenter), first_value(ds.WindowWidth)
        if not (np.isfinite(center) and np.isfinite(width) and width > 0):
            raise InvalidImageError(f"window center {center:g} / width {width:g} is no window",
                                    RejectReason.UNSUPPORTED_DICOM)
        unit = _window(values, center, width, function)
    else:
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
        rescaled = "ModalityLUTSequence" in ds or float(ds.get("RescaleSlope", 1) or 1) != 1 or float(
            ds.get("RescaleIntercept", 0) or 0) != 0
        if bits <= 8 and not rescaled and int(ds.get("PixelRepresentation", 0) or 0) == 0:
            low, high = 0.0, float(2 ** bits - 1)
        else:
            low, high = float(values.min()), float(values.max())
        unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if not np.isfinite(unit.sum(dtype=np.float64)):  # a NaN slope or LUT entry: no picture to score
        raise InvalidImageError("rescale or VOI values give no finite grey levels", RejectReason.UNSUPPORTED_DICOM)
    unit = np.clip(unit, 0.0, 1.0, out=unit if unit.dtype == np.float32 else None)
    # MONOCHROME1 is shown inverted (its Presentation LUT Shape says INVERSE too: one inversion); a MONOCHROME2
    # image whose Presentation LUT Shape is INVERSE is inverted as well.
    inverse = str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1" or inverse:
        unit = np.subtract(1.0, unit, out=unit)
    return unit


def to_grey(ds: Dataset) -> np.ndarray:
    """The picture as ``float32 (rows, columns)`` grey levels in [0, 255]; call ``check_supported`` first."""
    from pydicom.pixels import apply_color_lut

    try:
        stored = ds.pixel_array  # YBR colour is converted to RGB here
    except BaseException as exc:  # a decoder's own error: truncated or corrupt pixel data
        if not is_read_failure(exc):
            raise
        raise InvalidImageError(f"pixel data does not decode ({type(exc).__name__})") from None
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric in MONOCHROME:
        unit = _to_unit(ds, stored).astype(np.float32, copy=False)
        return np.multiply(unit, np.float32(255.0), out=unit)
    if photometric == "PALETTE COLOR":
        stored = apply_color_lut(stored, ds)
    if stored.ndim != 3 or stored.shape[-1] != 3:
        raise InvalidImageError(f"{photometric} pixels of shape {stored.shape} are not one RGB picture",
                                RejectReason.UNSUPPORTED_DICOM)
    if photometric == "PALETTE COLOR":  # the colour LUT's entries: 8 or 16 bits
        top = float(np.iinfo(stored.dtype).max) if stored.dtype in (np.uint8, np.uint16) else 65535.0
    else:
        top = float(2 ** int(ds.get("BitsStored") or 8) - 1)
    luma = stored.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's "L"
    return np.clip(luma * (255.0 / top), 0.0, 255.0).astype(np.float32)


def _frame_size(ds: Dataset) -> tuple[int, int] | None:
    """(width, height) that the first compressed frame says it has (a JPEG SOF or JPEG 2000 SIZ marker), read
    before decoding: a decoder sizes its buffer from these, not from Rows and Columns. None: not JPEG/J2K."""
    from pydicom.encaps import generate_frames

    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated or syntax == "1.2.840.10008.1.2.5":  # RLE decodes to Rows x Columns
        return None
    frame = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
    return _jpeg_size(frame) if frame[:2] == b"\xff\xd8" else _j2k_size(frame)


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    """The SOF marker's width and height (any process, JPEG-LS's SOF55 included)."""
    i = 2
    while i + 9 <= len(frame):
        if frame[i] != 0xFF:
            return None
        marker = frame[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(frame[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) or marker == 0xF7:
            return int.from_bytes(frame[i + 7:i + 9], "big"), int.from_bytes(frame[i + 5:i + 7], "big")
        i += 2 + length
    return None


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    """The SIZ marker's image size: Xsiz - XOsiz by Ysiz - YOsiz (a JP2 wrapper's codestream found first)."""
    start = frame.find(b"\xff\x4f\xff\x51")
    if start < 0 or len(frame) < start + 24:
        return None
    x, y, x0, y0 = (int.from_bytes(frame[start + 8 + 4 * k:start + 12 + 4 * k], "big") for k in range(4))
    return x - x0, y - y0


def decode_checked(data: bytes, limits: ImageLimits | None, decode: Callable[[Dataset], T]) -> T:
    """``decode`` of the DICOM file in ``data``, refused before decoding when it is not a single image this
    module can render or has more pixels than ``limits`` allow (its header's Rows and Columns, and what its
    compressed frame says it holds, which must agree). A failure to read it is an ``InvalidImageError``."""
    ds = read_dataset(data)
    try:
        check_supported(ds)
        if limits is not None:
            size = dicom_size(ds)
            check_size(size, limits)
            framed = _frame_size(ds)
            if framed is not None and framed != size:
                raise InvalidImageError(f"the compressed frame is {framed[0]}x{framed[1]} pixels, the header says "
                                        f"{size[0]}x{size[1]}")
        return decode(ds)
    except InvalidImageError:
        raise
    except BaseException as exc:
        if not is_read_failure(exc):
            raise
        # pydicom reads values lazily: an attribute that does not parse (an IS of "1A") fails here
        raise InvalidImageError(f"malformed DICOM ({type(exc).__name__})") from None


def decode_grey(data: bytes, limits: ImageLimits | None = None) -> np.ndarray:
    """Bytes of a DICOM file -> its grey picture (``to_grey``), refused as ``decode_checked`` refuses one."""
    return decode_checked(data, limits, to_grey)


def _text(value: Any, limit: int) -> str | None:
    """A tag's value as printable text (control characters dropped), or None when empty."""
    if value is None:
        return None
    text = "".join(ch for ch in str(value) if ch.isprintable()).strip()
    return text[:limit] or None


def _person_name(value: Any) -> str | None:
    """``Family^Given^Middle`` as ``Given Middle Family``, the way the uploader writes names for JPEGs."""
    if not value:
        return None
    parts = [getattr(value, attr, "") for attr in ("given_name", "middle_name", "family_name")]
    name = " ".join(p for p in parts if p) or str(value).replace("^", " ")
    return _text(name, 256)


def _iso_date(value: Any) -> str | None:
    """A DA ``YYYYMMDD`` as ``YYYY-MM-DD``; anything else as it is."""
    text = _text(value, 32)
    if text and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def _da(value: Any) -> date | None:
    """A DA ``YYYYMMDD`` as a date; None when it is none or no real date."""
    text = _text(value, 32)
    if not text or len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _tag_age(ds: Dataset) -> str | None:
    """PatientAge, or where it is absent (or no age) the age from PatientBirthDate at StudyDate."""
    age = patient_age(_text(ds.get("PatientAge"), 16))
    if age:
        return age
    birth, studied = _da(ds.get("PatientBirthDate")), _da(ds.get("StudyDate"))
    return age_between(birth, studied) if birth and studied else None


def tag_metadata(ds: Dataset, fallback: StudyMetadata | None = None) -> StudyMetadata:
    """Patient and study data from the tags (PatientID, PatientName, PatientSex, PatientAge or else the age from
    PatientBirthDate at StudyDate, StudyInstanceUID, StudyDate, StudyDescription, Modality, ViewPosition,
    Manufacturer, AccessionNumber; the hospital from InstitutionName). Where a tag is absent, ``fallback`` (the
    object's S3 user metadata, or for the PACS its configured hospital) fills in; the hospital of ``fallback``
    wins, since it names the sending site."""
    base = fallback or StudyMetadata()
    return StudyMetadata(
        hospital=base.hospital or _text(ds.get("InstitutionName"), 128),
        patient_id=_text(ds.get("PatientID"), 128) or base.patient_id,
        patient_name=_person_name(ds.get("PatientName")) or base.patient_name,
        study_date=_iso_date(ds.get("StudyDate")) or base.study_date,
        study_instance_uid=_text(ds.get("StudyInstanceUID"), 64),
        modality=_text(ds.get("Modality"), 16),
        view_position=_text(ds.get("ViewPosition"), 16),
        manufacturer=_text(ds.get("Manufacturer"), 64),
        accession_number=_text(ds.get("AccessionNumber"), 64) or base.accession_number,
        patient_sex=patient_sex(_text(ds.get("PatientSex"), 16)) or base.patient_sex,
        patient_age=_tag_age(ds) or base.patient_age,
        study_description=_text(ds.get("StudyDescription"), MAX_STUDY_DESCRIPTION) or base.study_description,
    )


def with_tags(fetched: FetchedObject) -> FetchedObject:
    """A fetched object as the pipeline stores it: a DICOM one with the metadata of its tags (its S3 metadata
    filling gaps); a JPEG or PNG as it is. Raises ``RejectedInputError``: ``not_dicom`` for an object named or
    typed DICOM that is not, or the reason its header cannot be read."""
    try:
        refuse_misnamed(fetched.data, fetched.key, fetched.content_type)
        if not is_dicom(fetched.data):
            return fetched
        ds = read_dataset(fetched.data, header_only=True)
    except InvalidImageError as exc:
        raise RejectedInputError(exc.reason, str(exc)) from exc
    try:
        return replace(fetched, metadata=tag_metadata(ds, fetched.metadata))
    except Exception as exc:  # the message may quote a patient's name: its type only
        raise RejectedInputError(RejectReason.BAD_METADATA, f"DICOM tags do not decode: {type(exc).__name__}") from exc
