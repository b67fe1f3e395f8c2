"""Kafka clients with this project's settings, and the dead-letter record format."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from xraylab.errors import RejectReason
from xraylab.settings import Settings

__all__ = ["make_producer", "make_consumer", "dead_letter"]


def make_producer(settings: Settings, **overrides: Any) -> Any:
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP,
        "acks": "all",
        "retries": 5,
        "linger_ms": 5,
        "bootstrap_timeout_ms": 15000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(settings: Settings, *topics: str, **overrides: Any) -> Any:
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP,
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
                study_uid: str | None = None) -> bytes:
    """The JSON a dead-letter record carries: why, where it came from, and the original message."""
    original: dict[str, Any] = {"encoding": "utf-8", "value": None}
    if value is not None:
        try:
            original["value"] = value.decode("utf-8")
        except UnicodeDecodeError:
            original = {"encoding": "base64", "value": base64.b64encode(value).decode("ascii")}
    doc = {
        "reason": reason,
        "detail": detail,
        "source": {"topic": topic, "partition": partition, "offset": offset,
                   "key": key.decode("utf-8", "replace") if key else None},
        "bucket": bucket,
        "object_key": object_key,
        "study_uid": study_uid,
        "failed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "original": original,
    }
    return json.dumps(doc).encode("utf-8")
