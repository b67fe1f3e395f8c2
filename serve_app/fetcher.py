"""Fetcher: reads an object from whichever S3 endpoint the event names, or an instance from the PACS when it names
``ORTHANC_ENDPOINT_ID`` (``xraylab.sources``: credentials from settings; a DICOM object's patient and study
metadata from its tags)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from xraylab.errors import RejectedInputError
from xraylab.messages import FetchedObject, ObjectToProcess
from xraylab.settings import get_settings
from xraylab.sources import Sources

__all__ = ["Fetcher"]


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class Fetcher:
    def __init__(self, concurrency: int = 16) -> None:
        self._settings = get_settings()
        self._sources = Sources(self._settings)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="fetch")  # the clients are thread-safe

    def fetch(self, item: ObjectToProcess) -> FetchedObject:
        """The object's bytes, eTag, content type and study metadata; bad input raises ``RejectedInputError``."""
        endpoint_id = item.endpoint_id or self._settings.S3_ENDPOINT_ID
        return self._sources.fetch(endpoint_id, item.bucket, item.key, alt_key=item.alt_key)

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
        """Raise unless each named S3 endpoint or the PACS (default: this deployment's own S3 endpoint) answers;
        an unknown id is skipped (its objects are rejected as ``unknown_endpoint``, which is no outage)."""
        ids = set(endpoint_ids or [self._settings.S3_ENDPOINT_ID])
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, self._sources.check, i)
                               for i in ids if self._sources.known(i)))
