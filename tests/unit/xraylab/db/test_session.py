"""The SQLite database's files (patients, password hashes, the audit) are the owner's only: 0600, in a
folder made 0700, whatever the umask and whether or not a cluster/local script made the state folder."""

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from xraylab.db.session import Database, upgrade_schema


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def open_umask():
    """The usual 022 umask of a login shell (the finding: files came out 0644)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_new_database_is_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "state" / "sub" / "xraylab.db"
    db = Database(f"sqlite:///{path}")
    try:
        upgrade_schema(db.engine)
        with db.session() as session:  # a write: the -wal and -shm files exist while connections are open
            session.execute(text("CREATE TABLE probe (x INTEGER)"))
            session.execute(text("INSERT INTO probe VALUES (1)"))
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert {p.name for p in files} >= {"xraylab.db", "xraylab.db-wal", "xraylab.db-shm"}
        assert {p.name: mode(p) for p in files} == dict.fromkeys((p.name for p in files), 0o600)
        assert mode(path.parent) == mode(path.parent.parent) == 0o700  # the folders made for it
    finally:
        db.dispose()


def test_an_existing_open_database_is_taken_down_to_0600(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "xraylab.db"
    db = Database(f"sqlite:///{path}")
    upgrade_schema(db.engine)
    db.dispose()
    before = mode(tmp_path)
    for name in ("xraylab.db", "xraylab.db-wal", "xraylab.db-journal"):
        (tmp_path / name).touch()
        os.chmod(tmp_path / name, 0o644)  # as the stack left them before
    db = Database(f"sqlite:///{path}")
    try:
        db.ping()
        for name in ("xraylab.db", "xraylab.db-wal", "xraylab.db-journal"):
            assert mode(tmp_path / name) == 0o600, name
        assert mode(tmp_path) == before  # an existing folder (maybe shared) keeps its mode
    finally:
        db.dispose()


def test_in_memory_and_uri_databases_make_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db = Database("sqlite://")
    db.ping()
    db.dispose()
    db = Database("sqlite:///:memory:")
    db.ping()
    db.dispose()
    assert list(tmp_path.iterdir()) == []
