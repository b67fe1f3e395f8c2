"""Text burned into a radiograph's pixels, found by OCR: Tesseract 5 (Debian's ``tesseract-ocr`` package, which
``scripts/system-deps.sh`` installs), for the research export's Clean Pixel Data step (``xraylab.deid_pixels``).

Tesseract is called as its command, ``tesseract stdin stdout --psm 11 -c load_system_dawg=0 -c load_freq_dawg=0
tsv`` (sparse text anywhere on the page, no dictionaries: names are not English words, and with them Tesseract
reads "if" and "the" into bone edges), with the image on stdin and the words, boxes and confidences as TSV on
stdout. Not through ``pytesseract``: that package wraps the same command and writes the image to a temporary file
first (a patient's picture on disk, however briefly); it would be one more dependency for what ``subprocess``
does here in a few lines, with our own timeout. Nothing is skipped when the command is missing:
``require_tesseract`` raises ``TesseractMissingError``, which says what to install, and every call goes through it.

What Tesseract reads is not the picture, where it finds words in ribs and vessels, but where the ink of
lettering would be (``ink_mask``): the values scaled to 8 bits (between their 0.1 and 99.9 percentiles, so that
a few outliers do not flatten the rest; MONOCHROME1 inverted, as it is shown), then a white top-hat (the picture
minus its grey opening by a ``STROKE_PX`` square): strokes thinner than the square that stand out from what is
around them by ``INK_LEVEL`` or more, with an edge as sharp as drawn lettering's (``EDGE_LEVEL`` grey levels a
pixel; the edges of anatomy are soft), are black ink on white. Dark lettering (black on a light label) is looked
for as well, in the negative, by a second Tesseract run beside the first. The page is scaled so that its long
side is ``OCR_LONG_SIDE`` pixels (up at most ``MAX_UPSCALE`` times; Tesseract reads letters from about 20 pixels
high, so a small image's are enlarged, and a film's device lettering, 20-40 pixels, stays about as it is).

A word counts as text (``is_text``) when it has two letters or digits or more, not all of them ones a straight
edge is also read as (``i l I 1 | f j J !``), and Tesseract is at least ``MIN_CONFIDENCE`` sure of it
(``MIN_CONFIDENCE_TWO`` for two): a single laterality marker ("R", "L") identifies no one and is kept; a name, an
id, a date or a time is text. Boxes come back in the picture's pixels, padded by ``PAD_FRACTION`` of their height.
``find_text`` gives the words that count as text (the verdict: text is there); ``text_regions`` what to clean:
those words, their neighbours read with any confidence, each widened along its line over the ink that continues
it, so that a label is removed whole when Tesseract reads only part of it.

On a 2-core machine one pass (both runs) over a 2,000-3,000 pixel film takes about 0.8-2 s.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["TesseractMissingError", "OcrError", "Word", "require_tesseract", "ink_mask", "ink_page", "find_text",
           "text_regions", "is_text",
           "TESSERACT_COMMAND", "OCR_LONG_SIDE", "MAX_UPSCALE", "MIN_CONFIDENCE"]

TESSERACT_COMMAND = "tesseract"
INSTALL_HINT = "install Debian's tesseract-ocr package (apt-get install tesseract-ocr, or bash scripts/system-deps.sh)"
OCR_LONG_SIDE = 2500  # pixels on the long side of what Tesseract reads (see the module docstring)
MAX_UPSCALE = 4.0  # a 256-pixel test image is read at 1024, not 2500: enough for its 9-pixel letters, and quick
STROKE_PX = 15  # the top-hat's square, in the picture's pixels: wider than the strokes of device lettering
INK_LEVEL = 30  # how far (of 255) a stroke must stand out from what surrounds it to be ink
EDGE_LEVEL = 20  # grey levels a pixel, the steepest within a pixel of the stroke
MIN_CONFIDENCE = 60.0  # Tesseract's word confidence (0..100) for a word of three letters or digits or more
MIN_CONFIDENCE_TWO = 90.0  # and for one of two: anatomy is read as two-letter words far more often
PAD_FRACTION = 0.25
NEIGHBOUR_STEPS = 2  # how far from a word that counts as text its neighbours are cleaned too (text_regions)
LINE_HEIGHTS = 30  # how far, in letter heights, a word's box is widened along its line each way
OCR_TIMEOUT_S = 120
# No dictionaries: names are not English words, and with them Tesseract reads "if", "ee", "the" into bone edges.
_CONFIG = ("-c", "load_system_dawg=0", "-c", "load_freq_dawg=0")
_EDGE_LIKE = re.compile(r"[il1It|fjJ!]")  # what a straight edge is read as


class TesseractMissingError(RuntimeError):
    """The ``tesseract`` command is not installed: burned-in text cannot be looked for, so nothing is exported."""


class OcrError(RuntimeError):
    """Tesseract ran and failed (or timed out) on an image."""


@dataclass(frozen=True)
class Word:
    """A word Tesseract read: its box in the picture's pixels (padded), its confidence and its text. The text may
    be a patient's name: never log it."""

    x: int
    y: int
    width: int
    height: int
    confidence: float
    text: str

    def __repr__(self) -> str:  # a test failure or a log line shows where, never what
        return f"Word(x={self.x}, y={self.y}, width={self.width}, height={self.height}, conf={self.confidence:.0f})"


def require_tesseract() -> str:
    """The path of the ``tesseract`` command; ``TesseractMissingError`` (saying what to install) if there is none."""
    path = shutil.which(TESSERACT_COMMAND)
    if path is None:
        raise TesseractMissingError(f"the '{TESSERACT_COMMAND}' command is not installed, and burned-in text must be "
                                    f"looked for in every exported image: {INSTALL_HINT}")
    return path


def _to_8bit(pixels: np.ndarray, invert: bool) -> np.ndarray:
    values = pixels.astype(np.float32, copy=False)
    low, high = np.percentile(values, (0.1, 99.9)) if values.size else (0.0, 0.0)
    if high <= low:  # a flat picture (or one with less than 0.1% of its pixels different): use the whole range
        low, high = float(values.min(initial=0)), float(values.max(initial=0))
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    grey = np.clip(scaled, 0, 255)
    return 255.0 - grey if invert else grey


def ink_mask(pixels: np.ndarray, *, dark_text: bool = False, invert: bool = False) -> np.ndarray:
    """Where lettering's ink could be in ``pixels`` (one 2-D frame, any dtype), as a boolean mask of its shape.
    ``invert``: the picture is MONOCHROME1 (shown inverted); ``dark_text``: dark lettering rather than light."""
    if pixels.ndim != 2:
        raise ValueError("one 2-D frame at a time")
    grey = _to_8bit(pixels, invert != dark_text)  # dark text: light text in the negative
    ink = ndimage.white_tophat(grey, size=(STROKE_PX, STROKE_PX)) >= INK_LEVEL
    # ... and only where an edge is sharp: lettering is drawn, its edges a pixel or two wide; the edges of vessels
    # and ribs that stand out as much are soft
    edge = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1)) / 8  # grey levels a pixel
    return ink & (ndimage.maximum_filter(edge, size=3) >= EDGE_LEVEL)


def ink_page(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """What Tesseract reads for an ink mask: black ink on white, uint8, and the factor its size is of the mask's."""
    rows, columns = ink.shape
    scale = min(MAX_UPSCALE, OCR_LONG_SIDE / max(rows, columns))
    page = Image.fromarray(np.where(ink, 0, 255).astype(np.uint8))
    if scale != 1:
        size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
        # bilinear: enlarged letters keep smooth edges (Tesseract binarises again); BOX keeps thin strokes
        # when shrinking
        page = page.resize(size, Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.BOX)
    return np.asarray(page), scale


def is_text(word: Word) -> bool:
    """Whether a word Tesseract read counts as text (see the module docstring)."""
    letters = re.sub(r"[^0-9A-Za-z]", "", word.text)
    if len(letters) < 2 or not _EDGE_LIKE.sub("", letters):
        return False
    return word.confidence >= (MIN_CONFIDENCE if len(letters) > 2 else MIN_CONFIDENCE_TWO)


def _read(page: np.ndarray, scale: float, rows: int, columns: int) -> list[Word]:
    """Every word Tesseract reads on ``page``, its box mapped back to a ``rows`` x ``columns`` picture."""
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, "PNG", compress_level=1)
    # One OpenMP thread: more only slow Tesseract down on a page like this, and two runs go side by side.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        done = subprocess.run([require_tesseract(), "stdin", "stdout", "--psm", "11", *_CONFIG, "tsv"],
                              input=buffer.getvalue(), capture_output=True, env=env, timeout=OCR_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise OcrError(f"tesseract took more than {OCR_TIMEOUT_S} s on one image") from None
    if done.returncode != 0:
        raise OcrError(f"tesseract failed (exit {done.returncode}): "
                       f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    words = []
    for row in csv.DictReader(io.StringIO(done.stdout.decode("utf-8", errors="replace")), delimiter="\t",
                              quoting=csv.QUOTE_NONE):
        text = (row.get("text") or "").strip()
        if not text or row.get("level") != "5":  # level 5: a word
            continue
        left, top, width, height = (int(row[k]) / scale for k in ("left", "top", "width", "height"))
        pad = PAD_FRACTION * height + 1
        x0, y0 = max(0, int(left - pad)), max(0, int(top - pad))
        x1, y1 = min(columns, math.ceil(left + width + pad)), min(rows, math.ceil(top + height + pad))
        if x1 > x0 and y1 > y0:
            words.append(Word(x0, y0, x1 - x0, y1 - y0, float(row["conf"]), text))
    return words


def _find(pixels: np.ndarray, invert: bool) -> list[tuple[list[Word], np.ndarray]]:
    """Every word Tesseract reads, light lettering's then dark lettering's, each list with its ink mask."""
    require_tesseract()
    rows, columns = pixels.shape
    masks = [ink_mask(pixels, dark_text=dark, invert=invert) for dark in (False, True)]
    with ThreadPoolExecutor(len(masks)) as pool:  # the two Tesseract runs side by side
        found = list(pool.map(lambda ink: _read(*ink_page(ink), rows, columns), masks))
    return list(zip(found, masks, strict=True))


def find_text(pixels: np.ndarray, *, invert: bool = False) -> list[Word]:
    """The words in ``pixels`` (one 2-D frame) that count as text (``is_text``), light and dark lettering both,
    with their boxes in ``pixels``' own coordinates. ``invert``: the picture is MONOCHROME1."""
    return [word for words, _ in _find(pixels, invert) for word in words if is_text(word)]


def text_regions(pixels: np.ndarray, *, invert: bool = False) -> list[Word]:
    """Where to clean: ``find_text``'s words, and the words next to them that Tesseract read with any confidence
    (``_next_to``: the rest of their line, the lines above and below; two steps at most, so that a label is
    covered and the texture of a lung is not), each box widened along its line over the ink that continues it
    (``_along_line``: the letters of the line Tesseract did not read as words)."""
    regions = []
    for words, ink in _find(pixels, invert):
        text = [word for word in words if is_text(word)]
        if not text:
            continue
        rest = [word for word in words if not is_text(word) and re.search(r"[0-9A-Za-z]", word.text)]
        added = text
        for _ in range(NEIGHBOUR_STEPS):
            added = [word for word in rest if any(_next_to(word, found) for found in added)]
            rest = [word for word in rest if word not in added]
            text += added
        regions += [_along_line(word, ink) for word in text]
    return regions


def _next_to(word: Word, found: Word) -> bool:
    """Whether ``word`` (of a height within a factor 2 of ``found``'s) is on ``found``'s line, at most a letter
    height away, or on the line just above or below it, overlapping it across."""
    if not 0.5 <= word.height / found.height <= 2:
        return False
    apart_x = max(word.x - (found.x + found.width), found.x - (word.x + word.width))  # < 0: they overlap
    overlap_y = min(word.y + word.height, found.y + found.height) - max(word.y, found.y)
    if overlap_y >= min(word.height, found.height) / 2:  # the same line
        return apart_x <= found.height / (1 + 2 * PAD_FRACTION)
    return apart_x < 0 and overlap_y > -found.height / 2  # the next line (the boxes are padded: they touch)


def _along_line(word: Word, ink: np.ndarray) -> Word:
    """``word`` widened left and right over the ink in its rows, across gaps up to a letter's height (a space
    between words, not the space between a label and the anatomy), by at most ``LINE_HEIGHTS`` letter heights
    each way."""
    columns = ink[word.y:word.y + word.height].any(axis=0)
    letter = max(2, round(word.height / (1 + 2 * PAD_FRACTION)))  # the box is padded
    left, right = max(0, word.x - LINE_HEIGHTS * letter), word.x + word.width + LINE_HEIGHTS * letter
    x0, x1 = word.x, word.x + word.width
    while (more := np.flatnonzero(columns[x1:min(right, x1 + letter)])).size:
        x1 += int(more[-1]) + 1
    while (more := np.flatnonzero(columns[max(left, x0 - letter):x0])).size:
        x0 = max(left, x0 - letter) + int(more[0])
    return replace(word, x=x0, width=x1 - x0)
