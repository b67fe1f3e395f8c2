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
