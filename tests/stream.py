"""A stream of uploads for the chaos and multi-node suites: the hospital that keeps uploading while a fault
is injected, and the counts afterwards (rows per object, how long until every image had its row)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from ingest.uploader import upload_study
from tests.e2e import observe
from xraylab.db.session import Database
from xraylab.messages import StudyMetadata

DRAIN_S = 300.0


def jpegs(count: int = 16) -> list[bytes]:
    from xraylab.synthetic import encode_jpeg, generate_xray

    rng = np.random.default_rng(5)
    return [encode_jpeg(generate_xray(rng, bool(i % 2))) for i in range(count)]


@dataclass(eq=False)
class Uploader(threading.Thread):
    """The hospital: ``count`` images into ``bucket``, each put tried again until the store takes it (as a
    PACS gateway would), so that an image only counts as uploaded once the store has acknowledged it."""

    s3: object
    bucket: str
    count: int
    images: list[bytes]
    prefix: str = "good/"
    pace_s: float = 0.0
    uploaded: list[str] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        for i in range(self.count):
            key = f"{self.prefix}{i:05d}-{uuid.uuid4().hex[:6]}.jpeg"
            meta = StudyMetadata("st-mary", f"P{100000 + i}", "Chaos Test", "2026-12-01")
            deadline = time.time() + 180
            while True:
                try:
                    upload_study(self.s3, self.bucket, key, self.images[i % len(self.images)], meta,
                                 content_type="image/jpeg")
                    break
                except Exception:
                    self.refused += 1
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
            self.uploaded.append(key)
            if self.pace_s:
                time.sleep(self.pace_s)


def rows_for(db: Database, bucket: str) -> dict[str, int]:
    """object key -> number of prediction rows, for each study of the bucket."""
    return dict(observe.rows_for(db, bucket))


def drain(db: Database, bucket: str, expected: int, since: float) -> tuple[float | None, float | None]:
    """Wait until the bucket has ``expected`` rows; (first row after ``since``, all rows) in seconds."""
    first, seen, deadline = None, len(rows_for(db, bucket)), time.time() + DRAIN_S
    while time.time() < deadline:
        count = len(rows_for(db, bucket))
        if first is None and count > seen:
            first = time.time() - since
        if count >= expected:
            return first if first is not None else 0.0, time.time() - since
        time.sleep(0.25)
    return first, None
