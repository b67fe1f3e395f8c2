"""Burned-in text found in the pixels by OCR (Tesseract), on a real chest film (Kermany et al., CC BY 4.0, read
where it is in ../shared/data/chest-xray and never copied): a patient's name and id burned into the film of a
device whose header says nothing of it are found and removed, the lungs untouched; a film whose text cannot be
removed is refused; without Tesseract nothing is de-identified and the export does not start.

Tesseract is a requirement of the export, like the DICOM decoders: these tests fail, not skip, where it is not
installed (``bash scripts/system-deps.sh`` installs Debian's tesseract-ocr). Those that need the real films skip,
saying why, where ../shared is absent (a user's clone)."""

from __future__ import annotations

import time
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ingest.dicom_files import ModalityStudy, build_dataset
from tests.realdata.conftest import FULL_RESOLUTION
from xraylab import deid_pixels, ocr
from xraylab.deid import DeidPolicy, DeidRefused, deidentify

KEY = b"research-export-key-ocr"
# A film of 2,148 x 1,496 pixels with a lead "R" marker at the left (one letter: not text, kept)
FILM = FULL_RESOLUTION / "NORMAL" / "IM-0170-0001.jpeg"
needs_films = pytest.mark.skipif(not FILM.is_file(), reason=f"the real chest X-rays are not at {FULL_RESOLUTION} "
                                                           "(a clone without ../shared: see README 'A model "
                                                           "trained on real X-rays')")
LINES = ["MORALES, JUANITA", "ID 48213977  1987-06-02"]
SECRETS = ("MORALES", "JUANITA", "48213977", "1987-06-02")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Debian's fonts-dejavu-core; else Pillow's own


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(str(FONT), size) if FONT.is_file() else ImageFont.load_default(size=size)


@cache
def film() -> np.ndarray:
    with Image.open(FILM) as image:
        return np.asarray(image.convert("L"))


def burned(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """``pixels`` with the patient's name, id and birth date burned in at the top left, in white at 2% of the
    height (30 pixels on this film: a device's annotation size), the mask of the text's pixels, and the box
    around the text."""
    rows, columns = pixels.shape
    size = round(rows * 0.02)
    picture = Image.fromarray(pixels)
    draw = ImageDraw.Draw(picture)
    x, y = columns // 40, rows // 40
    for i, line in enumerate(LINES):
        draw.text((x, y + i * round(size * 1.3)), line, fill=255, font=font(size))
    out = np.asarray(picture)
    mask = out != pixels
    ys, xs = np.nonzero(mask)
    return out, mask, (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))


def modality_dataset(pixels: np.ndarray):  # -> pydicom.FileDataset
    """A DX dataset of a device no text rule knows, 12 bits stored, that says nothing of burned-in text."""
    study = ModalityStudy("48213977", "Juanita Morales", date(2024, 3, 15), "st-mary", manufacturer="ACME Imaging")
    ds = build_dataset(pixels, study, bits=16)
    del ds.BurnedInAnnotation
    return ds


def stored(ds) -> np.ndarray:  # noqa: ANN001 - a pydicom Dataset
    from pydicom.pixels import get_decoder

    return get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds)[0]


def read_words(pixels: np.ndarray) -> list[str]:
    """Every word Tesseract reads, whatever its confidence, light and dark lettering."""
    return [word.text for words, _ in ocr._find(pixels, invert=False) for word in words]


def test_tesseract_is_installed() -> None:
    assert ocr.require_tesseract(), "install Debian's tesseract-ocr: bash scripts/system-deps.sh"


@needs_films
def test_a_name_burned_into_a_real_film_is_found_and_removed() -> None:
    text_film, mask, box = burned(film())
    ds = modality_dataset(text_film)
    before = stored(ds)
    assert [w for w in read_words(before) if any(s in w for s in SECRETS)], "the test's text is not readable"

    started = time.perf_counter()
    out = deidentify(ds, DeidPolicy(key=KEY), hospital="st-mary")
    seconds = time.perf_counter() - started
    after = stored(out)
    assert out.BurnedInAnnotation == "NO" and "Clean Pixel Data" in out.DeidentificationMethod

    # OCR no longer reads the name, the id or the date, not even with a low confidence, not even in part
    left = [w for w in read_words(after) if any(s[:4] in w or s[-4:] in w for s in SECRETS)]
    assert not left, left
    # every pixel of the text changed (filled with the background it was written on) ...
    assert (after[mask] != before[mask]).mean() > 0.99
    rows, columns = before.shape
    # ... and the picture did not, but around the text: the lungs, the heart, the marker, are as they were
    changed = after != before
    changed[:box[0].stop + rows // 20, :box[1].stop + columns // 10] = False  # the text, a margin around it
    assert not changed.any(), f"{changed.sum()} pixels changed away from the text"
    lungs = (slice(rows // 5, rows * 4 // 5), slice(columns // 8, columns * 7 // 8))
    assert np.array_equal(after[lungs], before[lungs])
    assert seconds < 60  # two OCR passes of a 2,148 x 1,496 film: about 2-3 s on 2 cores


@needs_films
def test_a_film_whose_text_cannot_be_removed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cleaning that leaves the text (here, a fill that changes nothing): the second OCR pass still reads it,
    and the film is refused, with a reason and a message that says where, never what."""
    monkeypatch.setattr(deid_pixels, "fill_regions", lambda pixels, regions: pixels.copy())
    ds = modality_dataset(burned(film())[0])
    with pytest.raises(DeidRefused, match="still read") as refused:
        deidentify(ds, DeidPolicy(key=KEY), hospital="st-mary")
    assert refused.value.reason == "burned_in_text"
    assert not [s for s in SECRETS if s in str(refused.value)]


def test_without_tesseract_nothing_is_de_identified(monkeypatch: pytest.MonkeyPatch) -> None:
    from xraylab.research_export import export_research

    monkeypatch.setattr(ocr, "TESSERACT_COMMAND", "tesseract-not-installed")
    ds = modality_dataset(np.full((64, 64), 100, np.uint8))
    with pytest.raises(ocr.TesseractMissingError, match="tesseract-ocr"):
        deidentify(ds, DeidPolicy(key=KEY), hospital="st-mary")
    with pytest.raises(ocr.TesseractMissingError, match="apt-get install tesseract-ocr"):
        export_research(None, None)  # type: ignore[arg-type]  # refused before it reads settings or a study


def test_text_over_too_much_of_the_picture_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """What OCR reads as text over more than MAX_TEXT_FRACTION of a picture is the picture's own texture (a
    strongly edge-enhanced film): filling it would ruin the image, so it is refused rather than exported."""
    pixels = np.tile(np.linspace(40, 200, 128).astype(np.uint8), (128, 1))
    monkeypatch.setattr(ocr, "text_regions", lambda frame, invert=False: [ocr.Word(0, 0, 128, 40, 70.0, "lung")])
    with pytest.raises(DeidRefused, match="over 31%") as refused:
        deidentify(modality_dataset(pixels), DeidPolicy(key=KEY), hospital="st-mary")
    assert refused.value.reason == "burned_in_text" and deid_pixels.MAX_TEXT_FRACTION < 0.31
