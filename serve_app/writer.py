"""Writer: idempotent rows in SQLite (embedded default) or MariaDB/MySQL through PyMySQL.

It does not migrate: the schema is brought to head as a start-up step (``xraylab db upgrade``), and a
replica refuses to start on a database that is not there yet.
"""

from __future__ import annotations

import logging

from ray import serve
from sqlalchemy.orm import Session

from xraylab.db.crud import record_predictions
from xraylab.db.outbox import enqueue_results
from xraylab.db.session import Database, schema_is_current
from xraylab.delivery_config import DeliveryConfig
from xraylab.messages import StudyRecord, Verdict, WriteResult
from xraylab.settings import get_settings

__all__ = ["Writer", "SchemaNotCurrentError"]

log = logging.getLogger("xraylab.writer")


class SchemaNotCurrentError(RuntimeError):
    """The database has not been migrated to the schema this code writes."""


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class Writer:
    def __init__(self, database: str = "default") -> None:
        settings = get_settings()
        self.db = Database(settings.database_url(database))
        # Where results go (XRAYLAB_DELIVERY_CONFIG): a file that does not read stops the start, since a hospital
        # would otherwise not get its results and not be told.
        self.delivery = DeliveryConfig.load(settings.DELIVERY_CONFIG, calling_ae_title=settings.DELIVERY_AET)
        self.pacs_endpoint_id = settings.ORTHANC_ENDPOINT_ID
        if not schema_is_current(self.db.engine):
            raise SchemaNotCurrentError(
                f"the {database!r} database ({self.db.engine.dialect.name}) is not at the current schema: "
                f"run `xraylab db upgrade --database {database}` first")

    def write_many(self, rows: list[tuple[StudyRecord, Verdict, float | None]]) -> list[WriteResult]:
        """A batch of studies with their predictions, in one transaction, with their results queued for delivery
        (``xraylab.db.outbox``) in the same one."""
        def write(session: Session) -> tuple[list[WriteResult], int]:
            results = record_predictions(session, rows)
            return results, enqueue_results(session, self.delivery, rows, results,
                                            pacs_endpoint_id=self.pacs_endpoint_id)

        results, queued = self.db.in_transaction(write)
        created = sum(r.created for r in results)
        log.info("%d predictions stored (%d new, %d already stored); %d deliveries queued", len(results), created,
                 len(results) - created, queued)
        return results

    def check_health(self) -> None:
        self.db.ping()
