from pathlib import Path

import pytest

from xraylab.db.session import Database, upgrade_schema


@pytest.fixture()
def db(tmp_path: Path):
    """A migrated SQLite database in a folder that does not exist yet (the engine makes it)."""
    db = Database(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    upgrade_schema(db.engine)
    yield db
    db.dispose()
