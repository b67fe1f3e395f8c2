"""One engine and one session factory per database (per process or Serve replica); one session,
one transaction, per unit of work, opened by the caller: ``with db.session() as session: ...``.

Migrations are a start-up step (``xraylab db upgrade``, run by ``cluster/local/up.sh``, the demo and
the tests), not something every replica does; ``schema_is_current`` lets a replica refuse to start
on a database that was never migrated.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from xraylab.private_files import private_dir, private_file

__all__ = ["Database", "make_engine", "upgrade_schema", "schema_is_current", "rolled_back_to_retry"]

MIGRATIONS = Path(__file__).parent / "migrations"
# MySQL/MariaDB error codes that roll a transaction back and ask for it to be run again.
RETRYABLE_MYSQL_ERRORS = frozenset({1213, 1205})  # deadlock found; lock wait timeout exceeded
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
T = TypeVar("T")
log = logging.getLogger("xraylab.db")


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database or a ``file:`` URI (left to SQLite)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _private_sqlite(path: Path) -> None:
    """The database file (patients, password hashes, the audit) only its owner reads: 0600 before SQLite
    opens it, which then makes its -wal, -shm and -journal files with the same mode; those left from before
    are taken down too. A folder made for it is 0700 (``xraylab.private_files``)."""
    private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            private_file(side)


def make_engine(url: str) -> Engine:
    """A pooled engine. SQLite gets WAL and a busy timeout so threads and processes can share it, and its file
    mode 0600 (its folder 0700 when made here)."""
    if url.startswith("sqlite"):
        path = _sqlite_file(url)
        if path is not None:
            private_dir(path.parent)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        if path is not None:
            @event.listens_for(engine, "do_connect")
            def _sqlite_private(_dialect, _record, _cargs, _cparams):  # type: ignore[no-untyped-def]
                _private_sqlite(path)  # before each new connection opens (or creates) the file
                return None  # SQLAlchemy's own connect follows

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # SQLAlchemy, not the sqlite3 module, starts transactions, so that SAVEPOINT works
            # (SQLAlchemy's documented recipe for pysqlite).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # IMMEDIATE: the write lock is taken (waiting up to the busy timeout) when the transaction starts.
            # A deferred BEGIN that reads, then writes after another connection committed, fails at once
            # with "database is locked" (a session touched after its read, a login, an audited read).
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=3600, pool_size=5, max_overflow=10)


def rolled_back_to_retry(exc: BaseException) -> bool:
    """Whether the database rolled the transaction back and asks for it to be run again: a MySQL/MariaDB
    deadlock or lock wait timeout anywhere in the exception's chain (a deadlock inside a SAVEPOINT surfaces
    as "SAVEPOINT ... does not exist" when the savepoint is then rolled back)."""
    seen: BaseException | None = exc
    while seen is not None:
        error = getattr(seen, "orig", None) or seen
        if error.args and error.args[0] in RETRYABLE_MYSQL_ERRORS:
            return True
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return False


class Database:
    """An engine and its one ``sessionmaker``."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises, always closed."""
        with self._sessions.begin() as session:
            yield session

    def in_transaction(self, work: Callable[[Session], T], attempts: int = 5) -> T:
        """``work(session)`` in one transaction, run again from the start when the database rolled it back
        as a deadlock victim or on a lock wait timeout (InnoDB, when writers of overlapping rows meet:
        redeliveries racing). ``work`` must be safe to repeat, as the idempotent writes are."""
        for attempt in range(1, attempts + 1):
            try:
                with self.session() as session:
                    return work(session)
            except DBAPIError as exc:
                if not rolled_back_to_retry(exc) or attempt == attempts:
                    raise
                log.warning("transaction rolled back by the database; attempt %d of %d", attempt, attempts)
                time.sleep(random.uniform(0.01, 0.05) * 2**attempt)
        raise AssertionError("unreachable")

    def ping(self) -> None:
        """``SELECT 1``; raises if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _alembic_config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["configure_logger"] = False
    return config


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations shipped in this package up to ``revision`` on ``engine``."""
    from alembic import command

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the newest migration (``xraylab db upgrade`` brings it there)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads()) == heads
