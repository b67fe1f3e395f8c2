"""Writer: idempotent rows in SQLite (embedded default) or MariaDB/MySQL through PyMySQL."""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from xraylab.db.crud import record_prediction
from xraylab.db.session import make_engine, ping, upgrade_schema
from xraylab.settings import get_settings

log = logging.getLogger("xraylab.writer")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class Writer:
    def __init__(self, database: str = "default") -> None:
        url = get_settings().database_url(database)
        self.engine = make_engine(url)
        upgrade_schema(self.engine)
        self.dialect = self.engine.dialect.name

    def write(self, study: dict[str, Any], prediction: dict[str, Any]) -> dict[str, Any]:
        result = record_prediction(self.engine, study, prediction)
        log.info("study %s: prediction %s (%s)", study["study_uid"], result.prediction_id,
                 "new" if result.created else "already stored")
        return {"study_id": result.study_id, "prediction_id": result.prediction_id, "created": result.created}

    def check_health(self) -> None:
        ping(self.engine)
