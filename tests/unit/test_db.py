from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect

from xraylab.db.crud import count_rows, get_study, record_prediction, worklist
from xraylab.db.models import study_uid
from xraylab.db.session import make_engine, upgrade_schema


def study(i: int) -> dict:
    return {"study_uid": study_uid("local", "b", f"k{i}", "e"), "endpoint_id": "local", "bucket": "b",
            "object_key": f"k{i}", "etag": "e", "patient_name": f"Name {i}"}


def prediction(score: float, version: str = "v1") -> dict:
    band = "Pneumonia" if score > 0.8 else "Unsure" if score >= 0.6 else "Normal"
    return {"model_version": version, "score": score, "band": band, "infer_ms": 1.0}


@pytest.fixture()
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def test_migrations_create_tables_and_are_rerunnable(engine) -> None:
    upgrade_schema(engine)
    assert {"studies", "predictions", "alembic_version"} <= set(inspect(engine).get_table_names())


def test_redelivery_makes_no_second_row(engine) -> None:
    first = record_prediction(engine, study(1), prediction(0.9))
    again = record_prediction(engine, study(1), prediction(0.9))
    assert first.created and not again.created
    assert (again.study_id, again.prediction_id) == (first.study_id, first.prediction_id)
    assert count_rows(engine) == {"studies": 1, "predictions": 1}


def test_new_model_version_adds_a_prediction(engine) -> None:
    record_prediction(engine, study(1), prediction(0.9, "v1"))
    record_prediction(engine, study(1), prediction(0.3, "v2"))
    assert count_rows(engine) == {"studies": 1, "predictions": 2}
    assert get_study(engine, 1)["model_version"] == "v2"


def test_concurrent_duplicates_collapse(engine) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: record_prediction(engine, study(7), prediction(0.7)), range(16)))
    assert sum(r.created for r in results) == 1
    assert count_rows(engine) == {"studies": 1, "predictions": 1}


def test_worklist_orders_by_risk(engine) -> None:
    for i, score in enumerate([0.1, 0.95, 0.7, 0.85, 0.65]):
        record_prediction(engine, study(i), prediction(score))
    rows = worklist(engine)
    assert [r["score"] for r in rows] == [0.95, 0.85, 0.7, 0.65, 0.1]
    assert [r["band"] for r in rows][:2] == ["Pneumonia", "Pneumonia"]
    assert get_study(engine, 999) is None
