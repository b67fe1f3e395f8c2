"""Where studies come from: the S3 endpoints (by id, credentials from settings) and the PACS (Orthanc, by
``ORTHANC_ENDPOINT_ID``). The Fetcher, the review app's pictures and the research export read objects here, so
that a study from the PACS and a JPEG from a bucket are read, tagged and refused the same way."""

from __future__ import annotations

import threading
from typing import Any

from xraylab.dicom import with_tags
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import FetchedObject
from xraylab.orthanc import OrthancClient, fetch_instance
from xraylab.settings import Settings, UnknownEndpointError
from xraylab.storage import check_reachable, get_object, make_s3_client, object_etag

__all__ = ["Sources"]


class Sources:
    """One client per S3 endpoint and one for the PACS, each made on first use; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._s3: dict[str, Any] = {}
        self._pacs: OrthancClient | None = None
        self._lock = threading.Lock()  # creating a boto3 client costs ~0.1 s of CPU: once per endpoint

    def is_pacs(self, endpoint_id: str) -> bool:
        return endpoint_id == self.settings.ORTHANC_ENDPOINT_ID

    def check_source(self, endpoint_id: str, bucket: str) -> None:
        """Refuse (``source_not_allowed``) a bucket that is not a configured source of its endpoint: whoever can
        write an event must not make the pipeline read the research bucket, the registry or another site's
        bucket into a worklist. The PACS has one source, its instances."""
        if self.is_pacs(endpoint_id):
            return
        if endpoint_id not in self.settings.s3_endpoints():
            raise RejectedInputError(RejectReason.UNKNOWN_ENDPOINT,
                                     f"no S3 endpoint configured with id {endpoint_id!r}")
        if not self.settings.source_allowed(endpoint_id, bucket):
            raise RejectedInputError(RejectReason.SOURCE_NOT_ALLOWED,
                                     f"bucket {bucket[:255]!r} is not a source of endpoint {endpoint_id!r} "
                                     "(XRAYLAB_S3_SOURCE_BUCKETS, or the endpoint's \"buckets\")")

    def s3(self, endpoint_id: str) -> Any:
        """The boto3 client of an S3 endpoint; an id with no configured credentials is ``unknown_endpoint``."""
        with self._lock:
            if endpoint_id not in self._s3:
                try:
                    endpoint = self.settings.s3_endpoint(endpoint_id)
                except UnknownEndpointError as exc:
                    raise RejectedInputError(RejectReason.UNKNOWN_ENDPOINT, str(exc)) from exc
                self._s3[endpoint_id] = make_s3_client(endpoint)
            return self._s3[endpoint_id]

    def pacs(self) -> OrthancClient:
        with self._lock:
            if self._pacs is None:
                self._pacs = OrthancClient.from_settings(self.settings)
            return self._pacs

    def fetch(self, endpoint_id: str, bucket: str, key: str, *, alt_key: str | None = None) -> FetchedObject:
        """The object's bytes and study metadata (a DICOM object's from its tags); bad input raises
        ``RejectedInputError``, anything else (a store down) its own error."""
        max_bytes = self.settings.MAX_IMAGE_BYTES
        self.check_source(endpoint_id, bucket)
        if self.is_pacs(endpoint_id):
            fetched = fetch_instance(self.pacs(), key, max_bytes=max_bytes, endpoint_id=endpoint_id,
                                     hospital=self.settings.ORTHANC_HOSPITAL)
        else:
            fetched = get_object(self.s3(endpoint_id), bucket, key, alt_key=alt_key, max_bytes=max_bytes,
                                 endpoint_id=endpoint_id)
        return with_tags(fetched)

    def etag(self, endpoint_id: str, bucket: str, key: str) -> str | None:
        """The object's eTag as ``fetch`` gives it (S3: its ETag, from a HEAD request; the PACS: the file's MD5, as
        Orthanc recorded it), without reading the object; None when it is no longer there."""
        self.check_source(endpoint_id, bucket)
        if self.is_pacs(endpoint_id):
            return self.pacs().instance_md5(key, max_bytes=self.settings.MAX_IMAGE_BYTES)
        return object_etag(self.s3(endpoint_id), bucket, key)

    def check(self, endpoint_id: str) -> None:
        """Raise unless the endpoint (or the PACS) answers at all."""
        if self.is_pacs(endpoint_id):
            self.pacs().system()
        else:
            check_reachable(self.s3(endpoint_id))

    def known(self, endpoint_id: str) -> bool:
        return self.is_pacs(endpoint_id) or endpoint_id in self.settings.s3_endpoints()
