"""Fetcher: reads an object from whichever S3 endpoint the event names (credentials from settings)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import serve

from xraylab.errors import RejectedInputError
from xraylab.settings import UnknownEndpointError, get_settings
from xraylab.storage import get_object, make_s3_client

log = logging.getLogger("xraylab.fetcher")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class Fetcher:
    def __init__(self) -> None:
        self._settings = get_settings()
        self._clients: dict[str, Any] = {}

    def _client(self, endpoint_id: str) -> Any:
        if endpoint_id not in self._clients:
            try:
                endpoint = self._settings.s3_endpoint(endpoint_id)
            except UnknownEndpointError as exc:
                raise RejectedInputError("unknown_endpoint", str(exc)) from exc
            self._clients[endpoint_id] = make_s3_client(endpoint)
        return self._clients[endpoint_id]

    def fetch(self, ref: dict[str, Any]) -> dict[str, Any]:
        """``ref`` is an ``ObjectRef.to_dict()``; returns bytes, eTag, content type and metadata."""
        endpoint_id = ref.get("endpoint_id") or self._settings.S3_ENDPOINT_ID
        t0 = time.perf_counter()
        obj = get_object(self._client(endpoint_id), ref["bucket"], ref["key"],
                         max_bytes=self._settings.MAX_IMAGE_BYTES)
        return {
            "data": obj.data,
            "etag": obj.etag,
            "content_type": obj.content_type,
            "metadata": obj.metadata,
            "endpoint_id": endpoint_id,
            "fetch_ms": (time.perf_counter() - t0) * 1000,
        }
