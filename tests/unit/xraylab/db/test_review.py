"""The worklist's order, filters and paging, verdicts that never overwrite, the audit trail (SQLite)."""

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest

from xraylab.accounts import create_user
from xraylab.db.crud import record_prediction, record_predictions
from xraylab.db.review import (
    InvalidVerdictError,
    StudyNotFoundError,
    WorklistFilter,
    audit_trail,
    hospitals,
    record_audit,
    record_verdict,
    study_detail,
    worklist_page,
    worklist_version,
)
from xraylab.db.scope import EVERY_HOSPITAL
from xraylab.db.session import Database, upgrade_schema
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid


def study(i: int, hospital: str = "north", day: int = 1) -> StudyRecord:
    meta = StudyMetadata(hospital=hospital, patient_id=f"P{i}", patient_name=f"Name {i}",
                         study_date=f"2026-11-{day:02d}")
    return StudyRecord(study_uid=study_uid("local", "b", f"k{i}", "e"), endpoint_id="local", bucket="b",
                       object_key=f"k{i}", etag="e", metadata=meta)


def verdict(score: float, version: str = "v1") -> Verdict:
    band = "Pneumonia" if score > 0.8 else "Unsure" if score >= 0.6 else "Normal"
    return Verdict(score=score, band=band, model_version=version, synthetic_model=True, infer_ms=1.0)


@pytest.fixture()
def doctors(db) -> tuple[int, int]:
    with db.session() as session:
        return (create_user(session, "doc-a", "a long enough password"),
                create_user(session, "doc-b", "another long password"))


def ids(page) -> list[int]:
    return [r["id"] for r in page.rows]


def test_unreviewed_first_then_band_then_score(db, doctors) -> None:
    with db.session() as session:
        written = record_predictions(session, [(study(i), verdict(s), None)
                                               for i, s in enumerate([0.1, 0.95, 0.7, 0.85, 0.65])])
    sid = [w.study_id for w in written]
    with db.session() as session:
        page = worklist_page(session, scope=EVERY_HOSPITAL)
    assert [r["score"] for r in page.rows] == [0.95, 0.85, 0.7, 0.65, 0.1]
    assert [r["band"] for r in page.rows][:2] == ["Pneumonia", "Pneumonia"]
    with db.session() as session:  # the riskiest study reviewed: it goes to the end, showing who reviewed it
        record_verdict(session, sid[1], doctors[0], "Pneumonia", "left lower lobe", scope=EVERY_HOSPITAL)
    with db.session() as session:
        page = worklist_page(session, scope=EVERY_HOSPITAL)
    assert ids(page) == [sid[3], sid[2], sid[4], sid[0], sid[1]]
    assert page.rows[-1]["reviewers"] == {"doc-a": "Pneumonia"} and page.rows[0]["reviewers"] == {}
    assert page.rows[-1]["reviewed"] is True


def test_a_newer_models_score_moves_the_study(db) -> None:
    with db.session() as session:
        a = record_prediction(session, study(1), verdict(0.9, "v1"))
        record_prediction(session, study(2), verdict(0.7, "v1"))
    with db.session() as session:
        assert ids(worklist_page(session, scope=EVERY_HOSPITAL))[0] == a.study_id
        record_prediction(session, study(1), verdict(0.2, "v2"))  # the same study, a new model
    with db.session() as session:
        page = worklist_page(session, scope=EVERY_HOSPITAL)
    assert ids(page)[-1] == a.study_id and page.rows[-1]["model_version"] == "v2"
    assert page.rows[-1]["band"] == "Normal"


def test_filters_and_paging(db, doctors) -> None:
    rows = [(study(i, "north" if i % 2 else "south", day=1 + i % 10), verdict(i / 100), None) for i in range(95)]
    with db.session() as session:
        record_predictions(session, rows)
        assert hospitals(session, scope=EVERY_HOSPITAL) == ["north", "south"]
        first = worklist_page(session, page=1, page_size=10, scope=EVERY_HOSPITAL)
        last = worklist_page(session, page=10, page_size=10, scope=EVERY_HOSPITAL)
        beyond = worklist_page(session, page=99, page_size=10, scope=EVERY_HOSPITAL)
        assert (first.total, first.pages, len(first.rows), len(last.rows)) == (95, 10, 10, 5)
        assert beyond.page == 10 and ids(beyond) == ids(last)  # a page past the end shows the last one
        every = [r["id"] for p in range(1, 11)
                 for r in worklist_page(session, page=p, page_size=10, scope=EVERY_HOSPITAL).rows]
        assert len(every) == len(set(every)) == 95
        north = worklist_page(session, WorklistFilter(hospital="north"), page_size=100, scope=EVERY_HOSPITAL)
        assert north.total == 47 and {r["hospital"] for r in north.rows} == {"north"}
        normal = worklist_page(session, WorklistFilter(band="Normal"), page_size=100, scope=EVERY_HOSPITAL)
        assert normal.total == 60 and {r["band"] for r in normal.rows} == {"Normal"}
        dated = worklist_page(session, WorklistFilter(date_from=date(2026, 11, 3), date_to=date(2026, 11, 4)),
                              page_size=100, scope=EVERY_HOSPITAL)
        assert dated.total == 20 and {r["study_date"] for r in dated.rows} == {"2026-11-03", "2026-11-04"}
        record_verdict(session, first.rows[0]["id"], doctors[1], "Normal", scope=EVERY_HOSPITAL)
        assert worklist_page(session, WorklistFilter(status="reviewed"), scope=EVERY_HOSPITAL).total == 1
        assert worklist_page(session, WorklistFilter(status="unreviewed"), scope=EVERY_HOSPITAL).total == 94
    with pytest.raises(ValueError, match="before it starts"):
        WorklistFilter(date_from=date(2026, 11, 5), date_to=date(2026, 11, 1))
    with pytest.raises(ValueError, match="unknown band"):
        WorklistFilter(band="Maybe")


def test_verdicts_are_kept_side_by_side_and_never_edited(db, doctors) -> None:
    with db.session() as session:
        sid = record_prediction(session, study(1), verdict(0.9)).study_id
        before = worklist_version(session)
        first = record_verdict(session, sid, doctors[0], "Pneumonia", "consolidation", scope=EVERY_HOSPITAL)
        record_verdict(session, sid, doctors[1], "Normal", scope=EVERY_HOSPITAL)
        record_verdict(session, sid, doctors[0], "Not diagnostic", "rotated film",  # a change of mind
                       scope=EVERY_HOSPITAL)
        assert worklist_version(session) != before
    with db.session() as session:
        detail = study_detail(session, sid, scope=EVERY_HOSPITAL)
        page = worklist_page(session, scope=EVERY_HOSPITAL)
    history = detail["verdicts"]
    assert [(v["doctor"], v["label"]) for v in history] == [
        ("doc-a", "Pneumonia"), ("doc-b", "Normal"), ("doc-a", "Not diagnostic")]
    assert history[0]["id"] == first and history[0]["notes"] == "consolidation"
    assert history[0]["model_version"] == "v1" and history[0]["score"] == pytest.approx(0.9)
    assert detail["verdict_count"] == 3
    assert page.rows[0]["reviewers"] == {"doc-a": "Not diagnostic", "doc-b": "Normal"}


def test_two_doctors_at_the_same_moment_both_kept(db, doctors) -> None:
    with db.session() as session:
        sid = record_prediction(session, study(1), verdict(0.9)).study_id

    def save(i: int) -> int:
        return db.in_transaction(lambda s: record_verdict(s, sid, doctors[i % 2], "Pneumonia", f"n{i}",
                                                          scope=EVERY_HOSPITAL))

    with ThreadPoolExecutor(4) as pool:
        saved = list(pool.map(save, range(8)))
    with db.session() as session:
        detail = study_detail(session, sid, scope=EVERY_HOSPITAL)
    assert len(set(saved)) == 8 and len(detail["verdicts"]) == 8 and detail["verdict_count"] == 8


def test_bad_verdicts_and_missing_studies_are_refused(db, doctors) -> None:
    with db.session() as session:
        sid = record_prediction(session, study(1), verdict(0.9)).study_id
    with db.session() as session, pytest.raises(InvalidVerdictError, match="unknown verdict"):
        record_verdict(session, sid, doctors[0], "Probably fine", scope=EVERY_HOSPITAL)
    with db.session() as session, pytest.raises(InvalidVerdictError, match="at most"):
        record_verdict(session, sid, doctors[0], "Normal", "x" * 5000, scope=EVERY_HOSPITAL)
    with db.session() as session, pytest.raises(StudyNotFoundError, match="does not exist"):
        record_verdict(session, 12345, doctors[0], "Normal", scope=EVERY_HOSPITAL)
    with db.session() as session, pytest.raises(StudyNotFoundError):
        study_detail(session, 12345, scope=EVERY_HOSPITAL)
    with db.session() as session:
        assert study_detail(session, sid, scope=EVERY_HOSPITAL)["verdicts"] == []


def test_audit_trail_per_study_and_user(db) -> None:
    with db.session() as session:
        record_audit(session, "doc-a", "open_study", 7)
        record_audit(session, "doc-a", "verdict", 7, "Pneumonia")
        record_audit(session, "doc-b", "open_study", 8)
        record_audit(session, "doc-a", "login")
    with db.session() as session:
        trail = audit_trail(session, study_id=7)
        mine = audit_trail(session, user_name="doc-a")
    assert [(e["user"], e["action"], e["detail"]) for e in trail] == [
        ("doc-a", "open_study", None), ("doc-a", "verdict", "Pneumonia")]
    assert [e["action"] for e in mine] == ["open_study", "verdict", "login"]


def test_migration_gives_existing_studies_the_worklist_keys_of_their_latest_prediction(tmp_path: Path) -> None:
    from sqlalchemy import text

    old = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_schema(old.engine, "0001")
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO studies (id, study_uid, endpoint_id, bucket, object_key, received_at) VALUES "
                          "(1, 'a', 'local', 'b', 'k1', '2026-11-01'), (2, 'b', 'local', 'b', 'k2', '2026-11-01')"))
        conn.execute(text("INSERT INTO predictions (study_id, model_version, score, band, created_at) VALUES "
                          "(1, 'v1', 0.9, 'Pneumonia', '2026-11-01'), (1, 'v2', 0.3, 'Normal', '2026-11-02'), "
                          "(2, 'v1', 0.7, 'Unsure', '2026-11-01')"))
    upgrade_schema(old.engine)
    with old.session() as session:
        page = worklist_page(session, scope=EVERY_HOSPITAL)
    assert [(r["id"], r["band"], r["score"], r["model_version"]) for r in page.rows] == [
        (2, "Unsure", 0.7, "v1"), (1, "Normal", 0.3, "v2")]
    assert all(r["reviewed"] is False and r["verdict_count"] == 0 for r in page.rows)
    old.dispose()


def test_downgrade_and_upgrade_again_keep_every_prediction(db) -> None:
    from xraylab.db.crud import count_rows

    with db.session() as session:
        record_predictions(session, [(study(i), verdict(0.5), None) for i in range(3)])
    from alembic import command

    from xraylab.db.session import _alembic_config

    config = _alembic_config()  # down to the previous schema (the downgrade drops the review tables' data)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    upgrade_schema(db.engine)
    with db.session() as session:
        assert count_rows(session) == {"studies": 3, "predictions": 3}
        assert worklist_page(session, scope=EVERY_HOSPITAL).total == 3


def test_a_reader_sees_only_its_hospitals_and_a_study_outside_is_as_absent(db, doctors) -> None:
    """Worklist, its counts and filter choices, a study, a verdict: limited to the reader's hospitals; a study of
    another hospital answers exactly like one that does not exist. No hospital and no grant: nothing."""
    from xraylab.db.review import StudyNotFoundError, study_in_scope
    from xraylab.db.scope import NO_PATIENTS, ReadScope

    with db.session() as session:
        written = record_predictions(session, [(study(i, hospital), verdict(0.5 + i / 20), None)
                                               for i, hospital in enumerate(["north", "south", "north", None])])
    north_a, south, north_b, nowhere = (w.study_id for w in written)
    north = ReadScope.of(["north"])
    with db.session() as session:
        page = worklist_page(session, scope=north)
        assert sorted(ids(page)) == sorted([north_a, north_b]) and page.total == 2
        assert worklist_page(session, WorklistFilter(hospital="south"), scope=north).total == 0  # a filter is no key
        assert hospitals(session, scope=north) == ["north"]
        assert hospitals(session, scope=EVERY_HOSPITAL) == ["north", "south"]
        assert worklist_page(session, scope=NO_PATIENTS).total == 0
        assert worklist_page(session, scope=EVERY_HOSPITAL).total == 4  # the network grant sees the unlabelled too
        for outside in (south, nowhere, 999_999):
            with pytest.raises(StudyNotFoundError) as raised:
                study_detail(session, outside, scope=north)
            assert str(raised.value) == f"study {outside} does not exist (or was deleted)"
            with pytest.raises(StudyNotFoundError):
                study_in_scope(session, outside, north)
        with pytest.raises(StudyNotFoundError):
            record_verdict(session, south, doctors[0], "Normal", scope=north)
        assert study_detail(session, north_a, scope=north)["hospital"] == "north"
    with db.session() as session:
        assert study_detail(session, south, scope=EVERY_HOSPITAL)["verdicts"] == []  # the refused verdict left none


def test_the_audit_trail_answers_who_saw_a_patient_in_a_listing_or_opened(db, doctors) -> None:
    with db.session() as session:
        written = record_predictions(session, [(study(i), verdict(0.3), None) for i in range(3)])
    first, second, third = (w.study_id for w in written)
    with db.session() as session:
        record_audit(session, "doc-a", "list_worklist", detail="page 1/1 of 3", listed=[first, second, third])
        record_audit(session, "doc-b", "list_worklist", detail="page 1/1 of 1", listed=[third])
        record_audit(session, "doc-b", "open_study", second)
    with db.session() as session:
        saw_p1 = audit_trail(session, patient_id="P1")  # study(1) is `second`
        assert [(e["user"], e["action"]) for e in saw_p1] == [("doc-a", "list_worklist"), ("doc-b", "open_study")]
        assert saw_p1[0]["listed"] == [second]
        assert [e["user"] for e in audit_trail(session, study_id=third)] == ["doc-a", "doc-b"]
        assert audit_trail(session, patient_id="nobody") == []
