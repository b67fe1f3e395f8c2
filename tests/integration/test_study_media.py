"""The review app's picture routes (``ui/study_media.py``) on the real stores: SeaweedFS S3 and Orthanc, with the
study rows in SQLite. The picture shown must be the one that was scored (its eTag), and it is held to the
pipeline's own limits (bytes, and pixels from the header before any is decoded), DICOM included."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from tests.accounts import reading_as
from ui.study_media import HeatmapMaker, StudyImages, heatmap_url, image_url, media_router
from xraylab.db.crud import get_study, record_prediction
from xraylab.db.review import store_heatmap
from xraylab.db.session import Database, upgrade_schema
from xraylab.gradcam import heat_to_png
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid
from xraylab.orthanc import PACS_BUCKET, OrthancClient
from xraylab.settings import Settings, load_settings

pytestmark = pytest.mark.integration

PATIENT = "Chloé Novak"
MODEL = "m1"


def picture(side: int, fmt: str = "JPEG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (np.linspace(0, 255, side * side).reshape(side, side) * 0.7 + rng.uniform(0, 70, (side, side)))
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "L").save(out, fmt)
    return out.getvalue()


def dicom(side: int, seed: int = 0) -> bytes:
    """A one-frame 8-bit MONOCHROME2 DX instance, ``side`` x ``side`` pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "P-MEDIA", "Novak^Chloé", "DX"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 256, (side, side), dtype=np.uint8).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'media.db'}")
    upgrade_schema(db.engine)
    yield db
    db.dispose()


def make_client(db: Database, settings: Settings, tmp_path: Path) -> tuple[TestClient, StudyImages]:
    images = StudyImages(settings)
    app = FastAPI()
    app.include_router(media_router(db, images, HeatmapMaker(db, tmp_path / "no-registry", images,
                                                              settings.image_limits())))
    return TestClient(reading_as(app)), images


def add_study(db: Database, endpoint_id: str, bucket: str, key: str, etag: str | None, *,
              cached_map: bool = False) -> dict[str, Any]:
    """A scored study's row for the object (``etag`` as the pipeline stored it), with its map cached if asked
    (so that the heatmap route needs no model)."""
    record = StudyRecord(study_uid=study_uid(endpoint_id, bucket, key, etag or f"none-{key}"),
                         endpoint_id=endpoint_id, bucket=bucket, object_key=key, etag=etag,
                         metadata=StudyMetadata(hospital="north", patient_name=PATIENT))
    with db.session() as session:
        study_id = record_prediction(session, record, Verdict(score=0.91, band="Pneumonia", model_version=MODEL,
                                                              synthetic_model=True, infer_ms=1.0)).study_id
        if cached_map:
            store_heatmap(session, study_id, MODEL, heat_to_png(np.linspace(0, 1, 64 * 64).reshape(64, 64)))
    with db.session() as session:
        row = get_study(session, study_id)
    assert row is not None
    return row


def put(s3: Any, bucket: str, key: str, data: bytes) -> str:
    return str(s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]).strip('"')


def test_the_picture_shown_is_the_picture_scored(s3, bucket, settings, db, tmp_path, caplog) -> None:
    key = f"{PATIENT}/chest.jpeg"  # keys can name patients: they never reach the log
    scored = picture(256, seed=1)
    study = add_study(db, settings.S3_ENDPOINT_ID, bucket, key, put(s3, bucket, key, scored), cached_map=True)
    older = add_study(db, settings.S3_ENDPOINT_ID, bucket, key, None)  # a row from before eTags were kept
    client, images = make_client(db, settings, tmp_path)
    with client:
        shown = client.get(image_url(study["id"]))
        assert shown.status_code == 200 and shown.content == scored and shown.headers["content-type"] == "image/jpeg"
        overlaid = client.get(heatmap_url(study["id"]))
        assert overlaid.status_code == 200 and overlaid.headers["content-type"] == "image/png"
        assert images.state(study) == "ok"

        replacement = picture(256, seed=2)
        put(s3, bucket, key, replacement)  # the same key, other pixels, after scoring
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="xraylab.ui.media"):
            for url in (image_url(study["id"]), heatmap_url(study["id"])):
                refused = client.get(url)
                assert refused.status_code == 409, url
                assert refused.json() == {"error": "image_changed", "detail": (
                    f"the object in storage was replaced after study {study['id']} was scored; "
                    "the score does not belong to it")}
        assert images.state(study) == "changed"
        logged = [r.getMessage() for r in caplog.records if r.name == "xraylab.ui.media"]
        assert logged and all(f"study {study['id']}:" in line for line in logged)
        assert not any(PATIENT in line or "chest" in line for line in logged)

        unchecked = client.get(image_url(older["id"]))  # no eTag to hold it to: shown as it is now, as before
        assert unchecked.status_code == 200 and unchecked.content == replacement
        assert images.state(older) == "ok"

        s3.delete_object(Bucket=bucket, Key=key)
        assert client.get(image_url(study["id"])).json()["error"] == "image_gone"
        assert images.state(study) == images.state(older) == "gone"


def test_pictures_over_the_pipelines_limits_are_refused_before_decoding(s3, bucket, db, tmp_path,
                                                                        monkeypatch) -> None:
    import xraylab.dicom

    settings = load_settings(MAX_IMAGE_PIXELS=100 * 100)
    decoded: list[int] = []
    to_grey = xraylab.dicom.to_grey

    def counted(ds: Any) -> np.ndarray:
        decoded.append(int(ds.Rows))
        return to_grey(ds)

    monkeypatch.setattr(xraylab.dicom, "to_grey", counted)
    client, _ = make_client(db, settings, tmp_path)
    endpoint = settings.S3_ENDPOINT_ID

    def study_of(name: str, data: bytes) -> int:
        return int(add_study(db, endpoint, bucket, name, put(s3, bucket, name, data), cached_map=True)["id"])

    small_dicom = study_of("small.dcm", dicom(64))
    large = {name: study_of(name, data) for name, data in
             [("large.jpeg", picture(200)), ("large.png", picture(200, "PNG")), ("large.dcm", dicom(200))]}
    with client:
        shown = client.get(image_url(small_dicom))  # under the limit: the DICOM file as a PNG, as before
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(shown.content)).size == (64, 64) and decoded == [64]

        def no_decoding(self: Any) -> Any:
            raise AssertionError("a picture over the limit was decoded")

        monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
        for name, study_id in large.items():
            for url in (image_url(study_id), heatmap_url(study_id)):
                refused = client.get(url)
                assert refused.status_code == 422, (name, url, refused.text)
                body = refused.json()
                assert body["error"] == "too_large" and "200x200 pixels" in body["detail"], body
        assert decoded == [64], "no DICOM pixel data was decoded for the large one"

    few_bytes = load_settings(MAX_IMAGE_BYTES=2000)
    heavy = study_of("heavy.dcm", dicom(64, seed=3))  # 64 x 64 pixels, over 4,000 bytes
    client, _ = make_client(db, few_bytes, tmp_path)
    with client:
        for url in (image_url(heavy), heatmap_url(heavy)):
            refused = client.get(url)
            assert refused.status_code == 422 and refused.json()["error"] == "too_large", refused.text
            assert "bytes" in refused.json()["detail"]


def test_a_pacs_study_is_held_to_the_md5_of_the_instance_scored(settings, db, tmp_path) -> None:
    pacs = OrthancClient.from_settings(settings)
    data = dicom(64, seed=4)
    stored = pacs.session.post(f"{pacs.url}/instances", data=data, timeout=30)
    assert stored.status_code == 200, stored.text
    instance = stored.json()["ID"]
    try:
        pacs_id = settings.ORTHANC_ENDPOINT_ID
        study = add_study(db, pacs_id, PACS_BUCKET, instance, hashlib.md5(data).hexdigest())
        other = add_study(db, pacs_id, PACS_BUCKET, instance, hashlib.md5(b"another file").hexdigest())
        client, images = make_client(db, settings, tmp_path)
        assert images.state(study) == "ok" and images.state(other) == "changed"
        with client:
            shown = client.get(image_url(study["id"]))
            assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
            assert client.get(image_url(other["id"])).json()["error"] == "image_changed"
    finally:
        pacs.session.delete(f"{pacs.url}/instances/{instance}", timeout=30)
    assert images.state(study) == "gone"
