"""S3 access shared by the Fetcher, the uploader and the review UI (boto3, any endpoint)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from xraylab.errors import RejectedInputError
from xraylab.settings import S3Endpoint

__all__ = ["make_s3_client", "FetchedObject", "get_object", "METADATA_FIELDS"]

# Object metadata the uploader sets (x-amz-meta-*), and the study columns they fill.
METADATA_FIELDS = ("hospital", "patient-id", "patient-name", "study-date")


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


@dataclass
class FetchedObject:
    data: bytes
    etag: str | None
    content_type: str | None
    metadata: dict[str, str] = field(default_factory=dict)


def _decode_meta(value: str) -> str:
    # Non-ASCII metadata is sent RFC 2047 base64-encoded by the uploader (=?utf-8?b?...?=).
    if value.startswith("=?utf-8?b?") and value.endswith("?="):
        return base64.b64decode(value[10:-2]).decode("utf-8")
    return value


def encode_meta(value: str) -> str:
    """Make a metadata value header-safe (S3 metadata must be ASCII)."""
    if value.isascii():
        return value
    return "=?utf-8?b?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def get_object(client: Any, bucket: str, key: str, *, max_bytes: int) -> FetchedObject:
    """Read an object; missing or oversized objects raise ``RejectedInputError``."""
    from botocore.exceptions import ClientError

    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
            raise RejectedInputError("missing_object", f"{code} for s3://{bucket}/<key>") from exc
        raise
    length = int(response.get("ContentLength") or 0)
    body = response["Body"]
    if length > max_bytes:
        body.close()
        raise RejectedInputError("too_large", f"{length} bytes > {max_bytes}")
    data = body.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RejectedInputError("too_large", f"more than {max_bytes} bytes")
    metadata = {k.lower(): _decode_meta(v) for k, v in (response.get("Metadata") or {}).items()}
    etag = (response.get("ETag") or "").strip('"') or None
    return FetchedObject(data=data, etag=etag, content_type=response.get("ContentType"), metadata=metadata)
