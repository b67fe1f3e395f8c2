"""The dead-letter record: why, where from, the original message, and no patient data of its own."""

import base64
import json

from ingest.kafka_io import dead_letter
from xraylab.errors import RejectReason


def test_dead_letter_carries_reason_source_and_original_text() -> None:
    doc = json.loads(dead_letter(reason=RejectReason.MISSING_OBJECT, detail="NoSuchKey", topic="t", partition=2,
                                 offset=41, key=b"k/\xc3\xa9.jpeg", value=b'{"Records": []}', object_key="k/é.jpeg",
                                 bucket="b", study_uid="uid"))
    assert doc["reason"] == "missing_object" and doc["detail"] == "NoSuchKey"
    assert doc["source"] == {"topic": "t", "partition": 2, "offset": 41, "record_index": None, "key": "k/é.jpeg"}
    assert (doc["bucket"], doc["object_key"], doc["study_uid"]) == ("b", "k/é.jpeg", "uid")
    assert doc["original"] == {"encoding": "utf-8", "value": '{"Records": []}'}
    assert doc["failed_at"].endswith("+00:00")


def test_binary_and_null_originals() -> None:
    binary = json.loads(dead_letter(reason=RejectReason.MALFORMED_EVENT, detail="x", topic="t", partition=0,
                                    offset=0, key=None, value=b"\xff\xfe"))
    assert binary["original"] == {"encoding": "base64", "value": base64.b64encode(b"\xff\xfe").decode()}
    assert binary["source"]["key"] is None and binary["object_key"] is None
    tombstone = json.loads(dead_letter(reason=RejectReason.MALFORMED_EVENT, detail="x", topic="t", partition=0,
                                       offset=1, key=b"k", value=None))
    assert tombstone["original"] == {"encoding": "utf-8", "value": None}
