import json
import subprocess
import sys
from pathlib import Path

import pytest

from xraylab.events import MalformedEventError, make_s3_event, parse_s3_event
from xraylab.messages import ObjectToProcess

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "events"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_aws_put_decodes_form_encoded_key() -> None:
    [ref] = parse_s3_event(load("aws_put.json"))
    assert ref.bucket == "xray-images"
    assert ref.key == "st-mary/2026-11-20/chest 01+a.jpeg"
    assert ref.size == 48213
    assert ref.etag == "0e6b1e2f1f6a4b7e9f9f1ab3c3f0d2aa"
    assert ref.event_name == "ObjectCreated:Put"


def test_multi_record_keeps_creates_and_skips_removal() -> None:
    refs = parse_s3_event(load("aws_multi.json"))
    assert [r.key for r in refs] == ["northgate/a.png", "northgate/bé c.jpeg"]
    assert refs[1].event_name == "ObjectCreated:CompleteMultipartUpload"


@pytest.mark.parametrize("name", ["aws_test_event.json", "aws_delete.json"])
def test_events_to_ignore(name: str) -> None:
    assert parse_s3_event(load(name)) == []


def test_minio_kafka_target_payload() -> None:
    [ref] = parse_s3_event(load("minio_kafka.json"))
    assert (ref.bucket, ref.key, ref.size) == ("xray-images", "riverside/2026-11-21/scan 7.png", 73411)
    assert ref.event_name == "ObjectCreated:Put"


def test_ceph_keys_are_raw_and_opaque_data_names_endpoint() -> None:
    [ref] = parse_s3_event(load("ceph_rgw.json"))
    assert ref.key == "northgate/2026-11-22/ward 3+bed 12.jpeg"
    assert ref.endpoint_id == "ceph-northgate"


@pytest.mark.parametrize("name, key", [
    ("cloudevents_structured.json", "northgate/2026-11-22/ward 3+bed 12.jpeg"),
    ("cloudevents_base64.json", "st-mary/2026-11-20/chest 01+a.jpeg"),
])
def test_cloudevents_envelopes(name: str, key: str) -> None:
    [ref] = parse_s3_event(load(name))
    assert ref.key == key


@pytest.mark.parametrize("payload, message", [
    (load("malformed_truncated.json"), "not JSON"),
    (load("malformed_no_key.json"), "lacks s3.bucket.name or s3.object.key"),
    (load("malformed_not_object.json"), "not a JSON object"),
    (b"\xff\xfe binary", "not UTF-8"),
    (b'{"hello": "world"}', "no Records"),
    (b'{"Records": [{"s3": {}}]}', "no eventName"),
    (b'{"specversion": "1.0", "id": "x"}', "without data"),
])
def test_malformed_events_raise(payload: bytes, message: str) -> None:
    with pytest.raises(MalformedEventError, match=message):
        parse_s3_event(payload)


def test_make_s3_event_round_trips_awkward_keys() -> None:
    ref = ObjectToProcess(bucket="b", key="dir/a b+c%d é.jpeg", size=5, etag="e", endpoint_id="local")
    [back] = parse_s3_event(json.dumps(make_s3_event(ref)))
    assert (back.bucket, back.key, back.size, back.etag, back.endpoint_id) == ("b", ref.key, 5, "e", "local")


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "xraylab_cli", "events", "parse", *args], input=stdin,
                          capture_output=True, timeout=60)


def test_cli_parse_prints_one_line_per_object() -> None:
    out = run_cli(str(FIXTURES / "aws_multi.json"))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert lines == [{"bucket": "xray-images", "key": "northgate/a.png", "size": 1000},
                     {"bucket": "xray-images", "key": "northgate/bé c.jpeg", "size": 2000}]


def test_cli_parse_stdin_ignored_event_prints_nothing() -> None:
    out = run_cli("-", stdin=load("aws_test_event.json"))
    assert (out.returncode, out.stdout) == (0, b"")


def test_cli_parse_malformed_exits_2_with_one_line() -> None:
    out = run_cli("-", stdin=load("malformed_truncated.json"))
    assert out.returncode == 2
    assert out.stdout == b""
    assert len(out.stderr.decode().strip().splitlines()) == 1
    assert out.stderr.decode().startswith("error: event is not JSON")


def test_a_tombstone_is_a_malformed_event_not_a_crash() -> None:
    with pytest.raises(MalformedEventError, match="tombstone"):
        parse_s3_event(None)


def test_each_key_carries_its_other_reading_only_where_it_differs() -> None:
    def one(source: str, key: str):
        [item] = parse_s3_event({"Records": [{"eventName": "ObjectCreated:Put", "eventSource": source,
                                              "s3": {"bucket": {"name": "b"}, "object": {"key": key}}}]})
        return item.key, item.alt_key

    assert one("aws:s3", "a/chest+01%2B.jpeg") == ("a/chest 01+.jpeg", "a/chest+01%2B.jpeg")
    assert one("ceph:s3", "a/chest+01.jpeg") == ("a/chest+01.jpeg", "a/chest 01.jpeg")
    assert one("aws:s3", "a/plain.jpeg") == ("a/plain.jpeg", None)
