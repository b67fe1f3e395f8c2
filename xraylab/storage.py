"""S3 access shared by the Fetcher, the uploader and the review UI (boto3, any endpoint)."""

from __future__ import annotations

import time
from typing import Any

from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import FetchedObject, StudyMetadata
from xraylab.settings import S3Endpoint

__all__ = ["make_s3_client", "get_object", "object_etag", "check_reachable", "error_code",
           "MISSING_CODES"]

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})  # what S3 answers for "not there"


def error_code(exc: Any) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``PreconditionFailed``, ``404``...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def make_s3_client(endpoint: S3Endpoint) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key.get_secret_value(),
        aws_secret_access_key=endpoint.secret_key.get_secret_value(),
        region_name=endpoint.region,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def get_object(client: Any, bucket: str, key: str, *, max_bytes: int, endpoint_id: str = "",
               alt_key: str | None = None) -> FetchedObject:
    """Read an object (under ``alt_key`` when ``key`` is not found); missing or oversized objects and
    undecodable metadata raise ``RejectedInputError``."""
    try:
        return _get_object(client, bucket, key, max_bytes=max_bytes, endpoint_id=endpoint_id)
    except RejectedInputError as exc:
        if exc.reason is not RejectReason.MISSING_OBJECT or not alt_key or alt_key == key:
            raise
    return _get_object(client, bucket, alt_key, max_bytes=max_bytes, endpoint_id=endpoint_id)


def _get_object(client: Any, bucket: str, key: str, *, max_bytes: int, endpoint_id: str) -> FetchedObject:
    from botocore.exceptions import ClientError, ParamValidationError

    t0 = time.perf_counter()
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ParamValidationError as exc:  # refused before any request: retrying cannot help
        raise RejectedInputError(RejectReason.INVALID_NAME, str(exc).replace("\n", " ")[:300]) from exc
    except ClientError as exc:
        code = error_code(exc)
        if code in MISSING_CODES:
            raise RejectedInputError(RejectReason.MISSING_OBJECT, f"{code} for s3://{bucket}/<key>") from exc
        raise
    length = int(response.get("ContentLength") or 0)
    body = response["Body"]
    if length > max_bytes:
        body.close()
        raise RejectedInputError(RejectReason.TOO_LARGE, f"{length} bytes > {max_bytes}")
    data = body.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RejectedInputError(RejectReason.TOO_LARGE, f"more than {max_bytes} bytes")
    return FetchedObject(
        data=data,
        etag=(response.get("ETag") or "").strip('"') or None,
        content_type=response.get("ContentType"),
        metadata=StudyMetadata.from_s3_metadata(response.get("Metadata") or {}),
        endpoint_id=endpoint_id,
        fetch_ms=(time.perf_counter() - t0) * 1000,
        key=key,
    )


def object_etag(client: Any, bucket: str, key: str) -> str | None:
    """The object's ETag as ``get_object`` gives it (quotes stripped; "" if the store sends none) from a HEAD
    request, without reading the object; None when it is not there. Other errors raise."""
    from botocore.exceptions import ClientError

    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in MISSING_CODES:
            return None
        raise
    return (response.get("ETag") or "").strip('"')


def check_reachable(client: Any) -> None:
    """Raise unless the store answers at all: any HTTP answer under 500 (even 403) counts as up."""
    from botocore.exceptions import ClientError

    try:
        client.list_buckets()
    except ClientError as exc:
        if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500) >= 500:
            raise
