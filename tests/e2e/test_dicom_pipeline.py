"""DICOM through the whole system: files in S3 in every transfer syntax the uploader writes, with the unsupported
ones dead-lettered naming what; and studies sent by C-STORE to the PACS (Orthanc), followed by the PACS notifier
through a crash, each one row with the metadata of its tags, in the same tables and worklist as the JPEGs."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from ingest.dicom_files import TRANSFER_SYNTAXES
from ingest.pacs_sender import PacsTarget
from ingest.uploader import DicomOptions, StudyUpload, send_generated_to_pacs, upload_generated
from tests.e2e.observe import rows_for
from tests.e2e.test_pipeline import dead_letters
from xraylab.db.models import Study
from xraylab.orthanc import PACS_BUCKET, OrthancClient
from xraylab.settings import project_root

pytestmark = pytest.mark.e2e
WAIT_S = 240
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def wait_for(mariadb, bucket: str, keys: set[str], settings=None, dlq: dict[str, str] | None = None):
    """Rows (key -> predictions) of ``keys`` once all have one, and the dead letters of ``dlq``'s keys."""
    deadline, rows, letters = time.time() + WAIT_S, {}, {}
    while time.time() < deadline:
        rows = {k: n for k, n in rows_for(mariadb, bucket) if k in keys}
        if dlq:
            letters = {d["object_key"]: d for d in dead_letters(settings, lambda d: d.get("bucket") == bucket)}
        if len(rows) >= len(keys) and (not dlq or set(dlq) <= set(letters)):
            break
        time.sleep(2)
    return rows, letters


def studies(mariadb, keys: set[str]) -> dict[str, Study]:
    with mariadb.session() as session:
        found = session.scalars(select(Study).where(Study.object_key.in_(keys))).all()
        session.expunge_all()
        return {s.object_key: s for s in found}


def mpeg2_dicom() -> bytes:
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML

    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mpeg2-{os.getpid()}.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.unlink()
    return data


def test_dicom_in_s3_is_scored_with_its_tags_or_dead_lettered_naming_what(pipeline, settings, s3, bucket,
                                                                          mariadb) -> None:
    uploads: list[StudyUpload] = []
    for i, syntax in enumerate(TRANSFER_SYNTAXES):
        uploads += upload_generated(s3, bucket, 1, seed=70 + i, prefix=f"{syntax}/", dicom=DicomOptions(syntax))
    uploads += upload_generated(s3, bucket, 1, seed=80, prefix="mono1/",
                                dicom=DicomOptions("rle", bits=16, photometric="MONOCHROME1", burn_in=True))
    bad = {"bad/plan.dcm": ((TEST_FILES / "rtplan.dcm").read_bytes(), "not_image_dicom"),
           "bad/dose.dcm": ((TEST_FILES / "rtdose.dcm").read_bytes(), "multi_frame"),
           "bad/video.dcm": (mpeg2_dicom(), "unsupported_transfer_syntax"),
           "bad/renamed.dcm": (b"\xff\xd8\xff\xe0 a JPEG, or so its first bytes say", "not_dicom")}
    for key, (data, _) in bad.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/dicom")

    keys = {u.key for u in uploads}
    rows, letters = wait_for(mariadb, bucket, keys, settings, {k: r for k, (_, r) in bad.items()})
    assert rows == dict.fromkeys(keys, 1), "each DICOM file scored once"
    assert {k: d["reason"] for k, d in letters.items()} == {k: r for k, (_, r) in bad.items()}
    assert "RT Plan Storage" in letters["bad/plan.dcm"]["detail"]
    assert "MPEG2" in letters["bad/video.dcm"]["detail"]
    stored = studies(mariadb, keys)
    for upload in uploads:  # the patient data came from the tags: the S3 metadata held only the hospital
        study = stored[upload.key]
        assert (study.patient_id, study.patient_name, study.study_date, study.hospital) == (
            upload.metadata.patient_id, upload.metadata.patient_name, upload.metadata.study_date,
            upload.metadata.hospital)
        assert (study.modality, study.view_position, study.content_type) == ("DX", "PA", "application/dicom")
        assert study.study_instance_uid and study.study_instance_uid.startswith("1.2.826.0.1.3680043")


def kill_pacs_notifier(settings) -> int:
    pid = int((settings.STATE_DIR / "run" / "pacs-notifier.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


def test_pacs_studies_become_one_row_each_across_a_notifier_crash(pipeline, settings, mariadb) -> None:
    target = PacsTarget.from_settings(settings)
    sent: list[StudyUpload] = []

    def modality(seed: int, count: int) -> None:
        for batch in range(count // 4):
            sent.extend(send_generated_to_pacs(target, 4, seed=seed + batch, batch=4,
                                               dicom=DicomOptions("jpeg2000-lossless", bits=16)))
            time.sleep(0.3)

    sender = threading.Thread(target=modality, args=(9000 + int(time.time()) % 1000 * 10, 24))
    sender.start()
    time.sleep(2)
    kill_pacs_notifier(settings)  # mid-stream: the modality keeps sending while the notifier is down
    time.sleep(3)
    subprocess.run(["bash", str(project_root() / "cluster/local/pacs-notifier.sh"), "start"], check=True,
                   capture_output=True, timeout=120)
    sender.join(180)
    assert len(sent) == 24

    pacs = OrthancClient.from_settings(settings)
    assert all(pacs.has_instance(u.key) for u in sent), "the instance ids computed here are Orthanc's"
    keys = {u.key for u in sent}
    rows, _ = wait_for(mariadb, PACS_BUCKET, keys)
    assert rows == dict.fromkeys(keys, 1), "every study once: none lost, none twice"
    stored = studies(mariadb, keys)
    for upload in sent:
        study = stored[upload.key]
        assert study.endpoint_id == settings.ORTHANC_ENDPOINT_ID and study.bucket == PACS_BUCKET
        assert (study.patient_id, study.patient_name, study.hospital) == (
            upload.metadata.patient_id, upload.metadata.patient_name, upload.metadata.hospital)
        assert study.score is not None and 0.0 <= study.score <= 1.0
    scores = np.array([stored[u.key].score for u in sent])
    assert scores.std() > 0, "each study scored on its own pixels"


@pytest.mark.browser
def test_the_worklist_holds_pacs_and_s3_studies_alike_and_shows_the_tags(pipeline, settings, s3, bucket, mariadb,
                                                                          browser) -> None:
    from playwright.sync_api import expect

    from ingest.uploader import upload_study
    from tests.accounts import new_account
    from tests.e2e.browser import log_in
    from xraylab.messages import StudyMetadata
    from xraylab.synthetic import encode_jpeg, generate_xray

    hospital = f"pacs-{uuid.uuid4().hex[:6]}"
    [dicom] = send_generated_to_pacs(PacsTarget.from_settings(settings), 1, seed=5, hospitals=[hospital],
                                     dicom=DicomOptions("rle", bits=16, photometric="MONOCHROME1"))
    upload_study(s3, bucket, f"{hospital}/plain.jpeg", encode_jpeg(generate_xray(np.random.default_rng(1), False)),
                 StudyMetadata(hospital, "P-JPEG-1", "Jay Peg", "2026-11-20"), content_type="image/jpeg")
    rows_pacs, _ = wait_for(mariadb, PACS_BUCKET, {dicom.key})
    rows_s3, _ = wait_for(mariadb, bucket, {f"{hospital}/plain.jpeg"})
    assert rows_pacs and rows_s3
    study_id = studies(mariadb, {dicom.key})[dicom.key].id
    jpeg_id = studies(mariadb, {f"{hospital}/plain.jpeg"})[f"{hospital}/plain.jpeg"].id

    doctor, password = new_account(mariadb, hospitals=[hospital])
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = context.new_page()
    log_in(page, pipeline.url, doctor, password)
    page.locator("#hospital-select").select_option(hospital)
    expect(page.locator("#page-info")).to_contain_text("2 studies", timeout=30000)
    listed = page.locator("#worklist-table tbody tr[data-study]")
    expect(listed).to_have_count(2, timeout=30000)
    expect(page.locator(f"#worklist-table tbody tr[data-study='{jpeg_id}']")).to_have_count(1)
    page.locator(f"#worklist-table tbody tr[data-study='{study_id}']").click()
    details = page.locator("#study-details")
    expect(details).to_contain_text(f"Study {study_id}", timeout=30000)
    expect(details).to_contain_text(dicom.metadata.patient_name)
    expect(details).to_contain_text("modality DX, view PA, manufacturer xraylab simulated modality")
    expect(details).to_contain_text(f"from {settings.ORTHANC_ENDPOINT_ID}")
    page.wait_for_selector("#reading-panel .xv-root[data-state='ready']", timeout=60000)
    # The viewer reads the 12 stored bits, and shows MONOCHROME1 inverted, as its photometric interpretation asks.
    state = page.evaluate("() => window.xraylabViewer.panes.main.state()")
    assert state["bits"] == 12 and state["invert"] is True
    # The picture shown is the one the tags describe: MONOCHROME1 stored inverted, shown the right way round.
    shown = page.request.get(f"{pipeline.url}/review/studies/{study_id}/image")
    assert shown.headers["content-type"] == "image/png"
    from PIL import Image

    from ingest.uploader import generated_studies

    [original] = generated_studies(1, seed=5, hospitals=[hospital])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(shown.body())).convert("L")), original.pixels)
    context.close()


FULL_RESOLUTION = project_root().parent / "shared" / "data" / "chest-xray" / "full-resolution"
needs_real_films = pytest.mark.skipif(
    not FULL_RESOLUTION.is_dir(), reason=f"the real full-size X-rays are not at {FULL_RESOLUTION} (a clone without "
                                         "../shared: see README 'A model trained on real X-rays')")


def largest_films(count: int) -> list[Path]:
    """The real films with the most pixels (read from their headers), largest first."""
    from PIL import Image

    def pixels(path: Path) -> int:
        with Image.open(path) as film:
            return film.size[0] * film.size[1]

    return sorted(FULL_RESOLUTION.glob("*/*.jpeg"), key=pixels, reverse=True)[:count]


@needs_real_films
def test_real_size_studies_flow_through_s3_and_the_pacs_once_each_with_no_retry(pipeline, settings, s3, bucket,
                                                                                mariadb, tmp_path) -> None:
    """Issue 27: real films at their own size (up to 2,890 x 2,534) as the DICOM a modality sends, uncompressed
    16-bit (14.6 MB), MONOCHROME1, RLE and JPEG 2000, and as JPEGs, through S3; and uncompressed through the PACS,
    sent by DCMTK's storescu as an X-ray room would and by the project's own sender. Each becomes one row, none
    is retried or dead-lettered, and each DICOM file scores as its film does."""
    from ingest.pacs_sender import send_to_pacs
    from ingest.uploader import full_size_dicom, upload_study
    from xraylab.messages import StudyMetadata
    from xraylab.orthanc import orthanc_instance_id

    films = largest_films(4)
    before = pipeline.ingest_stats()
    s3_keys: dict[str, Path] = {}
    for i, film in enumerate(films):
        key = f"real/{film.stem}.jpeg"
        upload_study(s3, bucket, key, film.read_bytes(), StudyMetadata("st-mary", f"R{i}", "Real Film", "2026-12-01"),
                     content_type="image/jpeg")
        s3_keys[key] = film
    sizes = {}
    for i, (syntax, photometric) in enumerate([("explicit", "MONOCHROME2"), ("explicit", "MONOCHROME1"),
                                               ("rle", "MONOCHROME2"), ("jpeg2000", "MONOCHROME2")]):
        data, metadata = full_size_dicom(films[i], syntax, photometric=photometric, seed=i)
        key = f"real/{syntax}-{photometric}-{films[i].stem}.dcm"
        upload_study(s3, bucket, key, data, StudyMetadata(metadata.hospital), content_type="application/dicom")
        s3_keys[key], sizes[key] = films[i], len(data)
    assert max(sizes.values()) > 14_000_000, "the largest is a real-size uncompressed radiograph"

    pacs_keys: dict[str, Path] = {}
    files = []
    for i, film in enumerate(films):
        data, _ = full_size_dicom(film, "explicit", seed=100 + i, hospital="northgate")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        pacs_keys[orthanc_instance_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                      ds.SOPInstanceUID)] = film
        files.append(data)
    paths = []
    for i, data in enumerate(files[:2]):
        paths.append(tmp_path / f"modality-{i}.dcm")
        paths[-1].write_bytes(data)
    sent = subprocess.run(["storescu", "-aet", settings.MODALITY_AET, "-aec", settings.ORTHANC_AET, "127.0.0.1",
                           str(settings.ORTHANC_DICOM_PORT), *map(str, paths)], capture_output=True, text=True,
                          timeout=120)
    assert sent.returncode == 0, sent.stderr
    send_to_pacs(files[2:], PacsTarget.from_settings(settings))

    rows, letters = wait_for(mariadb, bucket, set(s3_keys), settings, {})
    pacs_rows, _ = wait_for(mariadb, PACS_BUCKET, set(pacs_keys))
    assert rows == dict.fromkeys(s3_keys, 1) and pacs_rows == dict.fromkeys(pacs_keys, 1), "each study once"
    assert not [d for d in dead_letters(settings, lambda d: d.get("bucket") == bucket)
                if d["object_key"] in s3_keys], "no real-size study was dead-lettered"
    after = pipeline.ingest_stats()
    for counter in ("retries", "refused_at_once", "transient_errors"):
        assert after.get(counter, 0) == before.get(counter, 0), f"{counter}: a valid study never fails a call"

    stored = studies(mariadb, set(s3_keys)) | studies(mariadb, set(pacs_keys))
    film_score = {film: stored[key].score for key, film in s3_keys.items() if key.endswith(".jpeg")}
    for key, film in [*s3_keys.items(), *pacs_keys.items()]:
        assert stored[key].score == pytest.approx(film_score[film], abs=0.03), f"{key} scores as its film does"
    assert stored[next(k for k in sizes if "explicit-MONOCHROME2" in k)].size_bytes > 14_000_000


@needs_real_films
def test_predict_takes_a_real_size_dicom_and_the_batch_route_several(pipeline, settings, mariadb) -> None:
    import requests

    from ingest.uploader import full_size_dicom
    from tests.accounts import new_api_key

    films = largest_films(3)
    key = {"Authorization": f"Bearer {new_api_key(mariadb)}"}
    data, _ = full_size_dicom(films[0], "explicit")
    assert len(data) > 14_000_000
    one = requests.post(f"{pipeline.url}/v1/predict", data=data, headers=key, timeout=120)
    assert one.status_code == 200, one.text
    assert 0.0 <= one.json()["score"] <= 1.0 and one.json()["band"] in ("Normal", "Unsure", "Pneumonia")
    several = [("files", (f"{i}.dcm", full_size_dicom(film, "explicit", seed=i)[0], "application/dicom"))
               for i, film in enumerate(films)] + [("files", ("film.jpeg", films[0].read_bytes(), "image/jpeg"))]
    batch = requests.post(f"{pipeline.url}/v1/predict/batch", files=several, headers=key, timeout=300)
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["filename"] for r in results] == ["0.dcm", "1.dcm", "2.dcm", "film.jpeg"]
    assert all("score" in r for r in results), results
    assert results[0]["score"] == pytest.approx(one.json()["score"], abs=1e-6), "the same file, the same score"
    assert results[3]["score"] == pytest.approx(results[0]["score"], abs=0.03), "the DICOM scores as its film"


def test_pacs_studies_get_their_sr_and_heatmap_series_back_and_the_ris_one_oru_each(pipeline, settings,
                                                                                  mariadb) -> None:
    """The local stack's delivery settings (cluster/local/ris.sh): PACS studies back into Orthanc, every study to the
    demo RIS. Each study comes back with an xraylab SR and Grad-CAM series in its own PACS study, and the RIS logs
    exactly one ORU^R01 per study, under the control id its outbox row records."""
    import json

    from xraylab.db import outbox
    from xraylab.delivery_config import DeliveryConfig

    assert settings.DELIVERY_CONFIG, "cluster/local/ris.sh sets XRAYLAB_DELIVERY_CONFIG for the local stack"
    config = DeliveryConfig.load(settings.DELIVERY_CONFIG)
    destinations = {d.id for d in config.destinations(None, from_pacs=True)}
    assert {d.split("/")[0] for d in destinations} == {"pacs", "ris"}
    sent = send_generated_to_pacs(PacsTarget.from_settings(settings), 3, seed=7000 + int(time.time()) % 1000,
                                  dicom=DicomOptions("jpeg2000-lossless", bits=16))
    keys = {u.key for u in sent}
    rows, _ = wait_for(mariadb, PACS_BUCKET, keys)
    assert len(rows) == 3
    ids = [s.id for s in studies(mariadb, keys).values()]
    deadline, states = time.time() + WAIT_S, {}
    while time.time() < deadline:
        with mariadb.session() as session:
            states = outbox.states_of(session, ids)
        if states and not any(s.get("queued") for s in states.values()):
            break
        time.sleep(2)
    assert states == {d: {"sent": 3} for d in destinations}, states

    client = OrthancClient.from_settings(settings)
    for study in studies(mariadb, keys).values():
        [pacs_study] = client.session.post(f"{client.url}/tools/find", json={
            "Level": "Study", "Query": {"StudyInstanceUID": study.study_instance_uid}}, timeout=30).json()
        series = client.session.get(f"{client.url}/studies/{pacs_study}/series", timeout=30).json()
        ours = sorted((s["MainDicomTags"]["Modality"], len(s["Instances"])) for s in series
                      if s["MainDicomTags"].get("SeriesDescription", "").startswith("xraylab"))
        assert len(ours) == 2 and ("SR", 1) in ours, ours  # the report and the Grad-CAM picture, once each

    with mariadb.session() as session:
        expected = [r["message_id"] for r in outbox.list_deliveries(session, limit=10000)
                    if r["study_id"] in ids and r["destination"].startswith("ris/")]
    log = settings.STATE_DIR / "ris" / "messages.jsonl"
    received = [json.loads(line)["control_id"] for line in log.read_text().splitlines() if line.strip()]
    assert sorted(c for c in received if c in expected) == sorted(expected), "one ORU^R01 per study, none twice"
