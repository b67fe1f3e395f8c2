"""The Writer does not migrate: it refuses a database that is not at the current schema, and writes one
study with its prediction in one transaction once the schema is there."""

from pathlib import Path

import pytest

from serve_app.writer import SchemaNotCurrentError, Writer
from xraylab.db.session import make_engine, upgrade_schema
from xraylab.messages import StudyRecord, Verdict
from xraylab.settings import get_settings


@pytest.fixture()
def sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    monkeypatch.setenv("XRAYLAB_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_refuses_an_unmigrated_database(sqlite_url: str) -> None:
    with pytest.raises(SchemaNotCurrentError, match="xraylab db upgrade"):
        Writer.func_or_class("default")


def test_writes_once_migrated(sqlite_url: str) -> None:
    upgrade_schema(make_engine(sqlite_url))
    writer = Writer.func_or_class("default")
    study = StudyRecord(study_uid="u1", endpoint_id="local", bucket="b", object_key="k")
    verdict = Verdict(score=0.2, band="Normal", model_version="v1", synthetic_model=True)
    [first], [again] = writer.write_many([(study, verdict, 1.0)]), writer.write_many([(study, verdict, 1.0)])
    assert first.created and not again.created and first.prediction_id == again.prediction_id
    writer.check_health()
