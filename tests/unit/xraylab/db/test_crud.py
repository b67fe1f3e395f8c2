from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect

from xraylab.db.crud import count_rows, get_study, record_prediction, worklist
from xraylab.db.session import Database, schema_is_current, upgrade_schema
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid


def study(i: int) -> StudyRecord:
    return StudyRecord(study_uid=study_uid("local", "b", f"k{i}", "e"), endpoint_id="local", bucket="b",
                       object_key=f"k{i}", etag="e", metadata=StudyMetadata(patient_name=f"Name {i}"))


def verdict(score: float, version: str = "v1") -> Verdict:
    band = "Pneumonia" if score > 0.8 else "Unsure" if score >= 0.6 else "Normal"
    return Verdict(score=score, band=band, model_version=version, synthetic_model=True, infer_ms=1.0)


def write(db: Database, study: StudyRecord, verdict: Verdict):
    with db.session() as session:
        return record_prediction(session, study, verdict)


def counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return count_rows(session)


@pytest.fixture()
def db(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    upgrade_schema(db.engine)
    yield db
    db.dispose()


def test_migrations_create_tables_and_are_rerunnable(db) -> None:
    upgrade_schema(db.engine)
    assert {"studies", "predictions", "alembic_version"} <= set(inspect(db.engine).get_table_names())


def test_schema_is_current_only_after_upgrade(tmp_path: Path) -> None:
    fresh = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert not schema_is_current(fresh.engine)
    upgrade_schema(fresh.engine)
    assert schema_is_current(fresh.engine)


def test_redelivery_makes_no_second_row(db) -> None:
    first = write(db, study(1), verdict(0.9))
    again = write(db, study(1), verdict(0.9))
    assert first.created and not again.created
    assert (again.study_id, again.prediction_id) == (first.study_id, first.prediction_id)
    assert counts(db) == {"studies": 1, "predictions": 1}


def test_new_model_version_adds_a_prediction(db) -> None:
    write(db, study(1), verdict(0.9, "v1"))
    write(db, study(1), verdict(0.3, "v2"))
    assert counts(db) == {"studies": 1, "predictions": 2}
    with db.session() as session:
        assert get_study(session, 1)["model_version"] == "v2"


def test_one_unit_of_work_is_one_transaction(db) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        record_prediction(session, study(3), verdict(0.9))
        raise RuntimeError("the caller fails after the write")
    assert counts(db) == {"studies": 0, "predictions": 0}, "nothing of a failed unit of work is stored"


def test_concurrent_duplicates_collapse(db) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: write(db, study(7), verdict(0.7)), range(16)))
    assert sum(r.created for r in results) == 1
    assert len({r.prediction_id for r in results}) == 1
    assert counts(db) == {"studies": 1, "predictions": 1}


def test_worklist_orders_by_risk(db) -> None:
    for i, score in enumerate([0.1, 0.95, 0.7, 0.85, 0.65]):
        write(db, study(i), verdict(score))
    with db.session() as session:
        rows = worklist(session)
        assert get_study(session, 999) is None
    assert [r["score"] for r in rows] == [0.95, 0.85, 0.7, 0.65, 0.1]
    assert [r["band"] for r in rows][:2] == ["Pneumonia", "Pneumonia"]
    assert rows[0]["patient_name"] == "Name 1"
