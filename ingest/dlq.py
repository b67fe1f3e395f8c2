"""The dead-letter topic for people: read what is there (``xraylab dlq list``) and send it back through the
pipeline after a fix (``xraylab dlq replay``).

A replay produces each dead letter's original event to the source topic again. An event that named
several objects goes back as one event per object (the shape every store sends), so an event refused as
``too_many_records`` is taken on replay. An original that was too large to keep in the dead letter is read
back from the source topic at its recorded offset and checked against its SHA-256. Replays are idempotent
like everything else: an object that already has its row is counted as a duplicate, never stored twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from xraylab.settings import Settings

__all__ = ["DeadLetterEntry", "read_dead_letters", "original_value", "replay_events", "replay"]

NO_PROGRESS_S = 30.0  # a topic that sends nothing for this long while records are due: the broker is gone


@dataclass(frozen=True)
class DeadLetterEntry:
    partition: int
    offset: int
    doc: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.doc.get("reason"))

    @property
    def where(self) -> str:
        return f"{self.partition}:{self.offset}"


def _records(settings: Settings, topic: str, start: dict[int, int] | None = None,
             stop_at: dict[int, int] | None = None) -> Iterator[Any]:
    """Records of ``topic`` from the beginning (or ``start`` per partition) up to the end as it is now."""
    from kafka import TopicPartition

    from ingest.kafka_io import make_consumer

    consumer = make_consumer(settings, job="admin", group_id=None)  # no group: reads, commits nothing
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist")
        if start is not None:
            partitions = [tp for tp in partitions if tp.partition in start]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        if stop_at is not None:
            ends = {tp: min(end, stop_at.get(tp.partition, end)) for tp, end in ends.items()}
        for tp in partitions:
            if start is not None:
                consumer.seek(tp, start[tp.partition])
            else:
                consumer.seek_to_beginning(tp)
        quiet_since = time.monotonic()
        while any(consumer.position(tp) < ends.get(tp, 0) for tp in partitions):
            polled = consumer.poll(timeout_ms=2000)
            if polled:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > NO_PROGRESS_S:
                raise TimeoutError(f"{topic}: the broker sent nothing for {NO_PROGRESS_S:.0f} s")
            for tp, batch in polled.items():
                for record in batch:
                    if record.offset < ends.get(tp, 0):
                        yield record
    finally:
        consumer.close()


def read_dead_letters(settings: Settings, *, reasons: Iterable[str] = (),
                      offsets: Iterable[str] = ()) -> list[DeadLetterEntry]:
    """The dead letters now on ``XRAYLAB_KAFKA_DLQ_TOPIC``, oldest first, filtered by reason and by
    ``partition:offset`` (``offset`` alone means partition 0)."""
    wanted_reasons = set(reasons)
    wanted = {w if ":" in w else f"0:{w}" for w in offsets}
    entries = []
    for record in _records(settings, settings.KAFKA_DLQ_TOPIC):
        try:
            doc = json.loads(record.value)
        except (TypeError, ValueError):
            doc = {"reason": "unreadable_dead_letter", "detail": "not JSON", "original": {"value": None}}
        entry = DeadLetterEntry(record.partition, record.offset, doc)
        if (not wanted_reasons or entry.reason in wanted_reasons) and (not wanted or entry.where in wanted):
            entries.append(entry)
    return entries


class ReplayError(ValueError):
    """A dead letter that cannot be replayed (a tombstone; an original gone from the source topic)."""


def original_value(settings: Settings, entry: DeadLetterEntry) -> bytes:
    """The message the dead letter was made of, whole."""
    original = entry.doc.get("original") or {}
    if original.get("truncated"):
        source = entry.doc.get("source") or {}
        partition, offset = int(source["partition"]), int(source["offset"])
        for record in _records(settings, source["topic"], {partition: offset}, {partition: offset + 1}):
            value = record.value or b""
            if hashlib.sha256(value).hexdigest() != original.get("sha256"):
                raise ReplayError(f"{entry.where}: the source record at {partition}:{offset} is not the original")
            return value
        raise ReplayError(f"{entry.where}: the original is gone from {source['topic']} (retention)")
    value = original.get("value")
    if value is None:
        raise ReplayError(f"{entry.where}: a tombstone has nothing to replay")
    return base64.b64decode(value) if original.get("encoding") == "base64" else str(value).encode("utf-8")


def replay_events(value: bytes) -> list[bytes]:
    """What to produce for one original: an event with several records becomes one event per record (each
    record keeps its fields); anything else goes back as it was."""
    try:
        doc = json.loads(value)
    except ValueError:
        return [value]
    records = doc.get("Records") if isinstance(doc, dict) else None
    if not isinstance(records, list) or len(records) < 2:
        return [value]
    return [json.dumps({"Records": [record]}).encode("utf-8") for record in records]


@dataclass
class ReplayResult:
    dead_letters: int = 0
    events: int = 0
    refused: list[str] | None = None


def replay(settings: Settings, entries: list[DeadLetterEntry], *, dry_run: bool = False) -> ReplayResult:
    """Produce each entry's original event(s) to ``XRAYLAB_KAFKA_TOPIC`` again, acknowledged by the broker."""
    from ingest.kafka_io import make_producer

    result = ReplayResult(refused=[])
    producer = None if dry_run else make_producer(settings, job="admin")
    try:
        for entry in entries:
            try:
                events = replay_events(original_value(settings, entry))
            except ReplayError as exc:
                result.refused.append(str(exc))  # type: ignore[union-attr]
                continue
            key = (entry.doc.get("source") or {}).get("key")
            if producer is not None:
                futures = [producer.send(settings.KAFKA_TOPIC, key=key.encode() if key else None, value=event,
                                         headers=[("xraylab-replay-of", f"dlq:{entry.where}".encode())])
                           for event in events]
                for future in futures:
                    future.get(30)
            result.dead_letters += 1
            result.events += len(events)
    finally:
        if producer is not None:
            producer.close(timeout=10)
    return result
