"""What the e2e and chaos tests read from the running system: rows in the database, and what Ray's metrics
agent exports (Prometheus text format)."""

from __future__ import annotations

import time

import requests
from sqlalchemy import func, select

from xraylab.db.models import Prediction, Study
from xraylab.db.session import Database


def rows_for(db: Database, bucket: str) -> list[tuple[str, int]]:
    """(object key, number of predictions) for each study of the bucket."""
    with db.session() as session:
        query = (select(Study.object_key, func.count(Prediction.id)).join(Prediction, isouter=True)
                 .where(Study.bucket == bucket).group_by(Study.id, Study.object_key))
        return [(k, n) for k, n in session.execute(query).all()]


def scrape_until(patterns: list[str], timeout_s: float = 90.0) -> str:
    """The text of the first live Ray node's metrics page once every pattern appears in it (or the last
    text read when time runs out). The agent exports every few seconds, so a fresh series takes a while."""
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    deadline, text = time.time() + timeout_s, ""
    while time.time() < deadline:
        text = requests.get(url, timeout=10).text
        if all(p in text for p in patterns):
            break
        time.sleep(2)
    return text
