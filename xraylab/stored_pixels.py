"""A study's picture as its stored samples, for an image viewer that does window/level itself (the review app's
viewer, ``ui/viewer``): one grey frame, row-major, with what it takes to show it (``StoredPixels.headers``).

- A DICOM file with 16 bits allocated: its samples as stored, ``uint16`` or ``int16`` (Pixel Representation),
  no Modality LUT, VOI LUT or inversion applied; the Rescale Slope and Intercept, the window and the photometric
  interpretation travel beside them. Compressed transfer syntaxes decode through pydicom and the pylibjpeg
  plugins, as the scoring chain decodes them (``xraylab.dicom``), and are held to the same checks first.
- 8 bits allocated (a DICOM file, a JPEG, an 8-bit PNG): ``uint8``. A 16-bit grey PNG: ``uint16``.
- Colour pictures (RGB JPEG or PNG, colour DICOM) become 8-bit grey, as the chain's ``ToGrayscale`` and
  ``xraylab.dicom.to_grey`` make them (ITU-R 601-2 luma).
- Rare DICOM encodings kept faithful rather than "as stored": a Modality LUT Sequence is applied (its output sent,
  slope 1, intercept 0, so that the file's window still applies); 32 bits allocated are brought into ``uint16``
  (linearly, the slope and intercept adjusted so that modality values are unchanged up to that step); 1 bit
  allocated is sent as ``uint8`` 0/1.

The window (center and width, in modality units, after slope and intercept) is the file's first Window Center and
Width when it has one; else, for a picture of at most 8 bits stored with no rescale (a JPEG, a PNG, such a DICOM
file, which the chain shows over its nominal range), the nominal range (127.5 / 255 for 8 bits); else the 1st to
99th percentile of its modality values. ``MONOCHROME1`` says: show it inverted (a MONOCHROME1 file, or a
MONOCHROME2 one whose Presentation LUT Shape is INVERSE, as ``xraylab.dicom`` inverts them).

Pictures are refused from their header, before any pixel is decoded, with more pixels than ``limits`` allow
(``InvalidImageError`` ``too_many_pixels``), exactly as the chain refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from xraylab.errors import RejectReason
from xraylab.imaging import ImageLimits, InvalidImageError, load_picture

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["StoredPixels", "stored_pixels", "SourceFormat"]

SourceFormat = Literal["dicom", "jpeg", "png"]
_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class StoredPixels:
    """One grey frame (``samples``: 2-D ``uint8``, ``uint16`` or ``int16``) and how to show it."""

    samples: np.ndarray
    bits_stored: int
    slope: float
    intercept: float
    window_center: float
    window_width: float
    photometric: Literal["MONOCHROME1", "MONOCHROME2"]
    source_format: SourceFormat

    @property
    def rows(self) -> int:
        return int(self.samples.shape[0])

    @property
    def columns(self) -> int:
        return int(self.samples.shape[1])

    @property
    def bits_allocated(self) -> int:
        return 8 * self.samples.dtype.itemsize

    @property
    def pixel_representation(self) -> int:
        return 1 if self.samples.dtype.kind == "i" else 0

    def body(self) -> bytes:
        """The samples, row-major, little-endian."""
        little = self.samples.dtype.newbyteorder("<")
        return np.ascontiguousarray(self.samples, dtype=little).tobytes()

    def headers(self) -> dict[str, str]:
        """The metadata as response headers (ASCII)."""
        low, high = (int(v) for v in (self.samples.min(), self.samples.max())) if self.samples.size else (0, 0)
        return {
            "X-Rows": str(self.rows), "X-Columns": str(self.columns),
            "X-Bits-Allocated": str(self.bits_allocated), "X-Bits-Stored": str(self.bits_stored),
            "X-Pixel-Representation": str(self.pixel_representation),
            "X-Rescale-Slope": _number(self.slope), "X-Rescale-Intercept": _number(self.intercept),
            "X-Window-Center": _number(self.window_center), "X-Window-Width": _number(self.window_width),
            "X-Photometric": self.photometric, "X-Min-Value": str(low), "X-Max-Value": str(high),
            "X-Source-Format": self.source_format,
        }


def _number(value: float) -> str:
    """A float as short ASCII text: ``127.5``, ``-1024``, ``0.000244140625``."""
    return format(float(value), ".12g")


def stored_pixels(data: bytes, limits: ImageLimits | None = None) -> StoredPixels:
    """The stored samples of a JPEG, PNG or DICOM file (see the module). Raises ``InvalidImageError``: more pixels
    than ``limits`` allow (from the header), not a picture this can read, not one grey or colour frame."""
    from xraylab.dicom import is_dicom

    if not data:
        raise InvalidImageError("empty object")
    if is_dicom(data):
        return _dicom(data, limits)
    return _picture(data, limits)


def _grey8(samples: np.ndarray, source_format: SourceFormat, *, bits: int = 8) -> StoredPixels:
    """8-bit (or fewer bits stored) grey, shown over its nominal range."""
    top = float(2 ** bits - 1)
    return StoredPixels(samples.astype(np.uint8, copy=False), bits, 1.0, 0.0, top / 2.0, top, "MONOCHROME2",
                        source_format)


def _picture(data: bytes, limits: ImageLimits | None) -> StoredPixels:
    """A JPEG or PNG, decoded whole (no reduced JPEG scale), as the chain's ``DecodeImage`` opens it."""
    image = load_picture(data, ("JPEG", "PNG"), limits)
    source: SourceFormat = "jpeg" if image.format == "JPEG" else "png"
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey PNG ("I" in some Pillow versions)
        samples = np.asarray(image)
        if samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise InvalidImageError(f"{image.mode} samples outside 16 bits", RejectReason.UNSUPPORTED_DICOM)
        samples = samples.astype(np.uint16, copy=False)
        center, width = _percentile_window(samples, 1.0, 0.0)
        return StoredPixels(samples, 16, 1.0, 0.0, center, width, "MONOCHROME2", source)
    grey = image if image.mode == "L" else image.convert("L")  # RGB, RGBA, P, LA, CMYK, 1: luma (ITU-R 601-2)
    return _grey8(np.asarray(grey, dtype=np.uint8), source)


def _dicom(data: bytes, limits: ImageLimits | None) -> StoredPixels:
    """A DICOM file's one frame, refused first as ``xraylab.dicom.decode_grey`` refuses one."""
    from xraylab.dicom import decode_checked

    return decode_checked(data, limits, _frame)


def _frame(ds: Dataset) -> StoredPixels:
    from xraylab.dicom import MONOCHROME, is_read_failure, to_grey

    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric not in MONOCHROME:  # colour: 8-bit grey, as the chain sees it
        return _grey8(np.round(to_grey(ds)).astype(np.uint8), "dicom")
    try:
        stored = ds.pixel_array
    except BaseException as exc:  # a decoder's own error: truncated or corrupt pixel data
        if not is_read_failure(exc):
            raise
        raise InvalidImageError(f"pixel data does not decode ({type(exc).__name__})") from None
    return _monochrome(ds, stored)


def _monochrome(ds: Dataset, stored: np.ndarray) -> StoredPixels:
    if stored.ndim != 2:
        raise InvalidImageError(f"pixels of shape {stored.shape} are not one grey frame",
                                RejectReason.UNSUPPORTED_DICOM)
    bits_allocated = int(ds.get("BitsAllocated") or 16)
    bits_stored = int(ds.get("BitsStored") or bits_allocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in ds:  # a LUT, no slope: its output is what the window is written in
        from pydicom.pixels import apply_modality_lut

        stored = np.asarray(apply_modality_lut(stored, ds))
        slope, intercept = 1.0, 0.0
        bits_stored = int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) or 16
        signed = False
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise InvalidImageError(f"rescale slope {slope:g} / intercept {intercept:g} give no grey levels",
                                RejectReason.UNSUPPORTED_DICOM)
    samples, bits_stored, slope, intercept = _as_sent(stored, bits_stored, signed, slope, intercept)
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        from xraylab.dicom import first_value

        center, width = first_value(ds.WindowCenter), first_value(ds.WindowWidth)
        if not (np.isfinite(center) and np.isfinite(width) and width > 0):
            raise InvalidImageError(f"window center {center:g} / width {width:g} is no window",
                                    RejectReason.UNSUPPORTED_DICOM)
    elif bits_stored <= 8 and samples.dtype == np.uint8 and (slope, intercept) == (1.0, 0.0) \
            and "VOILUTSequence" not in ds:
        top = float(2 ** bits_stored - 1)  # shown over its nominal range, as the chain shows it
        center, width = top / 2.0, top
    else:
        center, width = _percentile_window(samples, slope, intercept)
    inverse = str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"
    inverted = str(ds.PhotometricInterpretation).strip() == "MONOCHROME1" or inverse
    return StoredPixels(samples, bits_stored, slope, intercept, center, width,
                        "MONOCHROME1" if inverted else "MONOCHROME2", "dicom")


def _as_sent(stored: np.ndarray, bits_stored: int, signed: bool, slope: float,
             intercept: float) -> tuple[np.ndarray, int, float, float]:
    """Stored samples in the type sent (``uint8``, ``uint16``, ``int16``), with bits stored, slope and intercept."""
    if stored.dtype.itemsize == 1 or stored.dtype == np.bool_:  # 8 bits allocated, or 1 (0/1 in uint8)
        if stored.dtype.kind == "i":  # signed 8-bit: widened, values unchanged
            return stored.astype(np.int16), bits_stored, slope, intercept
        return stored.astype(np.uint8, copy=False), min(bits_stored, 8), slope, intercept
    if stored.dtype.itemsize == 2 and stored.dtype.kind in "iu":
        wanted = np.int16 if signed else np.uint16
        if stored.dtype != wanted:  # pydicom gives the Pixel Representation's type; a LUT's output may differ
            low, high = int(stored.min()), int(stored.max())
            info = np.iinfo(wanted)
            if low < info.min or high > info.max:
                wanted = np.int16 if low < 0 else np.uint16
        return stored.astype(wanted, copy=False), min(bits_stored, 16), slope, intercept
    values = np.asarray(stored)
    if values.dtype.kind in "iu":  # 32 bits allocated: as they are when they fit 16 bits, else brought into them
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 65535:
            return values.astype(np.uint16), 16, slope, intercept
        if low >= -32768 and high <= 32767:
            return values.astype(np.int16), 16, slope, intercept
    values = values.astype(np.float64)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InvalidImageError("pixel values that are not finite", RejectReason.UNSUPPORTED_DICOM)
    step = (high - low) / 65535.0 or 1.0
    samples = np.round((values - low) / step).astype(np.uint16)
    return samples, 16, slope * step, intercept + slope * low


def _percentile_window(samples: np.ndarray, slope: float, intercept: float) -> tuple[float, float]:
    """(center, width) in modality units spanning the 1st to 99th percentile (nearest rank) of the samples."""
    if not samples.size:
        return 0.0, 1.0
    flat = samples.ravel()
    if flat.dtype.kind in "iu" and flat.dtype.itemsize <= 2:  # a histogram: a few ms at 7.5 MP, np.percentile ~100
        offset = int(np.iinfo(flat.dtype).min)
        counts = np.bincount((flat.astype(np.int32) - offset) if offset else flat)
        cumulative = np.cumsum(counts)
        ranks = [max(1, int(np.ceil(p / 100.0 * flat.size))) for p in _PERCENTILES]
        low, high = (float(np.searchsorted(cumulative, rank) + offset) for rank in ranks)
    else:
        low, high = (float(v) for v in np.percentile(flat, _PERCENTILES))
    a, b = sorted((low * slope + intercept, high * slope + intercept))
    return (a + b) / 2.0, max(b - a, abs(slope), 1e-6)

