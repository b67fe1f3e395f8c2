"""DICOM files as a hospital's X-ray modality writes them, for the simulated hospital (the uploader, the C-STORE
sender) and the tests: a DX chest radiograph with invented patient data in the tags and, optionally, burned into
the pixels (the patient's name and id in the top band, as on the reference demo images).

Pixels come in as 8-bit grey. ``bits=16`` stores them as 12-bit values (x 16) with a window that maps them back;
``MONOCHROME1`` stores them inverted. Either way the picture the tags describe is the 8-bit one, so a DICOM file
and the same picture as a JPEG score alike. Transfer syntaxes: explicit and implicit VR little endian, RLE
lossless and JPEG 2000 (pydicom's own encoders, pylibjpeg-openjpeg), and JPEG baseline (Pillow's encoder,
encapsulated), which covers what a modality or a PACS sends."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Where burned-in text goes, and what the research export blurs on this manufacturer's images.
from xraylab.deid_pixels import SIMULATED_MANUFACTURER, TEXT_BAND

__all__ = ["ModalityStudy", "dicom_bytes", "build_dataset", "burn_in_text", "TRANSFER_SYNTAXES", "TEXT_BAND"]

# Names accepted by ``dicom_bytes(syntax=...)`` and ``xraylab upload --dicom --syntax``.
TRANSFER_SYNTAXES = ("explicit", "implicit", "rle", "jpeg2000", "jpeg2000-lossless", "jpeg-baseline")

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


@dataclass(frozen=True)
class ModalityStudy:
    """What a modality writes in the tags (the patient data is invented)."""

    patient_id: str
    patient_name: str  # "Given Family"
    study_date: date
    hospital: str
    birth_date: date | None = None
    accession: str = ""
    manufacturer: str = SIMULATED_MANUFACTURER
    view_position: str = "PA"
    sex: str = "O"  # PatientSex: M, F or O
    description: str = "XR CHEST PA"  # StudyDescription


def burn_in_text(pixels: np.ndarray, lines: list[str]) -> np.ndarray:
    """``pixels`` (uint8, 2-D) with ``lines`` drawn in white at the top left, inside the top ``TEXT_BAND``
    (accents folded: the default font has ASCII glyphs)."""
    import unicodedata

    lines = [unicodedata.normalize("NFKD", line).encode("ascii", "ignore").decode() for line in lines]
    picture = Image.fromarray(pixels)
    height = pixels.shape[0]
    size = max(8, int(height * TEXT_BAND / (len(lines) + 1)))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(lines):
        draw.text((max(2, height // 64), 2 + i * size), line, fill=255, font=font)
    return np.asarray(picture)


def _dicom_name(name: str) -> str:
    given, _, family = name.rpartition(" ")
    return f"{family}^{given}" if given else family


def build_dataset(pixels: np.ndarray, study: ModalityStudy, *, bits: int = 8, photometric: str = "MONOCHROME2",
                  burn_in: bool = False, uids: tuple[str, str, str] | None = None):  # -> pydicom.FileDataset
    """A DX For Presentation dataset of ``pixels`` (uint8, 2-D) in explicit VR little endian. ``uids``: the
    study, series and SOP instance UIDs (new ones by default)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError("pixels must be a 2-D uint8 array")
    if bits not in (8, 16):
        raise ValueError("bits must be 8 or 16")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError("photometric must be MONOCHROME1 or MONOCHROME2")
    if burn_in:
        pixels = burn_in_text(pixels, [study.patient_name, f"ID {study.patient_id}", study.study_date.isoformat()])
    study_uid, series_uid, instance_uid = uids or (generate_uid(), generate_uid(), generate_uid())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names such as "Chloé"
    ds.SOPClassUID, ds.SOPInstanceUID = DX_FOR_PRESENTATION, instance_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "DX", study.view_position, "CHEST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer, ds.InstitutionName = study.manufacturer, study.hospital
    ds.PatientName, ds.PatientID = _dicom_name(study.patient_name), study.patient_id
    ds.PatientBirthDate = study.birth_date.strftime("%Y%m%d") if study.birth_date else ""
    ds.PatientSex = study.sex
    day = study.study_date.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = day
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber, ds.ReferringPhysicianName = study.accession, ""
    ds.StudyDescription = study.description
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.BurnedInAnnotation = "YES" if burn_in else "NO"
    stored = pixels if photometric == "MONOCHROME2" else (255 - pixels)
    if bits == 16:  # 12 bits stored: 16 * v + 8, the middle of its step
        ds.set_pixel_data((stored.astype(np.uint16) * 16 + 8), photometric, 12, generate_instance_uid=False)
        ds.WindowCenter, ds.WindowWidth = 2048.5, 4081  # LINEAR: (x - 8) / 4080 = v / 255 exactly
    else:
        ds.set_pixel_data(stored, photometric, 8, generate_instance_uid=False)
    ds.PixelSpacing = [0.2, 0.2]
    return ds


def _encode(ds, syntax: str) -> None:  # noqa: ANN001 - a pydicom Dataset, compressed in place
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        JPEG2000,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
    )

    if syntax == "explicit":
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    elif syntax == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif syntax == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif syntax == "jpeg2000-lossless":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif syntax == "jpeg2000":
        ds.compress(JPEG2000, j2k_psnr=[80], generate_instance_uid=False)
    elif syntax == "jpeg-baseline":
        if ds.BitsAllocated != 8:
            raise ValueError("JPEG baseline holds 8-bit pixels only")
        buf = io.BytesIO()
        Image.fromarray(ds.pixel_array).save(buf, "JPEG", quality=95)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    else:
        raise ValueError(f"unknown transfer syntax {syntax!r}: one of {', '.join(TRANSFER_SYNTAXES)}")


def dicom_bytes(pixels: np.ndarray, study: ModalityStudy, *, syntax: str = "explicit", bits: int = 8,
                photometric: str = "MONOCHROME2", burn_in: bool = False) -> bytes:
    """A DICOM Part 10 file of ``pixels`` in the named transfer syntax (``TRANSFER_SYNTAXES``)."""
    ds = build_dataset(pixels, study, bits=bits, photometric=photometric, burn_in=burn_in)
    _encode(ds, syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
