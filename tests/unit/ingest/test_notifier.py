import io
import json
from pathlib import Path

from ingest.notifier import filer_event_to_object, iter_json_objects
from xraylab.events import make_s3_event, parse_s3_event

CAPTURED = Path(__file__).resolve().parents[2] / "fixtures" / "seaweedfs" / "filer_meta_tail.txt"


def captured_events() -> list[dict]:
    return list(iter_json_objects(io.StringIO(CAPTURED.read_text())))


def test_reads_pretty_printed_stream_in_pieces() -> None:
    text = CAPTURED.read_text()
    events = captured_events()
    assert len(events) == text.count('"tsNs"') >= 3
    # Line by line (as from a pipe) gives the same objects.
    assert list(iter_json_objects(io.StringIO(text))) == events


def test_captured_upload_and_delete_become_s3_events() -> None:
    refs = [r for r in (filer_event_to_object(e, "local") for e in captured_events()) if r is not None]
    assert [r.event_name for r in refs] == ["ObjectCreated:Put", "ObjectRemoved:Delete"]
    created = refs[0]
    assert created.bucket == "fixture-bucket"
    assert created.key == "st-mary/2026-11-20/chest 01+a.jpeg"
    assert created.size == len(b"\xff\xd8\xff fixture")
    assert created.etag and len(created.etag) == 32
    # What goes on the topic parses back to the same object; the delete is ignored downstream.
    [back] = parse_s3_event(json.dumps(make_s3_event(created)))
    assert (back.bucket, back.key, back.endpoint_id) == (created.bucket, created.key, "local")
    assert parse_s3_event(json.dumps(make_s3_event(refs[1]))) == []


def test_directories_and_system_paths_are_skipped() -> None:
    directory = {"directory": "/buckets/b", "eventNotification": {"newEntry": {"name": "d", "isDirectory": True}}}
    system = {"directory": "/buckets/.system/x", "eventNotification": {"newEntry": {"name": "f", "attributes": {}}}}
    outside = {"directory": "/etc", "eventNotification": {"newEntry": {"name": "f", "attributes": {}}}}
    assert [filer_event_to_object(e, "local") for e in (directory, system, outside)] == [None, None, None]


class RecordingProducer:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def send(self, topic: str, key: bytes, value: bytes):
        self.keys.append(key.decode())
        return self

    def get(self, timeout: float) -> None:
        return None


def upload_event(name: str, ts_ns: int) -> dict:
    entry = {"name": name, "attributes": {"fileSize": 3}}
    return {"directory": "/buckets/b/d", "tsNs": str(ts_ns),
            "eventNotification": {"newEntry": entry, "newParentPath": "/buckets/b/d"}}


def test_out_of_order_events_are_all_published_and_the_newest_time_saved(tmp_path) -> None:
    """Under concurrent uploads the filer log is not ordered by tsNs (seen with 8 uploaders: two events 40 us
    apart arrived swapped); an event older than the last one seen must still be published."""
    from ingest.notifier import SeaweedNotifier
    from xraylab.settings import Settings

    notifier = SeaweedNotifier(Settings(STATE_DIR=tmp_path, S3_SOURCE_BUCKETS="b"), state_file=tmp_path / "ts",
                               weed="weed")
    producer = RecordingProducer()
    events = [upload_event("a.jpeg", 1_000_100), upload_event("b.jpeg", 1_000_040), upload_event("c.jpeg", 1_000_200)]
    assert notifier.publish(events, producer) == 3
    assert producer.keys == ["d/a.jpeg", "d/b.jpeg", "d/c.jpeg"]
    assert (tmp_path / "ts").read_text() == "1000200"


def test_only_multipart_staging_parts_are_skipped_not_keys_with_an_uploads_segment() -> None:
    def created(directory: str, name: str) -> dict:
        return {"directory": directory, "tsNs": 1, "eventNotification": {
            "newParentPath": directory, "newEntry": {"name": name, "attributes": {"fileSize": 3}}}}

    part = created("/buckets/b/.uploads/3f2a9c", "0001_8c1d.part")
    assert filer_event_to_object(part, "local") is None
    for directory, name, key in [("/buckets/b/st-mary/.uploads", "x.jpeg", "st-mary/.uploads/x.jpeg"),
                                 ("/buckets/b/.uploads", "x.jpeg", ".uploads/x.jpeg")]:
        item = filer_event_to_object(created(directory, name), "local")
        assert item is not None and (item.bucket, item.key) == ("b", key)


def test_only_source_buckets_are_uploads() -> None:
    from xraylab.settings import load_settings

    settings = load_settings(RESEARCH_BUCKET="research-copies", MODEL_REGISTRY="s3://research-models/prod",
                             S3_SOURCE_BUCKETS="uploads,research-*")

    def event(bucket: str) -> dict:
        return {"directory": f"/buckets/{bucket}/p1", "tsNs": 1, "eventNotification": {
            "newParentPath": f"/buckets/{bucket}/p1", "newEntry": {"name": "x.dcm", "attributes": {"fileSize": 3}}}}

    def is_source(bucket: str) -> bool:
        return settings.source_allowed(None, bucket)

    assert settings.internal_buckets() == {"research-copies", "research-models"}
    for bucket in ("research-copies", "research-models", "elsewhere"):  # own buckets, even under a source prefix
        assert filer_event_to_object(event(bucket), "local", is_source) is None, bucket
    for bucket in ("uploads", "research-site-2"):
        assert filer_event_to_object(event(bucket), "local", is_source) is not None, bucket
