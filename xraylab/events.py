"""S3 event notifications -> the objects to process.

Accepts the event JSON that real stores put on Kafka:

* AWS S3 (``Records[]``, keys URL-encoded with ``+`` for spaces),
* MinIO's Kafka target (``{"EventName", "Key", "Records": [...]}``, same encoding),
* Ceph RGW (``eventSource: "ceph:s3"``, ``eventName`` without the ``s3:`` prefix, raw keys,
  ``opaqueData`` naming the endpoint),
* any of them inside a structured CloudEvents envelope (``data`` or ``data_base64``).

Removals, other non-create events and the AWS ``s3:TestEvent`` are ignored (an empty list);
anything that is not such an event raises ``MalformedEventError``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from xraylab.messages import ObjectToProcess

__all__ = ["MalformedEventError", "parse_s3_event", "make_s3_event"]


class MalformedEventError(ValueError):
    """The message is not an S3 event notification we understand."""


def _load(payload: bytes | str | dict[str, Any] | None) -> Any:
    if payload is None:  # a tombstone: a compacted topic's deletion marker, or a producer's null value
        raise MalformedEventError("tombstone: the message has no value")
    if isinstance(payload, dict):
        return payload
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEventError("event is not UTF-8 text") from exc
    try:
        return json.loads(payload)
    except json.JSONDecodeError as exc:
        raise MalformedEventError(f"event is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise MalformedEventError("event JSON is nested too deeply") from exc


def _unwrap_cloudevent(doc: dict[str, Any]) -> Any:
    if "data_base64" in doc:
        try:
            return _load(base64.b64decode(doc["data_base64"], validate=True))
        except (binascii.Error, ValueError, TypeError) as exc:
            if isinstance(exc, MalformedEventError):
                raise
            raise MalformedEventError("CloudEvents data_base64 is not base64") from exc
    data = doc.get("data")
    if isinstance(data, str | bytes):
        return _load(data)
    if isinstance(data, dict):
        return data
    raise MalformedEventError("CloudEvents envelope without data")


def _is_create(event_name: str) -> bool:
    name = event_name.removeprefix("s3:")
    return name.startswith("ObjectCreated")


def _record_to_object(record: Any, index: int) -> ObjectToProcess | None:
    if not isinstance(record, dict):
        raise MalformedEventError(f"Records[{index}] is not an object")
    event_name = record.get("eventName")
    if not isinstance(event_name, str):
        raise MalformedEventError(f"Records[{index}] has no eventName")
    if not _is_create(event_name):
        return None
    s3 = record.get("s3")
    if not isinstance(s3, dict):
        raise MalformedEventError(f"Records[{index}] has no s3 section")
    bucket = (s3.get("bucket") or {}).get("name") if isinstance(s3.get("bucket"), dict) else None
    obj = s3.get("object") if isinstance(s3.get("object"), dict) else None
    raw_key = obj.get("key") if obj else None
    if not isinstance(bucket, str) or not bucket or not isinstance(raw_key, str) or not raw_key:
        raise MalformedEventError(f"Records[{index}] lacks s3.bucket.name or s3.object.key")
    source = str(record.get("eventSource", ""))
    # Ceph RGW sends keys as they are; AWS and MinIO URL-encode them (form encoding, '+' = space).
    key = raw_key if source.startswith("ceph") else unquote_plus(raw_key)
    # ... but not every store says who it is: the other reading is tried when the first finds nothing
    # (a dead letter's one-record event keeps it as "xraylabAltKey", since it re-encodes the key).
    other = unquote_plus(raw_key) if key == raw_key else raw_key
    kept = obj.get("xraylabAltKey") if obj else None
    if isinstance(kept, str) and kept and kept != key:
        other = kept
    size = obj.get("size") if obj else None
    if size is not None:
        try:
            size = int(size)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MalformedEventError(f"Records[{index}] has a non-numeric size") from exc
    etag = obj.get("eTag") or obj.get("etag") if obj else None
    endpoint_id = record.get("endpointId") or record.get("opaqueData") or None
    return ObjectToProcess(
        bucket=bucket,
        key=key,
        size=size,
        etag=str(etag).strip('"') if etag else None,
        endpoint_id=str(endpoint_id) if endpoint_id else None,
        event_name=event_name.removeprefix("s3:"),
        event_time=record.get("eventTime"),
        alt_key=other if other != key else None,
    )


def parse_s3_event(payload: bytes | str | dict[str, Any] | None) -> list[ObjectToProcess]:
    """Objects to process in one Kafka message; ``[]`` for an event to ignore.

    Raises:
        MalformedEventError: the message is not JSON or not an S3 event notification.
    """
    doc = _load(payload)
    if not isinstance(doc, dict):
        raise MalformedEventError("event is not a JSON object")
    if "specversion" in doc:
        doc = _unwrap_cloudevent(doc)
        if not isinstance(doc, dict):
            raise MalformedEventError("CloudEvents data is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return []
    records = doc.get("Records")
    if not isinstance(records, list):
        raise MalformedEventError("event has no Records list")
    items = [_record_to_object(record, i) for i, record in enumerate(records)]
    return [item for item in items if item is not None]


def make_s3_event(item: ObjectToProcess, *, source: str = "xraylab:notifier") -> dict[str, Any]:
    """AWS-shaped S3 event JSON for one object (what the SeaweedFS notifier produces)."""
    record: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": source,
        "awsRegion": "",
        "eventTime": item.event_time,
        "eventName": item.event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "xraylab-notifier",
            "bucket": {"name": item.bucket, "arn": f"arn:aws:s3:::{item.bucket}"},
            "object": {"key": quote_plus(item.key, safe="/"), "size": item.size, "eTag": item.etag},
        },
    }
    if item.alt_key:
        record["s3"]["object"]["xraylabAltKey"] = item.alt_key
    if item.endpoint_id:
        record["endpointId"] = item.endpoint_id
    return {"Records": [record]}
