"""The doctors' review app, mounted on the Serve ingress, driven in headless Chromium as a doctor uses it:
log in, filter the worklist, open a study by clicking its row, toggle the Grad-CAM heatmap, record verdicts
(two doctors, a change of mind, a session that ends mid-verdict), and every data route refused without a
session or an API key. Screenshots of the worklist and of the study view land in the state dir."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from sqlalchemy import delete, select, update

from ingest.uploader import upload_study
from tests.accounts import new_account, new_api_key
from tests.e2e.browser import log_in
from tests.e2e.observe import rows_for
from xraylab.db.models import LoginThrottle, Study, User, UserSession, VerdictRow
from xraylab.messages import StudyMetadata
from xraylab.synthetic import encode_jpeg, generate_xray

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 180
SIDE = 640  # pixels of the uploaded images


class Ward:
    """Studies of one made-up hospital, so that the test's filter shows only its own rows."""

    def __init__(self, s3, bucket: str, mariadb, hospital: str | None = None) -> None:
        self.s3, self.bucket, self.db = s3, bucket, mariadb
        self.hospital = hospital or f"e2e-{uuid.uuid4().hex[:6]}"
        self.keys: dict[str, StudyMetadata] = {}
        self.rng = np.random.default_rng(7)

    def upload(self, count: int, pneumonia: bool = True) -> list[str]:
        keys = []
        for _ in range(count):
            tag = uuid.uuid4().hex[:6]
            meta = StudyMetadata(self.hospital, f"P-{tag}", f"Testpatient {tag.upper()}", "2026-11-20")
            key = f"{self.hospital}/{tag}.jpeg"
            # Larger than the model's input: the study view shows the stored picture, not what the model saw.
            upload_study(self.s3, self.bucket, key, encode_jpeg(generate_xray(self.rng, pneumonia, SIDE)), meta,
                         content_type="image/jpeg")
            self.keys[key] = meta
            keys.append(key)
        return keys

    def wait_rows(self) -> dict[str, int]:
        """object key -> study id, once every uploaded key has its row."""
        deadline = time.time() + WAIT_S
        while (len([k for k, _ in rows_for(self.db, self.bucket) if k in self.keys]) < len(self.keys)
               and time.time() < deadline):
            time.sleep(1)
        with self.db.session() as session:
            found = dict(session.execute(select(Study.object_key, Study.id).where(
                (Study.bucket == self.bucket) & Study.object_key.startswith(self.hospital + "/"))).tuples().all())
        assert set(found) == set(self.keys), "every upload has its study"
        return found


@pytest.fixture()
def ward(pipeline, s3, bucket, mariadb) -> Ward:
    return Ward(s3, bucket, mariadb)


def show_hospital(page, hospital: str) -> None:
    page.locator("#filter-hospital input").click()
    page.get_by_role("option", name=hospital).click()


def cell(page, row: int, col: int):
    return page.locator(f'#worklist [data-testid="cell-{row}-{col}"]')


def image_loaded(page) -> int:
    return page.locator("#study-img").evaluate("img => img.complete ? img.naturalWidth : 0")


def verdicts_of(db, study_id: int) -> list[tuple[str, str, str | None]]:
    with db.session() as session:
        return [tuple(r) for r in session.execute(
            select(User.name, VerdictRow.label, VerdictRow.notes).join(User, User.id == VerdictRow.user_id)
            .where(VerdictRow.study_id == study_id).order_by(VerdictRow.id))]


def test_nothing_of_a_patient_without_a_session_or_key(pipeline, ward, mariadb) -> None:
    """The page, Gradio's config, API, file, upload and queue routes, the study pictures and the HTTP API:
    refused without login, and no response carries a patient's name or the security headers are missing."""
    [key] = ward.upload(1)
    study_id = ward.wait_rows()[key]
    name = ward.keys[key].patient_name
    url = pipeline.url
    page = requests.get(f"{url}/ui/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    login_page = requests.get(f"{url}/ui/", headers={"Accept": "text/html"}, timeout=30)  # to the login page
    assert login_page.status_code == 200 and "Log in" in login_page.text and name not in login_page.text
    refused = [("get", "/ui/"), ("get", "/ui/config"), ("get", "/ui/gradio_api/info"),
               ("post", "/ui/gradio_api/queue/join"), ("get", "/ui/gradio_api/queue/data?session_hash=x"),
               ("post", "/ui/gradio_api/upload"), ("get", "/ui/gradio_api/file=/etc/hostname"),
               ("post", "/ui/gradio_api/run/predict"), ("get", "/ui/theme.css"),
               ("get", f"/review/studies/{study_id}/image"), ("get", f"/review/studies/{study_id}/heatmap"),
               ("get", "/v1/model"), ("post", "/v1/predict"), ("post", "/v1/predict/batch"),
               ("get", "/docs"), ("get", "/openapi.json")]
    api_key = new_api_key(mariadb)
    for method, path in refused:
        answer = requests.request(method, f"{url}{path}", data=b"{}", timeout=30, allow_redirects=False)
        assert answer.status_code == 401, (path, answer.status_code)
        assert name not in answer.text and answer.json()["error"] == "login_required"
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        if not path.startswith(("/v1/", "/docs", "/openapi")):  # an API key opens the API, not the app
            keyed = requests.request(method, f"{url}{path}", data=b"{}", allow_redirects=False, timeout=30,
                                     headers={"Authorization": f"Bearer {api_key}"})
            assert keyed.status_code == 401, (path, keyed.status_code)
    keyed = requests.get(f"{url}/v1/model", headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    assert keyed.status_code == 200 and keyed.json()["version"]
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200  # probes need no login

    # Logged in, the page and its config still carry no patient data: it loads in an event, after login.
    doctor, password = new_account(mariadb, hospitals=[ward.hospital])
    browser_like = requests.Session()
    assert browser_like.post(f"{url}/login", data={"username": doctor, "password": password},
                             timeout=30).status_code == 200
    for path in ("/ui/", "/ui/config"):
        answer = browser_like.get(f"{url}{path}", timeout=30)
        assert answer.status_code == 200 and name not in answer.text and ward.hospital not in answer.text


def test_a_doctor_reviews_by_clicking_and_a_second_doctor_keeps_the_first_verdict(pipeline, ward, mariadb,
                                                                                    browser, settings) -> None:
    from playwright.sync_api import expect

    ward.upload(3)
    ward.wait_rows()
    doc_a, pw_a = new_account(mariadb, hospitals=[ward.hospital])
    doc_b, pw_b = new_account(mariadb, hospitals=[ward.hospital])
    shots = settings.STATE_DIR / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = context.new_page()
    page.goto(f"{pipeline.url}/ui/")
    page.get_by_label("Username").fill(doc_a)
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-message")).to_contain_text("Wrong username or password")
    page.get_by_label("Password").fill(pw_a)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#signed-in")).to_contain_text(doc_a, timeout=30000)
    expect(page.locator("#synthetic-notice")).to_contain_text("synthetic")
    expect(cell(page, 0, 0)).not_to_be_empty(timeout=30000)
    page.screenshot(path=str(shots / "review-worklist.png"), full_page=True)  # every hospital's studies
    show_hospital(page, ward.hospital)
    expect(page.locator("#page-info")).to_contain_text("3 studies", timeout=30000)

    # The top study, opened by clicking its row.
    with mariadb.session() as session:
        top = session.scalar(select(Study).where(Study.hospital == ward.hospital)
                             .order_by(Study.band_rank, Study.score.desc(), Study.id).limit(1))
        top_id, top_name, top_score = top.id, top.patient_name, top.score
    expect(cell(page, 0, 0)).to_have_text(str(top_id))
    cell(page, 0, 6).click()
    details = page.locator("#study-details")
    expect(details).to_contain_text(f"Study {top_id}", timeout=30000)
    expect(details).to_contain_text(top_name)
    expect(details).to_contain_text(f"{top_score:.3f}")
    expect(details).to_contain_text("synthetic")
    expect(page.locator("#study-img")).to_have_attribute("src", f"/review/studies/{top_id}/image")
    page.wait_for_function("() => { const i = document.querySelector('#study-img'); return i && i.naturalWidth > 0 }")
    width = image_loaded(page)
    assert width == SIDE, "the full-resolution image, not a thumbnail"

    # The heatmap, toggled over the image and off again.
    page.locator("#heatmap-toggle input").check()
    expect(page.locator("#study-img")).to_have_attribute("src", f"/review/studies/{top_id}/heatmap",
                                                         timeout=30000)
    page.wait_for_function("() => { const i = document.querySelector('#study-img');"
                           " return i && i.src.endsWith('/heatmap') && i.naturalWidth > 0 }", timeout=120000)
    assert image_loaded(page) == width, "the heatmap lies over the image at its full size"
    page.screenshot(path=str(shots / "review-study-heatmap.png"), full_page=True)
    page.locator("#heatmap-toggle input").uncheck()
    expect(page.locator("#study-img")).to_have_attribute("src", f"/review/studies/{top_id}/image")

    # A verdict, seen in the worklist with who recorded it.
    page.locator("#verdict-choice").get_by_label("Pneumonia", exact=True).check()
    page.locator("#verdict-notes textarea").fill("right lower lobe consolidation")
    page.locator("#record-verdict").click()
    expect(page.locator("#verdict-message")).to_contain_text(f"Saved: Pneumonia on study {top_id}", timeout=30000)
    expect(page.locator("#verdict-history")).to_contain_text(doc_a)
    assert verdicts_of(mariadb, top_id) == [(doc_a, "Pneumonia", "right lower lobe consolidation")]
    # Reviewed studies go after the unreviewed ones: the top study is now the last row, marked as reviewed.
    expect(cell(page, 2, 0)).to_have_text(str(top_id), timeout=30000)
    expect(cell(page, 2, 1)).to_contain_text(f"{doc_a} (Pneumonia)")
    expect(cell(page, 0, 1)).to_have_text("Unreviewed")

    # A second doctor, in a browser of their own, opens the same study and disagrees: both verdicts are kept.
    other = browser.new_context(viewport={"width": 1600, "height": 1100})
    page_b = other.new_page()
    log_in(page_b, pipeline.url, doc_b, pw_b)
    show_hospital(page_b, ward.hospital)
    page_b.locator("#filter-status").get_by_label("Reviewed", exact=True).check()
    expect(page_b.locator("#page-info")).to_contain_text("1 studies", timeout=30000)
    cell(page_b, 0, 0).click()
    expect(page_b.locator("#verdict-history")).to_contain_text(f"{doc_a}: Pneumonia", timeout=30000)
    page_b.locator("#verdict-choice").get_by_label("Normal", exact=True).check()
    page_b.locator("#record-verdict").click()
    expect(page_b.locator("#verdict-message")).to_contain_text("Saved: Normal", timeout=30000)
    history = page_b.locator("#verdict-history")
    expect(history).to_contain_text(f"{doc_a}: Pneumonia")
    expect(history).to_contain_text(f"{doc_b}: Normal")
    expect(cell(page_b, 0, 1)).to_contain_text(f"{doc_b} (Normal)", timeout=30000)
    expect(cell(page_b, 0, 1)).to_contain_text(f"{doc_a} (Pneumonia)")

    # The first doctor changes their mind: a new verdict, the first one kept, the other doctor's told.
    page.locator("#verdict-choice").get_by_label("Not diagnostic", exact=True).check()
    page.locator("#record-verdict").click()
    expect(page.locator("#verdict-message")).to_contain_text(f"Meanwhile {doc_b} recorded Normal", timeout=30000)
    assert [v[:2] for v in verdicts_of(mariadb, top_id)] == [
        (doc_a, "Pneumonia"), (doc_b, "Normal"), (doc_a, "Not diagnostic")]

    # The audit trail has both doctors' openings and verdicts, by study id.
    trail = subprocess.run([str(ROOT / ".venv/bin/xraylab"), "audit", "--study", str(top_id), "--database",
                            "mariadb"], capture_output=True, text=True, timeout=120)
    assert trail.returncode == 0, trail.stderr
    lines = trail.stdout.splitlines()
    assert sum(f"\t{doc_a}\topen_study\tstudy={top_id}" in line for line in lines) >= 1
    assert sum(f"\t{doc_b}\topen_study\tstudy={top_id}" in line for line in lines) >= 1
    assert [line.split("\t")[1] for line in lines if "\tverdict\t" in line] == [doc_a, doc_b, doc_a]
    assert top_name not in trail.stdout, "the trail names doctors and study ids, not patients"
    other.close()
    context.close()


def test_a_session_that_ends_mid_verdict_loses_nothing(pipeline, ward, mariadb, browser) -> None:
    from playwright.sync_api import expect

    [key] = ward.upload(1)
    study_id = ward.wait_rows()[key]
    name, password = new_account(mariadb, hospitals=[ward.hospital])
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    log_in(page, pipeline.url, name, password)
    show_hospital(page, ward.hospital)
    cell(page, 0, 0).click()
    expect(page.locator("#study-details")).to_contain_text(f"Study {study_id}", timeout=30000)
    page.locator("#verdict-choice").get_by_label("Pneumonia", exact=True).check()
    page.locator("#verdict-notes textarea").fill("typed before the session ended")
    with mariadb.session() as session:  # as after the idle timeout, or a `xraylab users disable` elsewhere
        user_id = session.scalar(select(User.id).where(User.name == name))
        session.execute(update(UserSession).where(UserSession.user_id == user_id).values(ended=True))
    page.locator("#record-verdict").click()
    expect(page.locator("#session-expired")).to_contain_text("Your session has expired", timeout=30000)
    assert verdicts_of(mariadb, study_id) == []
    expect(page.locator("#verdict-notes textarea")).to_have_value("typed before the session ended")

    # Logged in again in another tab, the same button in the same page saves what was typed.
    relogin = context.new_page()
    log_in(relogin, pipeline.url, name, password)
    relogin.close()
    page.locator("#session-expired button").click()
    page.locator("#record-verdict").click()
    expect(page.locator("#verdict-message")).to_contain_text("Saved: Pneumonia", timeout=30000)
    assert verdicts_of(mariadb, study_id) == [(name, "Pneumonia", "typed before the session ended")]
    context.close()


def test_gone_images_deleted_studies_and_live_refresh(pipeline, ward, mariadb, browser, s3) -> None:
    from playwright.sync_api import expect

    keys = ward.upload(2)
    ids = ward.wait_rows()
    name, password = new_account(mariadb, hospitals=[ward.hospital])
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    log_in(page, pipeline.url, name, password)
    show_hospital(page, ward.hospital)
    expect(page.locator("#page-info")).to_contain_text("2 studies", timeout=30000)

    # An image deleted from its store: the study still opens, and says so.
    gone = keys[0]
    s3.delete_object(Bucket=ward.bucket, Key=gone)
    row = next(r for r in range(2) if cell(page, r, 0).inner_text().strip() == str(ids[gone]))
    cell(page, row, 0).click()
    expect(page.locator("#image-missing")).to_contain_text("no longer in its store", timeout=30000)
    expect(page.locator("#study-details")).to_contain_text(f"Study {ids[gone]}")
    assert requests.get(f"{pipeline.url}/review/studies/{ids[gone]}/image", timeout=30,
                        cookies={c["name"]: c["value"] for c in context.cookies()}).status_code == 410

    # A study deleted while it is open: the verdict is refused with a message, nothing half-written.
    kept = keys[1]
    row = next(r for r in range(2) if cell(page, r, 0).inner_text().strip() == str(ids[kept]))
    cell(page, row, 0).click()
    expect(page.locator("#study-details")).to_contain_text(f"Study {ids[kept]}", timeout=30000)
    with mariadb.session() as session:  # as an administrator's erasure does: the database cascades
        session.execute(delete(Study).where(Study.id == ids[kept]))
    page.locator("#verdict-choice").get_by_label("Normal", exact=True).check()
    page.locator("#record-verdict").click()
    expect(page.locator("#verdict-message")).to_contain_text("no longer exists", timeout=30000)
    assert verdicts_of(mariadb, ids[kept]) == []

    # Live refresh: a new upload shows up in the open worklist without a click.
    ward.upload(1)
    ward.keys.pop(kept)
    fresh_ids = ward.wait_rows()
    expect(page.locator("#page-info")).to_contain_text("2 studies", timeout=60000)  # one deleted, one new
    new_id = max(fresh_ids.values())
    expect(page.locator("#worklist")).to_contain_text(str(new_id), timeout=60000)
    context.close()


def test_login_is_throttled_after_repeated_failures(pipeline, mariadb, browser) -> None:
    from playwright.sync_api import expect

    name, password = new_account(mariadb)
    page = browser.new_page()
    page.goto(f"{pipeline.url}/login")
    for attempt in range(5):
        page.get_by_label("Username").fill(name)
        page.get_by_label("Password").fill(f"guess number {attempt}")
        page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-message")).to_contain_text("Too many failed attempts")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(password)  # the right one, too late
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-message")).to_contain_text("Too many failed attempts")
    assert "/ui/" not in page.url
    page.close()
    with mariadb.session() as session:
        throttle = session.get(LoginThrottle, name)
        assert throttle.locked_until is not None and throttle.failures == 5


def test_doctors_see_only_their_hospitals_and_a_network_reader_sees_both(pipeline, s3, bucket, mariadb,
                                                                          browser) -> None:
    """Two doctors of two hospitals, each in their own browser, list and open only their own studies: a study of
    the other hospital answers exactly as one that does not exist, by id and by picture URL. A reader with the
    network-wide grant sees both; an admin without a grant sees none. Every worklist page shown is audited with
    the study ids it listed, so that `xraylab audit --patient` tells who saw a patient."""
    from playwright.sync_api import expect

    from xraylab.db.review import audit_trail

    north, south = Ward(s3, bucket, mariadb), Ward(s3, bucket, mariadb)
    [north_key], [south_key] = north.upload(1), south.upload(1)
    north_id, south_id = north.wait_rows()[north_key], south.wait_rows()[south_key]
    north_name, south_name = north.keys[north_key].patient_name, south.keys[south_key].patient_name
    doc_north, pw_north = new_account(mariadb, hospitals=[north.hospital])
    doc_south, pw_south = new_account(mariadb, hospitals=[south.hospital])
    reader, pw_reader = new_account(mariadb, network=True)
    admin, pw_admin = new_account(mariadb, role="admin", prefix="admin")

    def open_by_id(page, study_id: int) -> dict:
        return {kind: (answer.status, answer.json()) for kind in ("image", "heatmap")
                for answer in [page.request.get(f"{pipeline.url}/review/studies/{study_id}/{kind}")]}

    for doctor, password, own, other in ((doc_north, pw_north, north, south), (doc_south, pw_south, south, north)):
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        page = context.new_page()
        log_in(page, pipeline.url, doctor, password)
        expect(page.locator("#reads")).to_contain_text(own.hospital)
        page.locator("#filter-hospital input").click()
        options = page.get_by_role("option")
        expect(options).to_have_count(2)  # All and their own hospital
        assert sorted(t.replace("✓", "").strip() for t in options.all_inner_texts()) == sorted(["All", own.hospital])
        page.keyboard.press("Escape")
        expect(page.locator("#page-info")).to_contain_text("1 studies")
        own_id, other_id = own.wait_rows()[next(iter(own.keys))], other.wait_rows()[next(iter(other.keys))]
        expect(page.locator("#worklist")).to_contain_text(own.keys[next(iter(own.keys))].patient_name)
        body = page.content()
        assert other.keys[next(iter(other.keys))].patient_name not in body and other.hospital not in body
        cell(page, 0, 0).click()
        expect(page.locator("#study-details")).to_contain_text(f"Study {own_id}", timeout=30000)
        # The other hospital's study, asked for by its id, is as absent as an id that never existed.
        outside, missing = open_by_id(page, other_id), open_by_id(page, 9_999_999)
        assert {k: v[0] for k, v in outside.items()} == {"image": 404, "heatmap": 404}
        assert outside["image"][1] == {"error": "no_such_study",
                                      "detail": f"study {other_id} does not exist (or was deleted)"}
        assert {k: (v[0], v[1]["error"]) for k, v in outside.items()} == \
               {k: (v[0], v[1]["error"]) for k, v in missing.items()}
        assert page.request.get(f"{pipeline.url}/review/studies/{own_id}/image").status == 200
        context.close()

    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    log_in(page, pipeline.url, reader, pw_reader)
    expect(page.locator("#reads")).to_contain_text("every hospital")
    for ward, study_id, name in ((north, north_id, north_name), (south, south_id, south_name)):
        show_hospital(page, ward.hospital)
        expect(page.locator("#worklist")).to_contain_text(name, timeout=30000)
        assert page.request.get(f"{pipeline.url}/review/studies/{study_id}/image").status == 200
    context.close()

    context = browser.new_context()
    page = context.new_page()
    log_in(page, pipeline.url, admin, pw_admin)
    expect(page.locator("#page-info")).to_contain_text("reads no hospital")
    assert north_name not in page.content() and south_name not in page.content()
    assert page.request.get(f"{pipeline.url}/review/studies/{north_id}/image").status == 404
    context.close()

    with mariadb.session() as session:
        trail = audit_trail(session, patient_id=north.keys[north_key].patient_id)
    saw_north = {(e["user"], e["action"]) for e in trail}
    assert (doc_north, "list_worklist") in saw_north and (doc_north, "open_study") in saw_north
    assert (reader, "list_worklist") in saw_north
    assert not any(user in (doc_south, admin) for user, _ in saw_north)


def test_directory_doctors_sign_in_through_slapd_and_a_disabled_one_cannot(pipeline, s3, bucket, mariadb,
                                                                            browser) -> None:
    """The local stack's OpenLDAP (cluster/local/slapd.sh): dr.north signs in with the directory's password and
    reads the hospital its group maps to (northgate), nothing else; dr.disabled, locked in the directory, is
    refused as a wrong password is; a local account keeps working beside them."""
    from playwright.sync_api import expect

    from tests.accounts import directory_demo_password
    from xraylab.db.models import User as UserRow

    password = directory_demo_password()
    elsewhere = Ward(s3, bucket, mariadb)
    [key] = elsewhere.upload(1)
    outside_id = elsewhere.wait_rows()[key]

    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    log_in(page, pipeline.url, "dr.north", password)
    expect(page.locator("#reads")).to_contain_text("northgate")
    page.locator("#filter-hospital input").click()
    assert sorted(t.replace("✓", "").strip() for t in page.get_by_role("option").all_inner_texts()) == \
        ["All", "northgate"]
    page.keyboard.press("Escape")
    assert page.request.get(f"{pipeline.url}/review/studies/{outside_id}/image").status == 404
    assert elsewhere.keys[key].patient_name not in page.content()
    context.close()
    with mariadb.session() as session:
        row = session.scalar(select(UserRow).where(UserRow.name == "dr.north"))
        assert row.source == "directory" and row.role == "doctor" and not row.network_reader
        assert [h.hospital for h in row.hospitals] == ["northgate"]

    page = browser.new_page()
    page.goto(f"{pipeline.url}/login")
    page.get_by_label("Username").fill("dr.disabled")
    page.get_by_label("Password").fill(password)  # the right password of a disabled directory account
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-message")).to_contain_text("Wrong username or password")
    assert "/ui/" not in page.url
    local, local_password = new_account(mariadb, hospitals=[elsewhere.hospital])
    page.close()
    page = browser.new_context().new_page()
    log_in(page, pipeline.url, local, local_password)  # break-glass and small sites: local accounts still work
    expect(page.locator("#reads")).to_contain_text(elsewhere.hospital)
    page.close()


def test_a_forwarded_header_cannot_reset_the_address_limit_on_the_ingress(pipeline, mariadb) -> None:
    """On the Serve ingress (uvicorn in Serve, FORWARDED_ALLOW_IPS empty): failures sent with made-up
    X-Forwarded-For addresses all count on the real peer, and a new made-up address does not reset the limit.
    A browser with the device cookie of its account still signs in. (Last in this module: it spends the
    address's failures for the next 10 minutes.)"""
    from xraylab.settings import load_settings

    url = pipeline.url
    doctor, password = new_account(mariadb)
    known = requests.Session()
    assert known.post(f"{url}/login", data={"username": doctor, "password": password}, allow_redirects=False,
                      timeout=30).status_code == 303
    limit = load_settings().LOGIN_IP_MAX_FAILURES
    answers = [requests.post(f"{url}/login", data={"username": f"ghost-{i}", "password": "guess"}, timeout=30,
                             headers={"X-Forwarded-For": f"203.0.113.{i % 250}"}).status_code for i in range(limit)]
    assert answers.count(401) == len(answers) - answers.count(429)
    refused = requests.post(f"{url}/login", data={"username": doctor, "password": password}, timeout=30,
                            headers={"X-Forwarded-For": "198.51.100.8"}, allow_redirects=False)
    assert refused.status_code == 429 and "from this address" in refused.text
    again = known.post(f"{url}/login", data={"username": doctor, "password": password}, allow_redirects=False,
                       timeout=30)
    assert again.status_code == 303  # the doctor's own browser is not shut out
