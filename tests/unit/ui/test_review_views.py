"""The review app's HTML: values from outside shown as written, the worklist's sortable headers and focusable
rows, the reading panel the viewer mounts into, and the viewer's own files served by the app."""

from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ui.review_views import (
    OPEN_A_STUDY,
    WORKLIST_COLUMNS,
    history_html,
    next_sort,
    priors_html,
    reading_html,
    worklist_html,
)
from ui.viewer_assets import VIEWER_SCRIPT, viewer_router

ROW = {"id": 12, "status": "Unreviewed", "band": "Pneumonia", "score_label": "0.910", "hospital": "north",
       "patient_name": "<script>alert(1)</script>", "patient_id": "P&1", "age_sex": "34 y / F",
       "accession_number": "A-77", "study_description": "CHEST **PA**", "study_date": "2026-11-02"}


def test_the_worklist_is_a_table_of_focusable_rows_with_every_value_escaped() -> None:
    text = worklist_html([ROW], "priority", False)
    assert "<tr data-study='12' tabindex='0'" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert "<td>P&amp;1</td>" in text and "<td>CHEST **PA**</td>" in text and "<td>A-77</td>" in text
    assert "<input" not in text  # read only: nothing to edit
    assert text.count("<th scope='col'") == len(WORKLIST_COLUMNS)
    empty = worklist_html([], "priority", False, empty="No studies listed: fix the filter above.")
    assert "data-study" not in empty.split("</thead>")[1] and "fix the filter above" in empty


def test_the_sorted_column_says_its_direction_and_a_click_turns_it() -> None:
    text = worklist_html([ROW], "score", True)
    assert "<th scope='col' data-sort='score' aria-sort='descending'>" in text and "Score ▼" in text
    assert text.count("aria-sort") == 1
    assert next_sort("priority", False, "score") == ("score", True)  # scores: highest first
    assert next_sort("score", True, "score") == ("score", False)  # the same column turns round
    assert next_sort("score", False, "patient") == ("patient", False)  # names: A to Z first
    assert next_sort("score", False, "drop table") == ("score", False)  # unknown: as it was


def test_notes_are_shown_exactly_as_typed() -> None:
    typed = "**x** [link](javascript:alert(1))\n<b>second line</b>"
    text = history_html([{"created_at": datetime(2026, 12, 1, 9, 30, tzinfo=UTC), "doctor": "dr.a",
                          "label": "Pneumonia", "notes": typed}])
    assert "<div class='note'>**x** [link](javascript:alert(1))\n&lt;b&gt;second line&lt;/b&gt;</div>" in text
    assert "2026-12-01 09:30 UTC" in text and "<a " not in text


def test_the_reading_panel_carries_what_the_viewer_loads_and_says_what_stands_in_for_a_film() -> None:
    panel = reading_html(12, "ok", pixels="/review/studies/12/pixels", heat="/review/studies/12/heatmap-layer",
                         caption="Study 12 <x>", scale_css="linear-gradient(90deg,#000,#fff)", scale_text="low to high")
    assert "class='xv-root' data-study='12' data-pixels='/review/studies/12/pixels'" in panel
    assert "data-heat='/review/studies/12/heatmap-layer'" in panel and "Study 12 &lt;x&gt;" in panel
    assert OPEN_A_STUDY in reading_html(None, "ok")
    assert "no longer in its store" in reading_html(3, "gone") and "xv-root" not in reading_html(3, "gone")
    assert "replaced in its store" in reading_html(3, "changed")
    assert "does not answer" in reading_html(3, None)


def test_priors_open_beside_the_film() -> None:
    priors = [{"id": 5, "study_date": "2026-10-01", "band": "Normal", "score": 0.12, "reviewed": True,
               "study_description": "<CHEST>"}]
    text = priors_html(priors, lambda i: f"/review/studies/{i}/pixels")
    assert "data-prior-pixels='/review/studies/5/pixels'" in text and "Study 5 · 2026-10-01 · Normal 0.12" in text
    assert "&lt;CHEST&gt;" in text and "reviewed" in text
    assert "No prior studies" in priors_html([], str)


def test_the_viewer_script_and_the_icon_are_served_by_the_app(tmp_path: Path) -> None:
    app = FastAPI()
    app.include_router(viewer_router(tmp_path))
    client = TestClient(app)
    missing = client.get(VIEWER_SCRIPT)
    assert missing.status_code == 404 and "scripts/build-viewer.sh" in missing.json()["detail"]
    (tmp_path / "xraylab-viewer.js").write_text("window.built = true;")
    served = client.get(VIEWER_SCRIPT)
    assert served.status_code == 200 and served.text == "window.built = true;"
    assert served.headers["content-type"].startswith("text/javascript")
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
