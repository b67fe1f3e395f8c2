"""Writer: idempotent rows in SQLite (embedded default) or MariaDB/MySQL through PyMySQL.

It does not migrate: the schema is brought to head as a start-up step (``xraylab db upgrade``), and a
replica refuses to start on a database that is not there yet.
"""

from __future__ import annotations

import logging

from ray import serve

from xraylab.db.crud import record_predictions
from xraylab.db.session import Database, schema_is_current
from xraylab.messages import StudyRecord, Verdict, WriteResult
from xraylab.settings import get_settings

__all__ = ["Writer", "SchemaNotCurrentError"]

log = logging.getLogger("xraylab.writer")


class SchemaNotCurrentError(RuntimeError):
    """The database has not been migrated to the schema this code writes."""


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class Writer:
    def __init__(self, database: str = "default") -> None:
        self.db = Database(get_settings().database_url(database))
        if not schema_is_current(self.db.engine):
            raise SchemaNotCurrentError(
                f"the {database!r} database ({self.db.engine.dialect.name}) is not at the current schema: "
                f"run `xraylab db upgrade --database {database}` first")

    def write_many(self, rows: list[tuple[StudyRecord, Verdict, float | None]]) -> list[WriteResult]:
        """A batch of studies with their predictions, in one transaction."""
        results = self.db.in_transaction(lambda session: record_predictions(session, rows))
        created = sum(r.created for r in results)
        log.info("%d predictions stored (%d new, %d already stored)", len(results), created, len(results) - created)
        return results

    def check_health(self) -> None:
        self.db.ping()
