"""One S3 identity per job (cluster/local/seaweedfs.sh, s3_identities.py): each may do its own job, nothing else.
The probe of the finding: an uploading site's key can no longer publish or promote a model, read another
bucket or write research copies."""

import uuid

import pytest
from botocore.exceptions import ClientError

from xraylab.storage import make_s3_client

pytestmark = pytest.mark.integration


def client(settings, job: str):
    return make_s3_client(settings.s3_endpoint(None, job))


def denied(action) -> None:
    with pytest.raises(ClientError) as caught:
        action()
    assert caught.value.response["Error"]["Code"] in {"AccessDenied", "Forbidden", "403"}, caught.value.response


@pytest.fixture()
def buckets(s3, settings):
    """A source bucket of the tests' (test-*), a registry bucket and a research bucket, made by the admin."""
    tag = uuid.uuid4().hex[:8]
    names = {"source": f"test-{tag}", "registry": f"xray-models-{tag}", "research": f"{settings.RESEARCH_BUCKET}-{tag}"}
    for name in names.values():
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="seed", Body=b"seed")
    yield names
    for name in names.values():
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=name, Key=obj["Key"])
        s3.delete_bucket(Bucket=name)


def test_each_identity_does_its_own_job_only(settings, buckets) -> None:
    source, registry, research = buckets["source"], buckets["registry"], buckets["research"]
    upload, pipeline = client(settings, "upload"), client(settings, "pipeline")
    publish, serving, export = client(settings, "publish"), client(settings, "registry"), client(settings, "export")

    upload.put_object(Bucket=source, Key="film.jpeg", Body=b"x")  # uploaders write the source bucket
    for bucket in (registry, research):  # and nothing else: no model, no promotion, no research copy
        denied(lambda bucket=bucket: upload.put_object(Bucket=bucket, Key="v9/model.keras", Body=b"evil"))
    denied(lambda: upload.put_object(Bucket=registry, Key="PROMOTED", Body=b"v9"))
    denied(lambda: upload.get_object(Bucket=source, Key="seed"))  # nor read what others uploaded

    assert pipeline.get_object(Bucket=source, Key="film.jpeg")["Body"].read() == b"x"  # the pipeline reads sources
    denied(lambda: pipeline.put_object(Bucket=source, Key="x", Body=b"x"))
    for bucket in (registry, research):
        denied(lambda bucket=bucket: pipeline.get_object(Bucket=bucket, Key="seed"))

    publish.put_object(Bucket=registry, Key="v1/model.keras", Body=b"m")  # training publishes
    assert serving.get_object(Bucket=registry, Key="v1/model.keras")["Body"].read() == b"m"  # serving reads
    denied(lambda: serving.put_object(Bucket=registry, Key="PROMOTED", Body=b"v1"))
    denied(lambda: publish.get_object(Bucket=source, Key="seed"))

    export.put_object(Bucket=research, Key="copy.dcm", Body=b"d")  # the export alone writes research copies
    denied(lambda: export.put_object(Bucket=source, Key="x", Body=b"x"))
    denied(lambda: export.get_object(Bucket=registry, Key="seed"))
    for identity in (upload, pipeline, publish, serving, export):  # buckets are the administrator's
        denied(lambda identity=identity: identity.create_bucket(Bucket=f"test-new-{uuid.uuid4().hex[:6]}"))
