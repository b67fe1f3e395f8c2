"""The viewer's two routes (``ui/study_media.py``): ``pixels`` (the stored samples, for window/level on the stored
bit depth) and ``heatmap-layer`` (the Grad-CAM map as an RGBA layer). Decoded bodies are compared with what pydicom
and Pillow read from the same bytes."""

from __future__ import annotations

import gzip
import io
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from ingest.dicom_files import ModalityStudy, build_dataset
from tests.accounts import reading_as
from tests.unit.ui.test_study_media import StoredImages, add_study, jpeg
from ui.study_media import (
    HeatmapMaker,
    ImageGoneError,
    accepts_gzip,
    heatmap_layer_url,
    media_router,
    pixels_response,
    pixels_url,
)
from xraylab.db.review import audit_trail, store_heatmap
from xraylab.db.scope import ReadScope
from xraylab.db.session import Database
from xraylab.gradcam import heat_to_png
from xraylab.heatmaps import HEAT_COLOURS

STUDY = ModalityStudy("P1", "A Name", date(2026, 1, 2), "north")
ROWS, COLUMNS = 70, 90  # not square: a swap of rows and columns shows
FULL_RESOLUTION = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "chest-xray" / "full-resolution"


def dicom(stored: np.ndarray, *, bits_stored: int, photometric: str = "MONOCHROME2", syntax: str = "",
          **tags: Any) -> bytes:
    """A DX file of ``stored`` (uint8, uint16 or int16) with ``bits_stored`` and ``tags``; compressed in ``syntax``."""
    ds = build_dataset(np.zeros((8, 8), np.uint8), STUDY)
    ds.set_pixel_data(stored, photometric, bits_stored, generate_instance_uid=False)
    for name, value in tags.items():
        setattr(ds, name, value)
    if syntax:
        ds.compress(syntax, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def film(rng: np.random.Generator, top: int, low: int = 0, dtype: Any = np.uint16) -> np.ndarray:
    return rng.integers(low, top + 1, (ROWS, COLUMNS)).astype(dtype)


class Images(StoredImages):
    """The study's object from memory, its state as set, and how often it was fetched."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.fetched = 0
        self.now = "ok"

    def original(self, study: dict[str, Any]) -> bytes:
        self.fetched += 1
        if self.now == "gone":
            raise ImageGoneError("gone")
        return self.data

    def state(self, study: dict[str, Any]) -> str:
        return self.now


def client(db: Database, images: Images, heatmaps: HeatmapMaker | None = None,
           scope: ReadScope | None = None) -> TestClient:
    app = FastAPI()
    app.include_router(media_router(db, images, heatmaps or HeatmapMaker(db, Path("no-registry"), images)))
    return TestClient(reading_as(app, scope) if scope else reading_as(app))


def samples(response: Any) -> np.ndarray:
    """The body as the viewer reads it, from the headers alone."""
    h = response.headers
    dtype = "<u1" if h["x-bits-allocated"] == "8" else ("<i2" if h["x-pixel-representation"] == "1" else "<u2")
    return np.frombuffer(response.content, dtype).reshape(int(h["x-rows"]), int(h["x-columns"]))


def test_a_12_bit_dicom_comes_as_its_stored_values_with_its_window(db: Database) -> None:
    stored = film(np.random.default_rng(1), 4095)
    data = dicom(stored, bits_stored=12, RescaleSlope=1, RescaleIntercept=0, WindowCenter=[1800, 900],
                 WindowWidth=[3000, 400])
    study_id = add_study(db)
    response = client(db, Images(data)).get(pixels_url(study_id), headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert "no-store" in response.headers["cache-control"] and "content-encoding" not in response.headers
    got = samples(response)
    assert got.dtype == np.uint16 and np.array_equal(got, pydicom.dcmread(io.BytesIO(data)).pixel_array)
    assert np.array_equal(got, stored)
    h = response.headers
    assert (h["x-rows"], h["x-columns"], h["x-bits-allocated"], h["x-bits-stored"]) == ("70", "90", "16", "12")
    assert (h["x-pixel-representation"], h["x-rescale-slope"], h["x-rescale-intercept"]) == ("0", "1", "0")
    assert (h["x-window-center"], h["x-window-width"]) == ("1800", "3000")  # the first window
    assert (h["x-photometric"], h["x-source-format"]) == ("MONOCHROME2", "dicom")
    assert (h["x-min-value"], h["x-max-value"]) == (str(stored.min()), str(stored.max()))
    with db.session() as session:
        assert [e["action"] for e in audit_trail(session, study_id=study_id)] == ["view_image"]


def test_signed_samples_come_as_int16_and_the_window_from_their_percentiles_in_modality_units(db: Database) -> None:
    stored = film(np.random.default_rng(2), 2047, low=-2048, dtype=np.int16)
    data = dicom(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000)  # no window in the file
    response = client(db, Images(data)).get(pixels_url(add_study(db)))
    got = samples(response)
    assert got.dtype == np.int16 and np.array_equal(got, pydicom.dcmread(io.BytesIO(data)).pixel_array)
    assert np.array_equal(got, stored) and got.min() < 0
    h = response.headers
    assert (h["x-pixel-representation"], h["x-rescale-slope"], h["x-rescale-intercept"]) == ("1", "2", "-1000")
    low, high = np.percentile(stored.astype(float) * 2 - 1000, [1, 99], method="inverted_cdf")
    assert float(h["x-window-center"]) == pytest.approx((low + high) / 2)
    assert float(h["x-window-width"]) == pytest.approx(high - low)
    assert int(h["x-min-value"]) == stored.min()


def test_monochrome1_is_said_not_applied(db: Database) -> None:
    stored = film(np.random.default_rng(3), 1023)
    study_id = add_study(db)
    for photometric, tags in (("MONOCHROME1", {}), ("MONOCHROME2", {"PresentationLUTShape": "INVERSE"})):
        response = client(db, Images(dicom(stored, bits_stored=10, photometric=photometric, **tags))).get(
            pixels_url(study_id))
        assert response.headers["x-photometric"] == "MONOCHROME1"  # the viewer inverts it
        assert np.array_equal(samples(response), stored)  # the samples are not inverted here


def test_a_compressed_dicom_decodes_to_its_exact_stored_values(db: Database) -> None:
    from pydicom.uid import JPEG2000Lossless, RLELossless

    stored = film(np.random.default_rng(4), 4095)
    for syntax in (JPEG2000Lossless, RLELossless):
        data = dicom(stored, bits_stored=12, syntax=syntax)
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
        assert np.array_equal(samples(client(db, Images(data)).get(pixels_url(add_study(db)))), stored)


def test_8_bit_pictures_come_as_uint8_grey_and_16_bit_pngs_as_uint16(db: Database) -> None:
    rng = np.random.default_rng(5)
    grey = film(rng, 255, dtype=np.uint8)
    colour = Image.fromarray(rng.integers(0, 256, (ROWS, COLUMNS, 3), dtype=np.uint8), "RGB")
    deep = film(rng, 65535)
    study_id = add_study(db)
    cases = [  # (bytes, format, what Pillow reads of them as grey, bits stored)
        (encoded(Image.fromarray(grey), "PNG"), "png", grey, 8),
        (encoded(colour, "PNG"), "png", np.asarray(colour.convert("L")), 8),
        (encoded(colour, "JPEG"), "jpeg", np.asarray(Image.open(io.BytesIO(encoded(colour, "JPEG"))).convert("L")), 8),
        (encoded(Image.fromarray(grey), "JPEG"), "jpeg", np.asarray(Image.open(io.BytesIO(
            encoded(Image.fromarray(grey), "JPEG")))), 8),
        (dicom(grey, bits_stored=8), "dicom", grey, 8),
        (encoded(Image.fromarray(deep), "PNG"), "png", deep, 16),
    ]
    for data, fmt, want, bits in cases:
        response = client(db, Images(data)).get(pixels_url(study_id))
        assert response.status_code == 200, fmt
        h = response.headers
        assert (h["x-source-format"], h["x-bits-allocated"], h["x-bits-stored"]) == (fmt, str(bits), str(bits))
        assert h["x-photometric"] == "MONOCHROME2" and h["x-pixel-representation"] == "0"
        got = samples(response)
        assert got.dtype == (np.uint8 if bits == 8 else np.uint16) and np.array_equal(got, want), fmt
        if bits == 8:
            assert (h["x-window-center"], h["x-window-width"]) == ("127.5", "255")


def test_the_body_is_gzipped_when_the_browser_accepts_it(db: Database) -> None:
    stored = film(np.random.default_rng(6), 4095)
    data = dicom(stored, bits_stored=12)
    response = client(db, Images(data)).get(pixels_url(add_study(db)), headers={"Accept-Encoding": "gzip, br"})
    assert response.headers["content-encoding"] == "gzip" and response.headers["vary"] == "Accept-Encoding"
    assert np.array_equal(samples(response), stored)  # the client undid the gzip: it round-trips
    raw = pixels_response(data, Images(data).limits, gzipped=True).body
    assert len(raw) < stored.nbytes and gzip.decompress(raw) == stored.astype("<u2").tobytes()
    assert pixels_response(data, Images(data).limits, gzipped=False).body == stored.astype("<u2").tobytes()
    assert accepts_gzip("deflate, gzip;q=0.5") and accepts_gzip("*")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("identity") and not accepts_gzip("")


def test_a_study_out_of_scope_is_not_found_and_each_view_is_audited(db: Database) -> None:
    study_id = add_study(db)  # a study of "north"
    with db.session() as session:
        store_heatmap(session, study_id, "m1", heat_to_png(np.ones((8, 8), np.float32)))
    images = Images(dicom(film(np.random.default_rng(7), 4095), bits_stored=12))
    south = client(db, images, scope=ReadScope.of(["south"]))
    north = client(db, images, scope=ReadScope.of(["north"]))
    for url in (pixels_url, heatmap_layer_url):
        outside = south.get(url(study_id))
        assert outside.status_code == 404 and outside.json()["error"] == "no_such_study"
        assert north.get(url(study_id)).status_code == 200
    with db.session() as session:
        assert [e["action"] for e in audit_trail(session, study_id=study_id)] == ["view_image", "view_heatmap"]


def test_too_many_pixels_is_refused_before_decoding(db: Database) -> None:
    study_id = add_study(db)
    for data in (dicom(film(np.random.default_rng(8), 4095), bits_stored=12),
                 encoded(Image.fromarray(film(np.random.default_rng(8), 255, dtype=np.uint8)), "PNG")):
        images = Images(data)
        images.limits = replace(images.limits, max_pixels=ROWS * COLUMNS - 1)
        response = client(db, images).get(pixels_url(study_id))
        assert response.status_code == 422 and response.json()["error"] == "too_large"
    images.now = "gone"
    assert client(db, images).get(pixels_url(study_id)).status_code == 410


class FakeMaps(HeatmapMaker):
    """Grad-CAM without a model: a fixed map (hot in its top left quarter), through the real cache."""

    MAP = np.zeros((24, 32), np.float32)
    MAP[:12, :16] = np.linspace(0.1, 1.0, 16, dtype=np.float32)[np.newaxis, :]

    def __init__(self, db: Database, images: Any) -> None:
        super().__init__(db, Path("no-registry"), images)
        self.computed = 0

    def model(self, version: str) -> tuple[Any, Any]:
        return None, None

    def heat(self, study_id: int, version: str, original: bytes, *, study_uid: str = "") -> np.ndarray:
        import xraylab.gradcam

        def explain(model: Any, card: Any, image_bytes: bytes, limits: Any = None) -> np.ndarray:
            self.computed += 1
            return self.MAP

        real, xraylab.gradcam.explain = xraylab.gradcam.explain, explain
        try:
            return super().heat(study_id, version, original, study_uid=study_uid)
        finally:
            xraylab.gradcam.explain = real


def test_the_heatmap_layer_is_an_rgba_png_of_the_maps_size_transparent_where_there_is_no_heat(db: Database) -> None:
    study_id = add_study(db)
    images = Images(jpeg())
    maps = FakeMaps(db, images)
    web = client(db, images, maps)
    first = web.get(heatmap_layer_url(study_id))
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert "no-store" in first.headers["cache-control"]
    layer = Image.open(io.BytesIO(first.content))
    assert layer.mode == "RGBA" and layer.size == (32, 24)  # the map's own size, not the picture's (96 x 96)
    rgba = np.asarray(layer)
    levels = np.round(FakeMaps.MAP * 255).astype(np.uint8)
    assert np.array_equal(rgba[..., 3], levels)  # alpha is the heat: 0 where there is none
    assert (rgba[12:, :, 3] == 0).all() and (rgba[:, 16:, 3] == 0).all() and rgba[0, 15, 3] == 255
    assert np.array_equal(rgba[..., :3], HEAT_COLOURS[levels])
    assert (maps.computed, images.fetched) == (1, 1)
    again = web.get(heatmap_layer_url(study_id))  # cached: the object is looked at, not fetched
    assert again.content == first.content and (maps.computed, images.fetched) == (1, 1)
    images.now = "changed"
    assert web.get(heatmap_layer_url(study_id)).json()["error"] == "image_changed"
    images.now = "gone"
    assert web.get(heatmap_layer_url(study_id)).status_code == 410


needs_films = pytest.mark.skipif(not FULL_RESOLUTION.is_dir(), reason=f"the real chest X-rays are not at "
                                 f"{FULL_RESOLUTION} (a clone without ../shared: see its README)")


@needs_films
def test_a_real_film_as_a_16_bit_dicom_comes_back_exactly(db: Database) -> None:
    path = max(FULL_RESOLUTION.rglob("*.jpeg"), key=lambda p: p.stat().st_size)
    grey = np.asarray(Image.open(path).convert("L"), np.uint16)
    stored = grey * 16 + np.random.default_rng(9).integers(0, 16, grey.shape, dtype=np.uint16)  # 12 bits
    data = dicom(stored, bits_stored=12, photometric="MONOCHROME1")
    response = client(db, Images(data)).get(pixels_url(add_study(db)))
    assert response.headers["x-photometric"] == "MONOCHROME1"
    assert np.array_equal(samples(response), stored) and samples(response).shape == grey.shape
