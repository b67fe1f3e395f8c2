"""The de-identified research export against SeaweedFS: the Unsure DICOM studies copied with no patient name,
id, birth date or original UID in any tag, burned-in text blurred, one pseudonym per patient (issuer: the
hospital) that is stable across exports and differs under another key; an image whose header says it has
burned-in text that nothing finds refused, nothing of it written; an export log without identifiers; and the
command. Needs Tesseract (scripts/system-deps.sh), as the export does."""

from __future__ import annotations

import io
import json
import uuid
from datetime import date

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from ingest.dicom_files import TEXT_BAND, ModalityStudy, build_dataset, dicom_bytes
from tests.cli import xraylab
from xraylab.db.crud import record_predictions
from xraylab.db.models import ResearchExport
from xraylab.db.session import Database, upgrade_schema
from xraylab.deid import pseudonym, remap_uid
from xraylab.messages import ObjectToProcess, StudyMetadata, StudyRecord, Verdict
from xraylab.research_export import export_research, key_id
from xraylab.settings import load_settings
from xraylab.sources import Sources
from xraylab.synthetic import encode_jpeg, generate_xray

pytestmark = pytest.mark.integration
HOSPITAL = "st-mary"  # every object's S3 metadata names it: the issuer of their Patient IDs
ANA = ModalityStudy("P-ANA-1", "Ana Okafor", date(2026, 11, 4), "st-mary", birth_date=date(1961, 5, 17),
                    accession="ACC-1")
BEN = ModalityStudy("P-BEN-2", "Ben Silva", date(2026, 11, 9), "riverside", birth_date=date(1990, 2, 3),
                    accession="ACC-2")


@pytest.fixture()
def research_buckets(s3, settings):
    """Two research buckets, made by the store's admin (the export's identity writes them, named after
    XRAYLAB_RESEARCH_BUCKET, and may not make buckets)."""
    names = [f"{settings.RESEARCH_BUCKET}-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        s3.create_bucket(Bucket=name)
    yield names
    for name in names:
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=name, Key=obj["Key"])
            s3.delete_bucket(Bucket=name)
        except Exception:  # never created
            pass


def every_value(ds: pydicom.Dataset) -> list[str]:
    """Every element's value as text, through sequences and the file meta information."""
    found = []
    for elem in [*ds.file_meta, *ds] if hasattr(ds, "file_meta") else ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found += every_value(item)
        elif elem.tag != 0x7FE00010:
            found.append(str(elem.value))
    return found


def says_burned_in(pixels: np.ndarray) -> bytes:
    """A device no text rule knows, whose header says its image has burned-in text that is nowhere to be found:
    not exported (text OCR cannot read is not text nobody can)."""
    study = ModalityStudy("P-CARLA-3", "Carla Duarte", date(2026, 11, 12), HOSPITAL, manufacturer="ACME Imaging")
    ds = build_dataset(pixels, study)
    ds.BurnedInAnnotation = "YES"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def high_frequency(band: np.ndarray) -> float:
    band = band.astype(np.float64)
    return float(np.abs(np.diff(band, axis=1)).mean() + np.abs(np.diff(band, axis=0)).mean())


def test_unsure_dicom_studies_are_exported_de_identified(s3, bucket, research_buckets, tmp_path) -> None:
    rng = np.random.default_rng(8)
    pixels = {name: generate_xray(rng, True) for name in ("ana1", "ana2", "ben", "normal")}
    objects = {"ana1.dcm": (dicom_bytes(pixels["ana1"], ANA, syntax="jpeg2000-lossless", burn_in=True), "Unsure"),
               "ana2.dcm": (dicom_bytes(pixels["ana2"], ANA, syntax="rle", bits=16, burn_in=True), "Unsure"),
               "ben.dcm": (dicom_bytes(pixels["ben"], BEN, burn_in=True), "Unsure"),
               "normal.dcm": (dicom_bytes(pixels["normal"], BEN), "Normal"),
               "gone.dcm": (dicom_bytes(pixels["normal"], BEN), "Unsure"),
               "device.dcm": (says_burned_in(pixels["normal"]), "Unsure"),
               "plain.jpeg": (encode_jpeg(pixels["ana1"]), "Unsure")}
    for key, (data, _) in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data,
                      ContentType="application/dicom" if key.endswith(".dcm") else "image/jpeg",
                      Metadata=StudyMetadata(HOSPITAL).to_s3_metadata())
    settings = load_settings(RESEARCH_KEY="key-one-" + uuid.uuid4().hex, RESEARCH_BUCKET=research_buckets[0])
    sources = Sources(settings)
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade_schema(db.engine)
    with db.session() as session:
        record_predictions(session, [
            (StudyRecord.of(item, sources.fetch("local", bucket, key)),
             Verdict(0.55 if band == "Unsure" else 0.1, band, "m1", True), None)
            for key, (_, band) in objects.items() for item in [ObjectToProcess(bucket, key, endpoint_id="local")]])

    # A DICOM study whose object is gone: refused once, logged, not tried again.
    s3.delete_object(Bucket=bucket, Key="gone.dcm")
    report = export_research(db, settings, sources=sources)
    assert report.to_dict() == {"exported": 3, "skipped": {"missing_object": 1, "burned_in_text": 1}}, \
        "the JPEG is no candidate"
    assert export_research(db, settings, sources=sources).to_dict() == {"exported": 0, "skipped": {}}, \
        "each study once per key, refusals included"

    originals = {k: pydicom.dcmread(io.BytesIO(d)) for k, (d, _) in objects.items() if k.endswith(".dcm")}
    secrets_ = {"Okafor", "Silva", "Duarte", "P-ANA-1", "P-BEN-2", "P-CARLA-3", "19610517", "19900203", "ACC-1",
                "ACC-2"}
    for ds in originals.values():
        secrets_ |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    listing = s3.list_objects_v2(Bucket=research_buckets[0])["Contents"]
    exported = {}
    for obj in listing:
        raw = s3.get_object(Bucket=research_buckets[0], Key=obj["Key"])["Body"].read()
        ds = pydicom.dcmread(io.BytesIO(raw))
        exported[obj["Key"]] = ds
        values = " ".join(every_value(ds))
        assert not [s for s in secrets_ if s in values or s in obj["Key"] or s.encode() in raw], obj["Key"]
        assert ds.PatientBirthDate == "" and ds.PatientIdentityRemoved == "YES"
        assert ds.BurnedInAnnotation == "NO" and "Clean Pixel Data" in ds.DeidentificationMethod
    assert len(exported) == 3, "nothing of the refused image is written"

    by_patient = {}
    for ds in exported.values():
        by_patient.setdefault(str(ds.PatientID), []).append(ds)
    key_one = settings.RESEARCH_KEY.get_secret_value().encode()
    assert sorted(len(v) for v in by_patient.values()) == [1, 2], "Ana's two studies share her pseudonym"
    assert set(by_patient) == {pseudonym("P-ANA-1", key_one, issuer=HOSPITAL),
                               pseudonym("P-BEN-2", key_one, issuer=HOSPITAL)}
    [ana_a, ana_b] = by_patient[pseudonym("P-ANA-1", key_one, issuer=HOSPITAL)]
    assert (date.fromisoformat(f"{ana_a.StudyDate[:4]}-{ana_a.StudyDate[4:6]}-{ana_a.StudyDate[6:]}")
            - date(2026, 11, 4)).days < 0, "dates moved back"
    assert ana_a.StudyDate == ana_b.StudyDate, "one shift per patient"

    # The text band is blurred; the rest of the picture is the original's.
    for ds in exported.values():
        [source] = [o for o in originals.values() if remap_uid(o.SOPInstanceUID, key_one) == ds.SOPInstanceUID]
        band = int(np.ceil(source.Rows * TEXT_BAND))
        assert high_frequency(ds.pixel_array[:band]) < 0.2 * high_frequency(source.pixel_array[:band])
        assert np.array_equal(ds.pixel_array[band + 1:], source.pixel_array[band + 1:])

    with db.session() as session:  # the export log: study ids and pseudonyms, never identifiers
        log = session.scalars(select(ResearchExport)).all()
        assert sorted(r.status for r in log) == ["exported"] * 3 + ["refused"] * 2
        assert sorted(r.reason for r in log if r.status == "refused") == ["burned_in_text", "missing_object"]
        assert {r.key_id for r in log} == {key_id(key_one)}
        assert not [s for r in log for s in secrets_ if s in json.dumps(
            {c.name: str(getattr(r, c.name)) for c in ResearchExport.__table__.columns})]

    # Another key: other pseudonyms, the same studies exported again (to another bucket).
    other = load_settings(RESEARCH_KEY="key-two-" + uuid.uuid4().hex, RESEARCH_BUCKET=research_buckets[1])
    assert export_research(db, other, sources=Sources(other)).to_dict() == {
        "exported": 3, "skipped": {"missing_object": 1, "burned_in_text": 1}}
    again = {pydicom.dcmread(io.BytesIO(s3.get_object(Bucket=research_buckets[1], Key=o["Key"])["Body"].read()),
                             stop_before_pixels=True).PatientID
             for o in s3.list_objects_v2(Bucket=research_buckets[1])["Contents"]}
    assert len(again) == 2 and not again & set(by_patient), "another key, other pseudonyms"

    # The command: a bad band is refused with exit 2; a run with nothing new exports nothing.
    bad = xraylab("export", "research", "--band", "Maybe")
    assert bad.returncode == 2 and "unknown band" in bad.stderr
    db.dispose()
