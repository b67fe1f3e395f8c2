"""Burned-in text: where it is (rules keyed by the dataset, as the RSNA/CTP DicomPixelAnonymizer keys its
signatures) and how it is made illegible (a Gaussian blur inside those regions, nothing outside them).

A ``TextRule`` names the datasets it applies to (Manufacturer / model containing a string, Modality, Rows,
Columns: every condition given must hold) and the regions to clean, in pixels (``Region``) or as fractions of
the image (``FractionalRegion``, for a band whatever the size). The regions of every matching rule are cleaned.
The default rule matches the project's simulated modality (Manufacturer ``SIMULATED_MANUFACTURER``) and cleans the
top 12% of the rows, full width, where it burns the patient's name and id (``ingest.dicom_files``). A real
device's images need rules of their own: one that says it has burned-in text (Burned In Annotation YES) and
that no rule covers is refused by ``xraylab.deid``, never exported with its text.

``clean_pixel_data`` decodes the pixels (compressed or big endian ones too, through pydicom and the pylibjpeg
plugins), blurs the regions and writes them back uncompressed: the caller sets Explicit VR Little Endian; Bits
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

__all__ = ["Region", "FractionalRegion", "TextRule", "DEFAULT_TEXT_RULES", "TEXT_BAND", "SIMULATED_MANUFACTURER",
           "blur_regions", "text_regions", "clean_pixel_data"]

TEXT_BAND = 0.12  # the share of rows, from the top, where the uploader burns the patient's name and id
SIMULATED_MANUFACTURER = "xraylab simulated modality"  # the Manufacturer the project's uploader writes


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


def clean_pixel_data(src: Dataset, out: Dataset, rules: Sequence[TextRule]) -> bool:
    """``src``'s pixels into ``out``'s Pixel Data, uncompressed and little endian, with the text regions of the
    matching rules blurred; True when a rule matched (and so text was cleaned). Monochrome images only: a colour
    one raises ``ValueError``."""
    from xraylab.dicom import MONOCHROME

    regions = text_regions(src, rules)
    photometric = str(src.get("PhotometricInterpretation", ""))
    if photometric not in MONOCHROME or int(src.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"cannot clean burned-in text in {photometric or 'unknown'} pixel data: monochrome only")
    tsyntax = getattr(src, "file_meta", Dataset()).get("TransferSyntaxUID")
    if tsyntax is None:
        raise ValueError("the dataset has no file meta Transfer Syntax UID: its pixel data cannot be decoded")
    decoded, _ = get_decoder(tsyntax).as_array(src)  # not ds.pixel_array: it would cache the array on the input
    pixels = blur_regions(decoded, regions) if regions else decoded
    pixels = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)  # a big endian input's array: swap the bytes
    if "NumberOfFrames" in src and pixels.ndim == 2:  # keep a multi-frame IOD's Number of Frames (1)
        pixels = pixels[np.newaxis]
    for keyword in ("PixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in out:
            del out[keyword]
    out.set_pixel_data(pixels, photometric, int(src.BitsStored), generate_instance_uid=False)
    return bool(regions)
