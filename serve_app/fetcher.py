"""Fetcher: reads an object from whichever S3 endpoint the event names (credentials from settings)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve

from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import FetchedObject, ObjectToProcess
from xraylab.settings import UnknownEndpointError, get_settings
from xraylab.storage import check_reachable, get_object, make_s3_client

__all__ = ["Fetcher"]


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class Fetcher:
    def __init__(self, concurrency: int = 16) -> None:
        self._settings = get_settings()
        self._clients: dict[str, Any] = {}
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="fetch")  # boto3 clients are thread-safe
        self._lock = threading.Lock()  # one client per endpoint: creating one costs ~0.1 s of CPU

    def _client(self, endpoint_id: str) -> Any:
        with self._lock:
            if endpoint_id not in self._clients:
                try:
                    endpoint = self._settings.s3_endpoint(endpoint_id)
                except UnknownEndpointError as exc:
                    raise RejectedInputError(RejectReason.UNKNOWN_ENDPOINT, str(exc)) from exc
                self._clients[endpoint_id] = make_s3_client(endpoint)
            return self._clients[endpoint_id]

    def fetch(self, item: ObjectToProcess) -> FetchedObject:
        """The object's bytes, eTag, content type and study metadata; bad input raises ``RejectedInputError``."""
        endpoint_id = item.endpoint_id or self._settings.S3_ENDPOINT_ID
        return get_object(self._client(endpoint_id), item.bucket, item.key, alt_key=item.alt_key,
                          max_bytes=self._settings.MAX_IMAGE_BYTES, endpoint_id=endpoint_id)

    def _fetch_or_reject(self, item: ObjectToProcess) -> FetchedObject | RejectedInputError:
        try:
            return self.fetch(item)
        except RejectedInputError as exc:
            return exc

    async def fetch_many(self, items: list[ObjectToProcess]) -> list[FetchedObject | RejectedInputError]:
        """Each object fetched concurrently; bad input comes back as its ``RejectedInputError``, in place.
        Anything else (S3 down) raises for the whole batch."""
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self._pool, self._fetch_or_reject, item)
                                           for item in items)))

    async def check_health(self, endpoint_ids: list[str] | None = None) -> None:
        """Raise unless each named S3 endpoint (default: this deployment's own) answers; an unknown id is
        skipped (its objects are rejected as ``unknown_endpoint``, which is no outage)."""
        ids = set(endpoint_ids or [self._settings.S3_ENDPOINT_ID])
        configured = self._settings.s3_endpoints()
        known = [i for i in ids if i in configured]
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, check_reachable, self._client(i)) for i in known))
