"""Kafka clients with this project's settings, and the dead-letter record format."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from xraylab.errors import RejectReason
from xraylab.kafka_security import KafkaJob, client_config
from xraylab.settings import Settings

__all__ = ["make_producer", "make_consumer", "dead_letter"]


def make_producer(settings: Settings, *, job: KafkaJob, **overrides: Any) -> Any:
    """A producer connected as ``job``'s Kafka user (xraylab/kafka_security.py)."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        **client_config(settings, job),
        "acks": "all",
        "retries": 5,
        "linger_ms": 5,
        "bootstrap_timeout_ms": 15000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(settings: Settings, *topics: str, job: KafkaJob, **overrides: Any) -> Any:
    """A consumer connected as ``job``'s Kafka user, in the ingest group unless ``group_id`` says otherwise."""
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        **client_config(settings, job),
        "group_id": settings.KAFKA_GROUP,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 64,
        "bootstrap_timeout_ms": 15000,
    }
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def dead_letter(*, reason: RejectReason, detail: str, topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, object_key: str | None = None, bucket: str | None = None,
                study_uid: str | None = None, attempts: int | None = None, record_index: int | None = None,
                max_bytes: int = 256 * 1024) -> bytes:
    """The JSON a dead-letter record carries: why, where it came from, and the original message.

    It stays under ``max_bytes`` (the broker refuses records over its limit, 1 MB by default, and a record
    it refuses could never be dead-lettered): an original too large to fit is replaced by its size, its
    SHA-256 and its first bytes (``truncated: true``); ``xraylab dlq replay`` then reads the whole original
    from ``source`` (topic, partition, offset), where it still is within the topic's retention."""
    original: dict[str, Any] = {"encoding": "utf-8", "value": None}
    if value is not None:
        try:
            original["value"] = value.decode("utf-8")
        except UnicodeDecodeError:
            original = {"encoding": "base64", "value": base64.b64encode(value).decode("ascii")}
    doc = {
        "reason": reason,
        "detail": detail[:2000],
        "attempts": attempts,
        "source": {"topic": topic, "partition": partition, "offset": offset, "record_index": record_index,
                   "key": key.decode("utf-8", "replace")[:1024] if key else None},
        "bucket": bucket[:255] if bucket else bucket,
        "object_key": object_key[:1024] if object_key else object_key,
        "study_uid": study_uid,
        "failed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "original": original,
    }
    encoded = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    if len(encoded) <= max_bytes or value is None:  # the fields above are capped: ~5 KB at most without value
        return encoded
    head = max_bytes // 2
    while True:
        doc["original"] = {"truncated": True, "size": len(value), "sha256": hashlib.sha256(value).hexdigest(),
                           "encoding": "utf-8", "head": value[:head].decode("utf-8", "replace")}
        encoded = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        if len(encoded) <= max_bytes or head == 0:
            return encoded
        head //= 2
