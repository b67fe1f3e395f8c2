"""SeaweedFS S3 with SigV4 enforced, as started by cluster/local/seaweedfs.sh."""

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import StudyMetadata
from xraylab.storage import get_object, make_s3_client

pytestmark = pytest.mark.integration


def test_wrong_secret_is_refused(settings) -> None:
    endpoint = settings.s3_endpoint(None).model_copy(update={"secret_key": SecretStr("wrong-secret")})
    with pytest.raises(ClientError) as info:
        make_s3_client(endpoint).list_buckets()
    assert info.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")


def test_metadata_round_trip_and_missing_object(s3, bucket) -> None:
    from ingest.uploader import upload_study

    sent = StudyMetadata(hospital="st-mary", patient_id="P1", patient_name="Chloé Novak", study_date="2026-11-20")
    upload_study(s3, bucket, "a/b c.jpeg", b"bytes", sent, content_type="image/jpeg")
    obj = get_object(s3, bucket, "a/b c.jpeg", max_bytes=100, endpoint_id="local")
    assert obj.data == b"bytes" and obj.content_type == "image/jpeg" and obj.endpoint_id == "local"
    assert obj.metadata == sent
    assert obj.metadata.patient_name == "Chloé Novak" and obj.metadata.hospital == "st-mary"
    with pytest.raises(RejectedInputError) as info:
        get_object(s3, bucket, "missing.jpeg", max_bytes=100)
    assert info.value.reason is RejectReason.MISSING_OBJECT
    with pytest.raises(RejectedInputError) as info:
        get_object(s3, bucket, "a/b c.jpeg", max_bytes=3)
    assert info.value.reason is RejectReason.TOO_LARGE


def test_a_key_not_found_as_read_is_found_under_its_other_reading(s3, bucket) -> None:
    """Ceph RGW sends keys raw, AWS and MinIO URL-encoded; an event from a store that does not say which
    is read one way, and the other reading is tried before the object counts as missing."""
    from xraylab.events import parse_s3_event

    s3.put_object(Bucket=bucket, Key="st-mary/chest+01 a.jpeg", Body=b"raw key")
    raw_event = {"Records": [{"eventName": "ObjectCreated:Put", "eventSource": "some:store", "s3": {
        "bucket": {"name": bucket}, "object": {"key": "st-mary/chest+01 a.jpeg"}}}]}
    [item] = parse_s3_event(raw_event)
    assert item.key == "st-mary/chest 01 a.jpeg" and item.alt_key == "st-mary/chest+01 a.jpeg"
    obj = get_object(s3, bucket, item.key, alt_key=item.alt_key, max_bytes=100)
    assert (obj.data, obj.key) == (b"raw key", "st-mary/chest+01 a.jpeg")
    with pytest.raises(RejectedInputError) as info:
        get_object(s3, bucket, "nope+1.jpeg", alt_key="nope 1.jpeg", max_bytes=100)
    assert info.value.reason is RejectReason.MISSING_OBJECT


def test_undecodable_metadata_is_refused_with_its_reason(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="m.jpeg", Body=b"x", Metadata={"patient-name": "=?utf-8?b?/w==?="})
    with pytest.raises(RejectedInputError) as info:
        get_object(s3, bucket, "m.jpeg", max_bytes=100)
    assert info.value.reason is RejectReason.BAD_METADATA and "patient-name" in info.value.detail


def test_no_seaweedfs_port_serves_objects_or_metadata_without_credentials(settings, s3, bucket, tmp_path) -> None:
    """Only the S3 gateway (SigV4) and mutual-TLS gRPC clients reach objects and their patient metadata."""
    import base64
    import io
    import os
    import subprocess

    import requests

    from ingest.notifier import _find_weed, iter_json_objects

    body = os.urandom(200_000)  # big enough to live in a volume chunk, not inline in the filer entry
    s3.put_object(Bucket=bucket, Key="p/a.jpeg", Body=body, Metadata={"patient-id": "P-HIDDEN-7"})
    filer = f"http://127.0.0.1:{settings.SEAWEED_FILER_PORT}"
    read = requests.get(f"{filer}/buckets/{bucket}/p/a.jpeg", timeout=10)
    assert read.status_code >= 400 and "P-HIDDEN-7" not in str(read.headers) and body not in read.content
    write = requests.put(f"{filer}/buckets/{bucket}/p/evil.jpeg", data=b"x", timeout=10)
    assert write.status_code >= 400
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="p/evil.jpeg")
    lookup = requests.get(f"http://127.0.0.1:{settings.SEAWEED_MASTER_PORT}/dir/lookup?volumeId=1", timeout=10)
    assert lookup.status_code == 404 and "Authorization" not in lookup.headers, "no volume token for anyone"

    def tail(*config: str) -> list[dict]:
        command = [_find_weed(), *config, "filer.meta.tail", f"-filer=127.0.0.1:{settings.SEAWEED_FILER_PORT}",
                   f"-pathPrefix=/buckets/{bucket}", "-timeAgo=1h"]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=8, cwd=tmp_path,
                                 env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}).stdout
        except subprocess.TimeoutExpired as exc:  # it follows the log until stopped
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return list(iter_json_objects(io.StringIO(out)))

    assert tail() == [], "the filer's gRPC port refuses a client without the stack's certificate"
    events = tail(f"-config_dir={settings.SEAWEED_CLIENT_CONFIG_DIR}")
    entry = next(e["eventNotification"]["newEntry"] for e in events
                 if (e["eventNotification"].get("newEntry") or {}).get("name") == "a.jpeg")
    extended = {k.lower(): base64.b64decode(v).decode() for k, v in (entry.get("extended") or {}).items()}
    assert extended.get("x-amz-meta-patient-id") == "P-HIDDEN-7", "with it, the notifier sees the entry"
    chunk = entry["chunks"][0]["fid"]
    fid = f"{chunk['volumeId']},{int(chunk['fileKey']):x}{int(chunk['cookie']):08x}"
    volume = requests.get(f"http://127.0.0.1:{settings.SEAWEED_VOLUME_PORT}/{fid}", timeout=10)
    assert volume.status_code == 401 and body not in volume.content, "a volume read needs a signed token"
