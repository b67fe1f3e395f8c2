"""The Writer's SQL on the project's own MariaDB instance (cluster/local/mariadb.sh)."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect, text

from xraylab.db.crud import get_study, record_prediction
from xraylab.db.models import study_uid
from xraylab.db.session import make_engine, upgrade_schema

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(settings):
    engine = make_engine(settings.database_url("mariadb"))
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def test_schema_on_mariadb(engine) -> None:
    assert engine.dialect.name == "mysql"
    assert {"studies", "predictions", "alembic_version"} <= set(inspect(engine).get_table_names())


def test_app_user_has_no_global_privileges(engine) -> None:
    with engine.connect() as conn:
        grants = " ".join(row[0] for row in conn.execute(text("SHOW GRANTS")))
    assert "ALL PRIVILEGES ON *.*" not in grants and "`xraylab`.*" in grants


def test_concurrent_redelivery_makes_one_row(engine) -> None:
    key = f"k-{uuid.uuid4().hex}"
    study = {"study_uid": study_uid("local", "b", key, "e"), "endpoint_id": "local", "bucket": "b",
             "object_key": key, "etag": "e", "patient_name": "Ana Silva"}
    pred = {"model_version": "v-test", "score": 0.91, "band": "Pneumonia"}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: record_prediction(engine, study, pred), range(16)))
    assert sum(r.created for r in results) == 1
    assert len({r.prediction_id for r in results}) == 1
    assert get_study(engine, results[0].study_id)["patient_name"] == "Ana Silva"
