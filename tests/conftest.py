"""Shared fixtures. Services are started by the test command (scripts/test.sh -> cluster/local/up.sh);
a test that needs one and cannot reach it fails, it never skips."""

from __future__ import annotations

import uuid

import pytest

from xraylab.settings import Settings, load_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture()
def s3(settings: Settings):
    from xraylab.storage import make_s3_client

    return make_s3_client(settings.s3_endpoint(None))


@pytest.fixture()
def bucket(s3) -> str:
    name = f"test-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def mariadb(settings: Settings):
    """The project's MariaDB, migrated by the tests themselves (as the demo does)."""
    from xraylab.db.session import Database, upgrade_schema

    db = Database(settings.database_url("mariadb"))
    upgrade_schema(db.engine)
    yield db
    db.dispose()
