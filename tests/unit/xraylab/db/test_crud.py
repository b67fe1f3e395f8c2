from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect

from xraylab.db.crud import count_rows, get_study, record_prediction, record_predictions
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


def write_many(db: Database, rows: list[tuple[StudyRecord, Verdict]]):
    with db.session() as session:
        return record_predictions(session, [(s, v, 2.5) for s, v in rows])


def test_batch_of_new_studies_is_stored_in_order(db) -> None:
    rows = [(study(i), verdict(i / 10)) for i in range(6)]
    results = write_many(db, rows)
    assert all(r.created for r in results) and len({r.study_id for r in results}) == 6
    with db.session() as session:
        for (s, v), r in zip(rows, results, strict=True):
            stored = get_study(session, r.study_id)
            assert (stored["study_uid"], stored["score"], stored["fetch_ms"]) == (s.study_uid, v.score, 2.5)
            assert stored["patient_name"] == s.metadata.patient_name
    assert counts(db) == {"studies": 6, "predictions": 6}


def test_batch_with_stored_studies_and_repeats_matches_row_by_row(db) -> None:
    """A redelivered batch, a study already stored with another model, and the same object twice in one batch."""
    first = write_many(db, [(study(i), verdict(0.9)) for i in range(3)])
    again = write_many(db, [(study(i), verdict(0.9)) for i in range(3)])
    assert [r.created for r in again] == [False] * 3
    assert [(r.study_id, r.prediction_id) for r in again] == [(r.study_id, r.prediction_id) for r in first]
    mixed = write_many(db, [(study(0), verdict(0.2, "v2")), (study(9), verdict(0.7)), (study(9), verdict(0.7))])
    assert [r.created for r in mixed] == [True, True, False]
    assert mixed[0].study_id == first[0].study_id and mixed[1].prediction_id == mixed[2].prediction_id
    assert counts(db) == {"studies": 4, "predictions": 5}


def test_batch_is_part_of_the_callers_transaction(db) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        record_predictions(session, [(study(i), verdict(0.9), None) for i in range(4)])
        raise RuntimeError("the caller fails after the write")
    assert counts(db) == {"studies": 0, "predictions": 0}


def test_concurrent_batches_on_sqlite_wait_for_the_lock_instead_of_failing(db) -> None:
    """Writers in threads (the Writer replica's pool) storing batches while a reader polls: none fails with
    'database is locked' (a read transaction upgraded to a write would, in WAL mode)."""
    stop = False

    def read() -> None:
        while not stop:
            counts(db)

    def write_batch(start: int) -> list:
        return write_many(db, [(study(start * 100 + i), verdict(0.5)) for i in range(16)])

    with ThreadPoolExecutor(9) as pool:
        reader = pool.submit(read)
        results = list(pool.map(write_batch, range(24)))
        stop = True
        reader.result()
    assert sum(r.created for batch in results for r in batch) == 24 * 16
    assert counts(db) == {"studies": 24 * 16, "predictions": 24 * 16}


def test_deadlock_victims_run_again_and_other_errors_do_not(db) -> None:
    from sqlalchemy.exc import OperationalError

    calls = []

    def flaky(session):
        calls.append(1)
        record_prediction(session, study(len(calls)), verdict(0.5))
        if len(calls) < 3:
            raise OperationalError("INSERT ...", {}, Exception(1213, "Deadlock found when trying to get lock"))
        return len(calls)

    assert db.in_transaction(flaky) == 3
    assert counts(db) == {"studies": 1, "predictions": 1}, "the rolled-back attempts left nothing behind"

    def broken(session):
        calls.append(1)
        raise OperationalError("SELECT 1", {}, Exception(2013, "Lost connection"))

    calls.clear()
    with pytest.raises(OperationalError):
        db.in_transaction(broken)
    assert len(calls) == 1


def test_a_deadlock_behind_a_lost_savepoint_counts_as_retryable() -> None:
    from sqlalchemy.exc import OperationalError

    from xraylab.db.session import rolled_back_to_retry

    try:
        try:
            raise OperationalError("INSERT ...", {}, Exception(1213, "Deadlock found"))
        except OperationalError:
            raise OperationalError("ROLLBACK TO SAVEPOINT sa_savepoint_1", {},
                                   Exception(1305, "SAVEPOINT sa_savepoint_1 does not exist")) from None
    except OperationalError as exc:
        assert not rolled_back_to_retry(exc), "raised 'from None': no deadlock in its chain"
    try:
        try:
            raise OperationalError("INSERT ...", {}, Exception(1213, "Deadlock found"))
        except OperationalError:
            raise OperationalError("ROLLBACK TO SAVEPOINT sa_savepoint_1", {},  # noqa: B904 (as SQLAlchemy does)
                                   Exception(1305, "SAVEPOINT sa_savepoint_1 does not exist"))
    except OperationalError as exc:
        assert rolled_back_to_retry(exc)
    assert not rolled_back_to_retry(OperationalError("SELECT 1", {}, Exception(2013, "Lost connection")))
