"""Where the pipeline may read: only the configured sources, whatever an event names."""

from pathlib import Path

import pytest

from xraylab.errors import RejectedInputError, RejectReason
from xraylab.settings import Settings
from xraylab.sources import Sources


@pytest.mark.parametrize(("endpoint", "bucket", "reason"), [
    ("local", "xray-research", RejectReason.SOURCE_NOT_ALLOWED),  # the research export's copies
    ("local", "models", RejectReason.SOURCE_NOT_ALLOWED),  # the model registry's bucket
    ("local", "st-other-hospital", RejectReason.SOURCE_NOT_ALLOWED),  # a bucket no one configured
    ("east", "xray-images", RejectReason.SOURCE_NOT_ALLOWED),  # a source of another endpoint
    ("nowhere", "xray-images", RejectReason.UNKNOWN_ENDPOINT),
])
def test_an_event_cannot_make_the_pipeline_read_outside_its_sources(tmp_path: Path, endpoint: str, bucket: str,
                                                                    reason: RejectReason) -> None:
    settings = Settings(STATE_DIR=tmp_path, S3_SOURCE_BUCKETS="xray-images", MODEL_REGISTRY="s3://models/prod",
                        S3_ENDPOINT_URL="http://127.0.0.1:9", S3_EXTRA_ENDPOINTS=(
                            '{"east": {"url": "http://127.0.0.1:9", "access_key": "a", "secret_key": "b", '
                            '"buckets": ["films"]}}'))
    sources = Sources(settings)
    for read in (lambda: sources.fetch(endpoint, bucket, "k.jpeg"), lambda: sources.etag(endpoint, bucket, "k.jpeg")):
        with pytest.raises(RejectedInputError) as caught:  # refused before any request (port 9 answers nothing)
            read()
        assert caught.value.reason == reason
