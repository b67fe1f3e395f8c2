"""The Writer's SQL on the project's own MariaDB instance (cluster/local/mariadb.sh)."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect, text

from xraylab.db.crud import get_study, record_prediction, record_predictions
from xraylab.db.session import Database, schema_is_current
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid

pytestmark = pytest.mark.integration


@pytest.fixture()
def db(mariadb):
    return mariadb


def test_schema_on_mariadb(db) -> None:
    assert db.engine.dialect.name == "mysql"
    assert {"studies", "predictions", "alembic_version"} <= set(inspect(db.engine).get_table_names())
    assert schema_is_current(db.engine)


def test_app_user_has_no_global_privileges(db) -> None:
    with db.engine.connect() as conn:
        grants = " ".join(row[0] for row in conn.execute(text("SHOW GRANTS")))
    assert "ALL PRIVILEGES ON *.*" not in grants and "`xraylab`.*" in grants


def write(db: Database, study: StudyRecord, verdict: Verdict):
    with db.session() as session:
        return record_prediction(session, study, verdict)


def test_concurrent_redelivery_makes_one_row(db) -> None:
    key = f"k-{uuid.uuid4().hex}"
    study = StudyRecord(study_uid=study_uid("local", "b", key, "e"), endpoint_id="local", bucket="b",
                        object_key=key, etag="e", metadata=StudyMetadata(patient_name="Ana Silva"))
    verdict = Verdict(score=0.91, band="Pneumonia", model_version="v-test", synthetic_model=True)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: write(db, study, verdict), range(16)))
    assert sum(r.created for r in results) == 1
    assert len({r.prediction_id for r in results}) == 1
    with db.session() as session:
        assert get_study(session, results[0].study_id)["patient_name"] == "Ana Silva"


def test_concurrent_new_model_version_on_a_known_study(db) -> None:
    """The study exists already; 16 writers add the same new model's prediction at once: one row, one id."""
    key = f"k-{uuid.uuid4().hex}"
    study = StudyRecord(study_uid=study_uid("local", "b", key, "e"), endpoint_id="local", bucket="b",
                        object_key=key, etag="e")
    write(db, study, Verdict(score=0.2, band="Normal", model_version="v-old", synthetic_model=True))
    new = Verdict(score=0.7, band="Unsure", model_version="v-new", synthetic_model=True)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: write(db, study, new), range(16)))
    assert sum(r.created for r in results) == 1
    assert len({r.prediction_id for r in results}) == 1 and len({r.study_id for r in results}) == 1


def test_concurrent_batches_over_the_same_studies(db) -> None:
    """Writers storing overlapping batches at once (redeliveries racing): InnoDB picks deadlock victims,
    which run again; each study and prediction is stored once and every writer is told the same ids."""
    keys = [f"k-{uuid.uuid4().hex}" for _ in range(12)]
    studies = [StudyRecord(study_uid=study_uid("local", "b", k, "e"), endpoint_id="local", bucket="b",
                           object_key=k, etag="e") for k in keys]
    verdict = Verdict(score=0.5, band="Normal", model_version="v-batch", synthetic_model=True)

    def write_batch(start: int):  # as the Writer does: deadlock victims run again
        batch = [(studies[(start + i) % 12], verdict, None) for i in range(8)]
        return batch, db.in_transaction(lambda session: record_predictions(session, batch))

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(write_batch, range(12)))
    ids: dict[str, set[tuple[int, int]]] = {}
    created = 0
    for batch, results in outcomes:
        for (study, _, _), result in zip(batch, results, strict=True):
            ids.setdefault(study.study_uid, set()).add((result.study_id, result.prediction_id))
            created += result.created
    assert created == 12 and all(len(v) == 1 for v in ids.values()) and len(ids) == 12


def test_hospital_names_compare_byte_for_byte_as_the_scope_does(db) -> None:
    """MariaDB's default collation would take "Ward-x" and "wärd-x" for "ward-x": a reader of one would list the
    others' patients while opening them said "does not exist". The hospital columns compare exactly."""
    from xraylab.accounts import create_user
    from xraylab.db.review import WorklistFilter, worklist_page
    from xraylab.db.scope import ReadScope

    tag = uuid.uuid4().hex[:8]
    names = [f"ward-{tag}", f"Ward-{tag}", f"wärd-{tag}"]
    rows = [(StudyRecord(study_uid=study_uid("local", "b", f"{tag}/{i}", "e"), endpoint_id="local", bucket="b",
                         object_key=f"{tag}/{i}", etag="e", metadata=StudyMetadata(name, f"P{i}", "N", "2026-11-02")),
             Verdict(score=0.5, band="Normal", model_version="v1", synthetic_model=True, infer_ms=1.0), None)
            for i, name in enumerate(names)]
    with db.session() as session:
        record_predictions(session, rows)
        for name in names:
            assert worklist_page(session, scope=ReadScope.of([name])).total == 1, name
            assert worklist_page(session, WorklistFilter(hospital=name), scope=ReadScope.of(names)).total == 1
        create_user(session, f"doc-{tag}", "a long enough password", hospitals=names)  # three hospitals, not one


def test_first_logins_at_once_neither_deadlock_nor_fail(db) -> None:
    """Many names signing in for the first time at once (their throttle rows made as they go): no deadlock on
    the rows' gap, every attempt answered."""
    from datetime import timedelta

    from xraylab.accounts import AccessPolicy, authenticate

    policy = AccessPolicy(session_idle=timedelta(minutes=30), session_max=timedelta(hours=1), max_failures=5,
                          lockout_s=60)
    tag = uuid.uuid4().hex[:6]

    def attempt(i: int) -> str | None:
        with db.session() as session:
            return authenticate(session, f"ghost-{tag}-{i % 12}", "wrong password", policy).reason

    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(attempt, range(48)))
    assert set(reasons) <= {"bad_credentials", "throttled"} and len(reasons) == 48
