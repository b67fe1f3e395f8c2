"""Burned-in text: found in the pixels by OCR (``xraylab.ocr``, Tesseract) on every image, and where rules keyed by
the dataset say it is (as the RSNA/CTP DicomPixelAnonymizer keys its signatures); made illegible, then looked for
again: an image in which text is still found is refused (``DeidRefused``), never exported.

A ``TextRule`` names the datasets it applies to (Manufacturer / model containing a string, Modality, Rows,
Columns: every condition given must hold) and the regions to clean, in pixels (``Region``) or as fractions of
the image (``FractionalRegion``, for a band whatever the size). The regions of every matching rule are
Gaussian-blurred. The default rule matches the project's simulated modality (Manufacturer
``SIMULATED_MANUFACTURER``) and blurs the top 12% of the rows, full width, where it burns the patient's name and
id (``ingest.dicom_files``). Rules are a device's known layout; they are not trusted to be complete, and neither
is the header's Burned In Annotation: whatever else OCR reads as text (a name, an id, a date, a time) is covered
by a flat patch, the median of the box it was read in (``xraylab.ocr.text_regions``: the word's box, the words
next to it, widened along its line). An image whose header says it has burned-in annotation where neither a rule
nor OCR finds any is refused too: the text is there, and unreadable to OCR is not unreadable.

``clean_pixel_data`` decodes the pixels (compressed or big endian ones too, through pydicom and the pylibjpeg
plugins), cleans them and writes them back uncompressed: the caller sets Explicit VR Little Endian; Bits
Allocated, Bits Stored and Pixel Representation stay those of the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.pixels import get_decoder
from scipy import ndimage

from xraylab import ocr

__all__ = ["Region", "FractionalRegion", "TextRule", "DEFAULT_TEXT_RULES", "TEXT_BAND", "SIMULATED_MANUFACTURER",
           "DeidRefused", "blur_regions", "fill_regions", "text_regions", "remove_text", "clean_pixel_data"]

TEXT_BAND = 0.12  # the share of rows, from the top, where the uploader burns the patient's name and id
SIMULATED_MANUFACTURER = "xraylab simulated modality"  # the Manufacturer the project's uploader writes
# The most of a picture OCR's text may cover: more is the picture's own texture read as words (a strongly
# edge-enhanced film), and filling it would leave no image worth exporting: refused instead.
MAX_TEXT_FRACTION = 0.05


class DeidRefused(ValueError):
    """A dataset that is not exported, and ``reason``, why in a word (``burned_in_text``, ``no_patient_id``, ...):
    the message may say where, never what (it names no identifier)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Region:
    """A rectangle in pixels: ``x``/``width`` along the columns, ``y``/``height`` along the rows."""

    x: int
    y: int
    width: int
    height: int

    def clip(self, rows: int, columns: int) -> Region | None:
        """This region inside a ``rows`` x ``columns`` image, or None if none of it lies inside."""
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(columns, self.x + self.width), min(rows, self.y + self.height)
        return Region(x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


@dataclass(frozen=True)
class FractionalRegion:
    """A rectangle as fractions (0..1) of the image's width (``x``, ``width``) and height (``y``, ``height``)."""

    x: float
    y: float
    width: float
    height: float

    def to_pixels(self, rows: int, columns: int) -> Region:
        """The pixels it covers, rounded outwards so that a band never loses its last partial row."""
        x0, y0 = math.floor(self.x * columns), math.floor(self.y * rows)
        x1, y1 = math.ceil((self.x + self.width) * columns), math.ceil((self.y + self.height) * rows)
        return Region(x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True)
class TextRule:
    """Regions holding burned-in text on the datasets that match every condition given (None: any)."""

    regions: tuple[Region | FractionalRegion, ...]
    manufacturer: str | None = None  # case-insensitive substring of Manufacturer
    model: str | None = None  # case-insensitive substring of ManufacturerModelName
    modality: str | None = None
    rows: int | None = None
    columns: int | None = None

    def matches(self, ds: Dataset) -> bool:
        def contains(keyword: str, wanted: str | None) -> bool:
            return wanted is None or wanted.casefold() in str(ds.get(keyword, "") or "").casefold()

        return (contains("Manufacturer", self.manufacturer) and contains("ManufacturerModelName", self.model)
                and (self.modality is None or ds.get("Modality") == self.modality)
                and (self.rows is None or ds.get("Rows") == self.rows)
                and (self.columns is None or ds.get("Columns") == self.columns))

    def pixel_regions(self, rows: int, columns: int) -> list[Region]:
        regions = [r.to_pixels(rows, columns) if isinstance(r, FractionalRegion) else r for r in self.regions]
        return [clipped for r in regions if (clipped := r.clip(rows, columns))]


DEFAULT_TEXT_RULES: tuple[TextRule, ...] = (
    TextRule(regions=(FractionalRegion(0.0, 0.0, 1.0, TEXT_BAND),), manufacturer=SIMULATED_MANUFACTURER),)


def text_regions(ds: Dataset, rules: Sequence[TextRule]) -> list[Region]:
    """The regions, in pixels, of every rule that matches ``ds`` (empty when none does)."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    return [region for rule in rules if rule.matches(ds) for region in rule.pixel_regions(rows, columns)]


def blur_regions(pixels: np.ndarray, regions: Sequence[Region]) -> np.ndarray:
    """A copy of ``pixels`` (rows x columns, or frames x rows x columns) with each region Gaussian-blurred.

    The blur's sigma is a quarter of the region's smaller side (at least 2 pixels): text that fits in a band
    is about as tall as the band, so its strokes and letter shapes spread over several glyphs and are gone.
    The blur reads only pixels inside the region and writes only there; every other pixel is unchanged.
    Integer pixels are rounded back to their dtype (the blur cannot leave their range)."""
    out = pixels.copy()
    frames = out[np.newaxis] if out.ndim == 2 else out
    rows, columns = frames.shape[1:3]
    for region in regions:
        clipped = region.clip(rows, columns)
        if clipped is None:
            continue
        ys, xs = slice(clipped.y, clipped.y + clipped.height), slice(clipped.x, clipped.x + clipped.width)
        sigma = max(2.0, min(clipped.width, clipped.height) / 4)
        for frame in frames:
            blurred = ndimage.gaussian_filter(frame[ys, xs].astype(np.float64), sigma=sigma, mode="reflect")
            if np.issubdtype(frame.dtype, np.integer):
                info = np.iinfo(frame.dtype)
                blurred = np.clip(np.rint(blurred), info.min, info.max)
            frame[ys, xs] = blurred.astype(frame.dtype)
    return out


def _covered(regions: Sequence[Region], shape: tuple[int, ...]) -> float:
    """The share of a ``shape`` (rows, columns) picture that ``regions`` cover."""
    mask = np.zeros(shape[-2:], bool)
    for region in regions:
        mask[region.y:region.y + region.height, region.x:region.x + region.width] = True
    return float(mask.mean())


def fill_regions(pixels: np.ndarray, regions: Sequence[Region]) -> np.ndarray:
    """A copy of ``pixels`` (rows x columns) with each region one flat value, the median of its own pixels: where
    text is a minority of the box, the background it was written on. Nothing of the letters' shapes is left."""
    out = pixels.copy()
    rows, columns = out.shape
    for region in regions:
        clipped = region.clip(rows, columns)
        if clipped is not None:
            box = out[clipped.y:clipped.y + clipped.height, clipped.x:clipped.x + clipped.width]
            value = np.median(box)
            box[...] = value if np.issubdtype(out.dtype, np.floating) else np.rint(value)
    return out


def remove_text(frame: np.ndarray, *, invert: bool = False) -> tuple[np.ndarray, list[Region]]:
    """``frame`` (rows x columns) with the text OCR reads in it filled (``fill_regions``), and the regions filled.
    ``invert``: MONOCHROME1. Raises ``xraylab.ocr.TesseractMissingError`` without Tesseract."""
    regions = [Region(word.x, word.y, word.width, word.height) for word in ocr.text_regions(frame, invert=invert)]
    return (fill_regions(frame, regions) if regions else frame), regions


def clean_pixel_data(src: Dataset, out: Dataset, rules: Sequence[TextRule]) -> list[Region]:
    """``src``'s pixels into ``out``'s Pixel Data, uncompressed and little endian, with the text regions of the
    matching rules blurred and the text OCR reads filled; the regions cleaned (rules' and OCR's, every frame's).

    Raises ``DeidRefused`` (reason ``burned_in_text``) when OCR still reads text in the cleaned pixels, or when the
    header says there is burned-in annotation and neither a rule nor OCR finds any; ``DeidRefused`` (reason
    ``unsupported_pixels``) for colour pixels (monochrome only); ``xraylab.ocr.TesseractMissingError`` without
    Tesseract (never a silent skip)."""
    from xraylab.dicom import MONOCHROME

    ocr.require_tesseract()
    regions = text_regions(src, rules)
    photometric = str(src.get("PhotometricInterpretation", ""))
    if photometric not in MONOCHROME or int(src.get("SamplesPerPixel", 1)) != 1:
        raise DeidRefused("unsupported_pixels", f"cannot clean burned-in text in {photometric or 'unknown'} pixel "
                                                "data: monochrome only")
    tsyntax = getattr(src, "file_meta", Dataset()).get("TransferSyntaxUID")
    if tsyntax is None:
        raise ValueError("the dataset has no file meta Transfer Syntax UID: its pixel data cannot be decoded")
    decoded, _ = get_decoder(tsyntax).as_array(src)  # not ds.pixel_array: it would cache the array on the input
    pixels = blur_regions(decoded, regions) if regions else decoded.copy()
    frames = pixels[np.newaxis] if pixels.ndim == 2 else pixels
    invert = photometric == "MONOCHROME1"
    found: list[Region] = []
    for index, frame in enumerate(frames):
        frames[index], filled = remove_text(frame, invert=invert)
        covered = _covered(filled, frame.shape)
        if covered > MAX_TEXT_FRACTION:
            raise DeidRefused("burned_in_text", f"OCR reads text over {covered:.0%} of the picture (more than "
                                                f"{MAX_TEXT_FRACTION:.0%}: no label is that large, and filling it "
                                                "would ruin the image): not exported")
        found += filled
    left = [word for frame in frames for word in ocr.find_text(frame, invert=invert)]
    if left:
        where = ", ".join(f"({w.x}, {w.y}) {w.width}x{w.height}" for w in left[:3])
        raise DeidRefused("burned_in_text", f"text is still read in the pixels once cleaned, {len(left)} word(s) at "
                                            f"{where}: not exported")
    if not regions and not found and str(src.get("BurnedInAnnotation", "")).upper() == "YES":
        raise DeidRefused("burned_in_text", "the image says it has burned-in annotation, and neither a text rule nor "
                                            "OCR finds where: not exported")
    pixels = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)  # a big endian input's array: swap the bytes
    if "NumberOfFrames" in src and pixels.ndim == 2:  # keep a multi-frame IOD's Number of Frames (1)
        pixels = pixels[np.newaxis]
    for keyword in ("PixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in out:
            del out[keyword]
    out.set_pixel_data(pixels, photometric, int(src.BitsStored), generate_instance_uid=False)
    return regions + found
