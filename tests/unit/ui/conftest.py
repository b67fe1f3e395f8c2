"""Fixtures of the review app's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xraylab.db.session import Database, upgrade_schema


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Database]:
    """An SQLite database of the test's own, migrated to the newest schema."""
    db = Database(f"sqlite:///{tmp_path / 'media.db'}")
    upgrade_schema(db.engine)
    yield db
    db.dispose()
