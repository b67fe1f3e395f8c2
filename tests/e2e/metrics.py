"""Reading what Ray's metrics agent exports (Prometheus text format), for the e2e and chaos tests."""

from __future__ import annotations

import time

import requests


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
