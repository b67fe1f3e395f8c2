"""The doctors' review app, mounted on the Serve ingress, driven in headless Chromium as a doctor uses it:
log in, filter the worklist, open a study by clicking its row, toggle the Grad-CAM heatmap, record verdicts
(two doctors, a change of mind, a session that ends mid-verdict), and every data route refused without a
session or an API key; and a reading session from the keyboard on DICOM films (issue 31). Screenshots of the
worklist and of the reading view land in the state dir."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from sqlalchemy import delete, func, select, update

from ingest.uploader import upload_study
from tests.accounts import new_account, new_api_key
from tests.e2e.browser import log_in
from tests.e2e.observe import rows_for
from xraylab.db.models import Heatmap, LoginThrottle, Study, User, UserSession, VerdictRow
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


@pytest.fixture(scope="module")
def pipeline(settings, mariadb):
    """The module's pipeline, with the ingress computing Grad-CAM maps ahead (scripts/test.sh turns that off for
    the other suites), as a site runs it."""
    from tests.e2e.conftest import running_pipeline

    with pytest.MonkeyPatch.context() as env:  # the workers take the settings from this process's environment
        env.setenv("XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S", "2")
        yield from running_pipeline(settings)


@pytest.fixture()
def ward(pipeline, s3, bucket, mariadb) -> Ward:
    return Ward(s3, bucket, mariadb)


def show_hospital(page, hospital: str) -> None:
    page.locator("#hospital-select").select_option(hospital)


def hospital_choices(page) -> list[str]:
    return page.locator("#hospital-select option").all_inner_texts()


def row(page, index: int):
    return page.locator("#worklist-table tbody tr[data-study]").nth(index)


def cell(page, index: int, col: int):
    return row(page, index).locator("td").nth(col)


def to_worklist(page) -> None:
    page.locator("#to-worklist").click()
    row(page, 0).wait_for(state="visible")


def viewer_ready(page, timeout: int = 60000) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector("#reading-panel .xv-root[data-state='ready']", timeout=timeout)
    except PlaywrightTimeout:
        panel = page.locator("#reading-panel").inner_text()
        raise AssertionError(f"the viewer did not show the film: {panel[:500]!r}") from None


def viewer_state(page, pane: str = "main") -> dict:
    """What the viewer's pane shows now: window, level, invert, scale (screen pixels per image pixel), size."""
    return page.evaluate(f"() => window.xraylabViewer.panes['{pane}'].state()")


def heat_drawn(page) -> int:
    """How many of the Grad-CAM canvas's pixels are not transparent."""
    return page.evaluate("""() => { const c = document.querySelector('.xv-pane-main .xv-heat');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")


def verdicts_of(db, study_id: int) -> list[tuple[str, str, str | None]]:
    with db.session() as session:
        return [tuple(r) for r in session.execute(
            select(User.name, VerdictRow.label, VerdictRow.notes).join(User, User.id == VerdictRow.user_id)
            .where(VerdictRow.study_id == study_id).order_by(VerdictRow.id))]


def pages_listed(db, user: str) -> list[str]:
    """The worklist pages ``user`` was shown on asking (their audit lines; refreshes left out)."""
    from xraylab.db.review import audit_trail

    with db.session() as session:
        return [e["detail"] or "" for e in audit_trail(session, user_name=user)
                if e["action"] == "list_worklist" and "(refresh)" not in (e["detail"] or "")]


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
                                                                                    browser) -> None:
    from playwright.sync_api import expect

    ward.upload(3)
    ward.wait_rows()
    doc_a, pw_a = new_account(mariadb, hospitals=[ward.hospital])
    doc_b, pw_b = new_account(mariadb, hospitals=[ward.hospital])

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
    viewer_ready(page)
    assert viewer_state(page)["columns"] == SIDE, "the full-resolution image, not a thumbnail"

    # The heatmap layer, toggled over the film by its button and off again by its key.
    page.locator(".xv-btn[data-action='heat']").click()
    page.wait_for_selector(".xv-root[data-heat-on='1']", timeout=120000)
    page.wait_for_function("() => document.querySelector('.xv-root').dataset.heatMs !== undefined")
    assert heat_drawn(page) > 0, "the map is drawn over the film"
    page.keyboard.press("h")
    page.wait_for_selector(".xv-root[data-heat-on='0']")
    assert heat_drawn(page) == 0

    # A verdict, seen in the worklist with who recorded it.
    page.locator("#verdict-choice").get_by_label("Pneumonia", exact=True).check()
    page.locator("#verdict-notes textarea").fill("right lower lobe consolidation")
    page.locator("#record-verdict").click()
    expect(page.locator("#verdict-message")).to_contain_text(f"Saved: Pneumonia on study {top_id}", timeout=30000)
    expect(page.locator("#verdict-history")).to_contain_text(doc_a)
    assert verdicts_of(mariadb, top_id) == [(doc_a, "Pneumonia", "right lower lobe consolidation")]
    # Reviewed studies go after the unreviewed ones: the top study is now the last row, marked as reviewed.
    to_worklist(page)
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
    to_worklist(page_b)
    expect(cell(page_b, 0, 1)).to_contain_text(f"{doc_b} (Normal)", timeout=30000)
    expect(cell(page_b, 0, 1)).to_contain_text(f"{doc_a} (Pneumonia)")

    # The first doctor changes their mind: a new verdict, the first one kept, the other doctor's told.
    page.get_by_role("tab", name="Reading").click()  # the study still open there, as the doctor left it
    expect(page.locator("#study-details")).to_contain_text(f"Study {top_id}")
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


def upload_dicom(ward: Ward, patient_id: str, name: str, day: str, accession: str, pneumonia: bool) -> str:
    """A 12-bit DX (16 bits allocated) of a generated film, as a modality writes it, into the ward's bucket."""
    from datetime import date

    from ingest.dicom_files import ModalityStudy, dicom_bytes

    study = ModalityStudy(hospital=ward.hospital, patient_id=patient_id, patient_name=name,
                          study_date=date.fromisoformat(day), accession=accession, view_position="PA",
                          manufacturer="e2e", birth_date=date(1990, 5, 1))
    key = f"{ward.hospital}/{accession}.dcm"
    pixels = generate_xray(ward.rng, pneumonia, SIDE)
    meta = StudyMetadata(ward.hospital, patient_id, name, day)
    upload_study(ward.s3, ward.bucket, key, dicom_bytes(pixels, study, bits=16), meta,
                 content_type="application/dicom")
    ward.keys[key] = meta
    return key


def cached_maps(db, study_id: int) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Heatmap).where(Heatmap.study_id == study_id))


def pane_pixels(page) -> bytes:
    return page.locator(".xv-pane-main .xv-element").screenshot()


def test_a_radiologist_reads_dicom_films_from_the_keyboard(pipeline, ward, mariadb, browser, settings) -> None:
    """A reading session as issue 31 describes it: DICOM films on their stored bit depth with window/level by
    mouse, wheel zoom, 1:1 and invert; a prior opened beside the film; verdicts from the keyboard alone, each
    opening the next unreviewed study; search and sort; and the small defects each checked. Prints the timings."""
    from playwright.sync_api import expect

    patient = f"P-{uuid.uuid4().hex[:6]}"
    older = upload_dicom(ward, patient, "Reader Anna", "2026-10-02", f"A{uuid.uuid4().hex[:7]}", False)
    newer = upload_dicom(ward, patient, "Reader Anna", "2026-11-20", f"A{uuid.uuid4().hex[:7]}", True)
    [other] = ward.upload(1)
    ids = ward.wait_rows()
    name, password = new_account(mariadb, hospitals=[ward.hospital])
    shots = settings.STATE_DIR / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    assert page.request.get(f"{pipeline.url}/favicon.ico").status == 200

    started = time.perf_counter()
    log_in(page, pipeline.url, name, password)
    row(page, 0).wait_for(state="visible", timeout=30000)
    timings["login to worklist"] = time.perf_counter() - started
    expect(page.locator("#worklist table input")).to_have_count(0)  # a read-only list: no edit frame to click into
    expect(page.locator("#page-next")).to_be_disabled()  # one page: nothing after it

    # The Hospital list offers every hospital whatever it shows, opens only when asked, and a choice by keyboard
    # filters the worklist (it was a list filtered by its own text, left open over the date fields).
    assert hospital_choices(page) == ["All", ward.hospital]
    page.locator("#hospital-select").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("listbox")).to_have_count(0)
    expect(page.get_by_role("option").locator("visible=true")).to_have_count(0)
    show_hospital(page, ward.hospital)
    expect(page.locator("#page-info")).to_contain_text("3 studies", timeout=30000)
    page.screenshot(path=str(shots / "review-worklist.png"))

    # A bad date: said beside the filters; the page line stays, no rows of other filters are left.
    page.locator("#filter-from textarea, #filter-from input").first.fill("2026-13-45")
    page.keyboard.press("Enter")
    expect(page.locator("#filter-warning")).to_contain_text("must be a date", timeout=30000)
    expect(page.locator("#page-info")).to_contain_text("No studies listed")
    expect(page.locator("#worklist-table tbody tr[data-study]")).to_have_count(0)
    page.locator("#filter-from textarea, #filter-from input").first.fill("")
    page.keyboard.press("Enter")
    expect(page.locator("#filter-warning")).to_be_empty(timeout=30000)

    # Search by patient id: the patient's two DICOM studies, sortable by study date. Leaving the date box as it was
    # lists nothing: that list, of the filters before the search, once came back after the search's and replaced it.
    before = len(pages_listed(mariadb, name))
    page.locator("#filter-search textarea, #filter-search input").first.fill(patient.lower())
    page.keyboard.press("Enter")
    expect(page.locator("#page-info")).to_contain_text("2 studies", timeout=30000)
    page.locator("#worklist-table th[data-sort='study_date'] button").click()
    expect(cell(page, 0, 0)).to_have_text(str(ids[newer]), timeout=30000)  # newest first
    expect(page.locator("#worklist-table th[data-sort='study_date']")).to_have_attribute("aria-sort", "descending")
    page.locator("#worklist-table th[data-sort='study_date'] button").click()
    expect(cell(page, 0, 0)).to_have_text(str(ids[older]), timeout=30000)
    searched = pages_listed(mariadb, name)[before:]
    assert len(searched) == 3 and all("search=yes" in line for line in searched), searched  # search, sort, sort
    expect(cell(page, 0, 8)).not_to_have_text("-")  # the accession number
    page.locator("#filter-search textarea, #filter-search input").first.fill("")
    page.keyboard.press("Enter")
    expect(page.locator("#page-info")).to_contain_text("3 studies", timeout=30000)

    # Open the newer DICOM study from the keyboard: Tab onto a row, arrows, Enter.
    target = next(i for i in range(3) if cell(page, i, 0).inner_text().strip() == str(ids[newer]))
    row(page, 0).focus()
    for _ in range(target):
        page.keyboard.press("ArrowDown")
    started = time.perf_counter()
    page.keyboard.press("Enter")
    viewer_ready(page)
    timings["open a study"] = time.perf_counter() - started
    expect(page.locator("#study-details")).to_contain_text(f"Study {ids[newer]}")
    expect(page.get_by_text("Open a study from the worklist")).to_have_count(0)
    state = viewer_state(page)
    assert (state["bits"], state["columns"], state["rows"]) == (12, SIDE, SIDE), "the stored 12 bits, not 8"
    box = page.locator(".xv-pane-main .xv-element").bounding_box()
    assert box["width"] > 800 and box["height"] > 600, f"the film is large by default: {box}"
    form = page.locator("#record-next").bounding_box()
    assert form["y"] + form["height"] < 1000 and form["x"] > box["x"] + box["width"], "the form beside the film"

    # Window/level by dragging: the window changes and so do the pixels on screen.
    before, shown = state, pane_pixels(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    started = time.perf_counter()
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 60, steps=8)
    page.mouse.up()
    page.wait_for_function(f"() => window.xraylabViewer.panes.main.state().window !== {before['window']}")
    timings["window/level drag"] = time.perf_counter() - started
    after = viewer_state(page)
    assert after["window"] != before["window"] and after["level"] != before["level"]
    assert pane_pixels(page) != shown, "window/level changed the pixels shown"
    page.keyboard.press("1")  # the file's own window again
    page.wait_for_function(f"() => Math.abs(window.xraylabViewer.panes.main.state().window - {before['window']}) < 1")

    # Wheel zoom, 1:1, fit, invert.
    page.mouse.move(cx, cy)
    for _ in range(4):  # four notches of the wheel
        page.mouse.wheel(0, -200)
    page.wait_for_function(f"() => window.xraylabViewer.panes.main.state().scale > {before['scale']} * 1.05")
    page.keyboard.press("o")
    page.wait_for_function("() => Math.abs(window.xraylabViewer.panes.main.state().scale - 1) < 0.01")
    page.keyboard.press("f")
    page.wait_for_function(f"() => Math.abs(window.xraylabViewer.panes.main.state().scale - {before['scale']}) < 0.01")
    shown = pane_pixels(page)
    page.keyboard.press("i")
    page.wait_for_function("() => window.xraylabViewer.panes.main.state().invert === true")
    assert pane_pixels(page) != shown
    page.keyboard.press("r")
    page.wait_for_function("() => window.xraylabViewer.panes.main.state().invert === false")

    # The Grad-CAM layer: computed ahead for a Pneumonia/Unsure study (in the cache before any doctor asked for
    # it), with opacity and a colour scale.
    deadline = time.time() + 90
    while not cached_maps(mariadb, ids[newer]) and time.time() < deadline:
        time.sleep(1)
    assert cached_maps(mariadb, ids[newer]) == 1, "the ingress computed the map ahead"
    page.keyboard.press("h")
    page.wait_for_selector(".xv-root[data-heat-on='1']", timeout=120000)
    timings["first Grad-CAM toggle"] = float(page.locator(".xv-root").get_attribute("data-heat-ms")) / 1000
    strong = heat_drawn(page)
    assert strong > 0
    expect(page.locator(".xv-legend")).to_be_visible()
    page.screenshot(path=str(shots / "review-study-heatmap.png"))
    page.keyboard.press("h")
    page.wait_for_selector(".xv-root[data-heat-on='0']")

    # The prior, opened beside the film.
    prior = page.locator(f"#priors button.prior[data-study='{ids[older]}']")
    expect(prior).to_contain_text("2026-10-02")
    prior.click()
    page.wait_for_selector(".xv-pane-prior[data-loaded='1']", timeout=60000)
    assert viewer_state(page, "prior")["bits"] == 12
    page.screenshot(path=str(shots / "review-reading-prior.png"))

    # Notes: a paste over the limit is not cut silently, the counter says so and the server refuses it.
    notes = page.locator("#verdict-notes textarea")
    notes.fill("x" * 2001)
    expect(page.locator("#notes-counter")).to_contain_text("2001 / 2000")
    expect(page.locator("#notes-counter")).to_have_class("over")
    notes.fill("**not bold** [link](javascript:alert(1)) <b>x</b>")  # typed as a doctor might
    notes.press("Escape")

    # Verdicts from the keyboard: P then Enter records and opens the next unreviewed study.
    started = time.perf_counter()
    page.keyboard.press("p")
    page.keyboard.press("Enter")
    expect(page.locator("#verdict-message")).to_contain_text(f"Saved: Pneumonia on study {ids[newer]}",
                                                             timeout=30000)
    expect(page.locator("#verdict-message")).to_contain_text("Opened the next unreviewed study")
    viewer_ready(page)
    timings["verdict and next"] = time.perf_counter() - started
    typed = "**not bold** [link](javascript:alert(1)) <b>x</b>"
    assert verdicts_of(mariadb, ids[newer]) == [(name, "Pneumonia", typed)]
    opened = int(page.locator("#study-details h3").get_attribute("data-study"))
    assert opened in (ids[older], ids[other]) and opened != ids[newer]
    page.keyboard.press("n")
    page.keyboard.press("Enter")
    expect(page.locator("#verdict-message")).to_contain_text(f"Saved: Normal on study {opened}", timeout=30000)
    last = int(page.locator("#study-details h3").get_attribute("data-study"))
    page.keyboard.press("d")
    page.keyboard.press("Enter")
    expect(page.locator("#verdict-message")).to_contain_text("No unreviewed study is left", timeout=30000)
    assert {verdicts_of(mariadb, i)[0][1] for i in (opened, last)} == {"Normal", "Not diagnostic"}

    # The notes as typed, the open study still highlighted in the worklist after the saves.
    page.keyboard.press("w")
    expect(page.locator(f"#worklist-table tr.open[data-study='{last}']")).to_have_count(1, timeout=30000)
    row(page, [cell(page, i, 0).inner_text().strip() for i in range(3)].index(str(ids[newer]))).click()
    history = page.locator("#verdict-history")
    expect(history).to_contain_text(typed, timeout=30000)
    expect(history.locator("b, strong a, a")).to_have_count(0)
    context.close()
    (shots / "reading-timings.json").write_text(json.dumps({k: round(v, 3) for k, v in timings.items()}))


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
    to_worklist(page)
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
    to_worklist(page)
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
        return {kind: (answer.status, answer.json()) for kind in ("image", "heatmap", "pixels", "heatmap-layer")
                for answer in [page.request.get(f"{pipeline.url}/review/studies/{study_id}/{kind}")]}

    for doctor, password, own, other in ((doc_north, pw_north, north, south), (doc_south, pw_south, south, north)):
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        page = context.new_page()
        log_in(page, pipeline.url, doctor, password)
        expect(page.locator("#reads")).to_contain_text(own.hospital)
        assert sorted(hospital_choices(page)) == sorted(["All", own.hospital])  # All and their own hospital
        expect(page.locator("#page-info")).to_contain_text("1 studies")
        own_id, other_id = own.wait_rows()[next(iter(own.keys))], other.wait_rows()[next(iter(other.keys))]
        expect(page.locator("#worklist")).to_contain_text(own.keys[next(iter(own.keys))].patient_name)
        body = page.content()
        assert other.keys[next(iter(other.keys))].patient_name not in body and other.hospital not in body
        cell(page, 0, 0).click()
        expect(page.locator("#study-details")).to_contain_text(f"Study {own_id}", timeout=30000)
        viewer_ready(page)  # the film itself, through the pixels route
        # The other hospital's study, asked for by its id, is as absent as an id that never existed.
        outside, missing = open_by_id(page, other_id), open_by_id(page, 9_999_999)
        assert {k: v[0] for k, v in outside.items()} == {"image": 404, "heatmap": 404, "pixels": 404,
                                                          "heatmap-layer": 404}
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
    from xraylab.db.models import LoginThrottle
    from xraylab.db.models import User as UserRow

    password = directory_demo_password()
    elsewhere = Ward(s3, bucket, mariadb)
    [key] = elsewhere.upload(1)
    outside_id = elsewhere.wait_rows()[key]

    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    log_in(page, pipeline.url, "dr.north", password)
    expect(page.locator("#reads")).to_contain_text("northgate")
    assert sorted(hospital_choices(page)) == ["All", "northgate"]
    assert page.request.get(f"{pipeline.url}/review/studies/{outside_id}/image").status == 404
    assert elsewhere.keys[key].patient_name not in page.content()
    context.close()
    with mariadb.session() as session:
        row = session.scalar(select(UserRow).where(UserRow.name == "dr.north"))
        assert row.source == "directory" and row.role == "doctor" and not row.network_reader
        assert [h.hospital for h in row.hospitals] == ["northgate"]

    with mariadb.session() as session:  # a stack kept between runs counts this account's refusals on: not a lock here
        session.execute(delete(LoginThrottle).where(LoginThrottle.name == "dr.disabled"))
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
