"""Reading objects: input the S3 client refuses before sending anything is a rejection, not a retry."""

import pytest

from xraylab.errors import RejectedInputError, RejectReason
from xraylab.settings import S3Endpoint
from xraylab.storage import get_object, make_s3_client


def test_a_bucket_name_the_client_refuses_is_rejected_with_its_reason() -> None:
    # Nothing listens on this port: the refusal has to come before any request is sent.
    client = make_s3_client(S3Endpoint(url="http://127.0.0.1:9", access_key="k", secret_key="s"))
    with pytest.raises(RejectedInputError) as raised:
        get_object(client, "Bad Bucket!", "a.jpeg", max_bytes=1000)
    assert raised.value.reason is RejectReason.INVALID_NAME
    assert "Bad Bucket!" in raised.value.detail
