"""What the review app's events do, without Gradio: the table, verdicts by role, the audit of openings."""

from pathlib import Path

import pytest

from tests.accounts import new_account
from ui.review_app import ReviewActions
from xraylab.accounts import AccessPolicy, authenticate
from xraylab.db.crud import record_predictions
from xraylab.db.review import StudyNotFoundError, WorklistFilter, audit_trail
from xraylab.db.session import Database, upgrade_schema
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid
from xraylab.settings import load_settings

POLICY = AccessPolicy.from_settings(load_settings())  # the settings' limits


@pytest.fixture()
def actions(tmp_path: Path) -> ReviewActions:
    settings = load_settings(STATE_DIR=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    db = Database(settings.DATABASE_URL)
    upgrade_schema(db.engine)
    rows = [(StudyRecord(study_uid=study_uid("local", "b", f"k{i}", "e"), endpoint_id="local", bucket="b",
                         object_key=f"k{i}", etag="e",
                         metadata=StudyMetadata("north", f"P{i}", f"Name {i}", "2026-11-02")),
             Verdict(score=s, band="Pneumonia" if s > 0.8 else "Normal", model_version="v9", synthetic_model=True,
                     infer_ms=1.0), None) for i, s in enumerate([0.3, 0.9])]
    with db.session() as session:
        record_predictions(session, rows)
    return ReviewActions(db, settings, images=None)


def principal(actions: ReviewActions, role: str, hospitals: tuple[str, ...] = ("north",)):
    name, password = new_account(actions.db, role=role, hospitals=hospitals)
    with actions.db.session() as session:
        return authenticate(session, name, password, POLICY).principal


def test_table_rows_say_status_band_and_that_the_model_is_synthetic(actions) -> None:
    listing = actions.page(WorklistFilter(), 1, principal(actions, "doctor"))
    table = listing.rows
    assert [row["id"] for row in table] == [2, 1] and table[0]["status"] == "Unreviewed"
    assert table[0]["band"] == "Pneumonia" and table[0]["patient_name"] == "Name 1"
    assert table[0]["score_label"] == "0.900 ⚠"  # unknown model: marked as synthetic
    assert listing.info.startswith("Page 1 of 1 · 2 studies") and listing.info.endswith("UTC")
    assert (listing.page, listing.pages) == (1, 1) and listing.version[0] == 2


def test_doctors_record_verdicts_admins_do_not_and_openings_are_audited(actions) -> None:
    doctor, admin = principal(actions, "doctor"), principal(actions, "admin")
    detail = actions.open(2, doctor)
    assert detail["patient_name"] == "Name 1" and detail["verdicts"] == []
    verdict_id = actions.save_verdict(2, doctor, "Pneumonia", "  lobar  ")
    with pytest.raises(PermissionError, match="only doctors"):
        actions.save_verdict(2, admin, "Normal", "")
    with pytest.raises(StudyNotFoundError):
        actions.open(99, doctor)
    table = actions.page(WorklistFilter(), 1, doctor).rows
    assert table[-1]["id"] == 2 and table[-1]["status"] == f"Reviewed: {doctor.name} (Pneumonia)"
    with actions.db.session() as session:
        trail = audit_trail(session, study_id=2)
    assert [(e["user"], e["action"]) for e in trail] == [(doctor.name, "open_study"), (doctor.name, "verdict"),
                                                         (doctor.name, "list_worklist")]
    assert trail[1]["detail"] == f"Pneumonia (verdict {verdict_id})" and "Name 1" not in str(trail)


def test_every_worklist_page_shown_is_audited_with_its_filters_and_the_studies_it_listed(actions) -> None:
    doctor = principal(actions, "doctor")
    actions.page(WorklistFilter(band="Pneumonia", status="unreviewed"), 1, doctor)
    actions.page(WorklistFilter(), 1, doctor, refresh=True)
    with actions.db.session() as session:
        trail = audit_trail(session, user_name=doctor.name)
        seen_2 = audit_trail(session, study_id=2)
        seen_1 = audit_trail(session, study_id=1)
    listings = [e for e in trail if e["action"] == "list_worklist"]
    assert [e["detail"] for e in listings] == ["page 1/1 of 1 band=Pneumonia status=unreviewed",
                                               "page 1/1 of 2 (refresh)"]
    assert [e["listed"] for e in seen_2 if e["action"] == "list_worklist"] == [[2], [2]]
    assert [e["listed"] for e in seen_1 if e["action"] == "list_worklist"] == [[1]]  # not on the Pneumonia page
    assert "Name" not in str(trail)


def test_a_doctor_of_another_hospital_lists_and_opens_nothing_here(actions) -> None:
    south = principal(actions, "doctor", hospitals=("south",))
    admin = principal(actions, "admin", hospitals=())
    for reader in (south, admin):
        listing = actions.page(WorklistFilter(), 1, reader)
        assert listing.rows == [] and "0 studies" in listing.info
        with pytest.raises(StudyNotFoundError, match="study 2 does not exist"):
            actions.open(2, reader)
    with pytest.raises(StudyNotFoundError):
        actions.save_verdict(2, south, "Normal", "")


def test_a_refresh_redraws_and_audits_only_when_the_readers_own_page_changed(actions) -> None:
    """Activity at a hospital the doctor does not read moves the tables' version but not their page: no redraw
    (which would tell them of it) and no line in their trail; a change on their page redraws and is audited."""
    doctor = principal(actions, "doctor")
    shown = actions.page(WorklistFilter(), 1, doctor).version

    def add(i: int, hospital: str) -> None:
        with actions.db.session() as session:
            record_predictions(session, [(StudyRecord(
                study_uid=study_uid("local", "b", f"n{i}", "e"), endpoint_id="local", bucket="b", object_key=f"n{i}",
                etag="e", metadata=StudyMetadata(hospital, f"Q{i}", f"Other {i}", "2026-11-02")),
                Verdict(score=0.7, band="Unsure", model_version="v9", synthetic_model=True, infer_ms=1.0), None)])

    add(1, "south")
    listing = actions.page(WorklistFilter(), 1, doctor, refresh=True, unless=shown[3])
    version = listing.version
    assert listing.rows is None and listing.info is None and version[0] == shown[0] + 1 and version[3] == shown[3]
    add(2, "north")
    listing = actions.page(WorklistFilter(), 1, doctor, refresh=True, unless=shown[3])
    assert 4 in [row["id"] for row in listing.rows] and "3 studies" in listing.info
    assert listing.version[3] != shown[3]
    with actions.db.session() as session:
        listings = [e["detail"] for e in audit_trail(session, user_name=doctor.name) if e["action"] == "list_worklist"]
    assert listings == ["page 1/1 of 2", "page 1/1 of 3 (refresh)"]
