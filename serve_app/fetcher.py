"""Fetcher: reads an object from whichever S3 endpoint the event names, or an instance from the PACS when it names
``ORTHANC_ENDPOINT_ID`` (``xraylab.sources``: credentials from settings; a DICOM object's patient and study
metadata from its tags), and decodes it there into the model's input (``xraylab.model_input``): a study's bytes
cross the object store once and no deployment hop; what leaves the Fetcher is its row and a model-sized array.

Reading waits on the network and decoding on the CPU, so each has a pool of its own: up to ``concurrency``
objects in flight from the stores, and as many decoding at once as there are cores (a 15 MB DICOM decodes to
about 100 MB of intermediate arrays; more at once would only hold more memory)."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve

from xraylab.errors import RejectedInputError
from xraylab.messages import FetchedObject, ObjectToProcess, PreparedObject, StudyRecord
from xraylab.model_input import InputPreparer
from xraylab.settings import get_settings
from xraylab.sources import Sources

__all__ = ["Fetcher"]


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class Fetcher:
    def __init__(self, concurrency: int = 16) -> None:
        self._settings = get_settings()
        self._sources = Sources(self._settings)
        self._preparer = InputPreparer(self._settings.image_limits())
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="fetch")  # the clients are thread-safe
        self._decode = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="decode")

    def fetch(self, item: ObjectToProcess) -> FetchedObject:
        """The object's bytes, eTag, content type and study metadata; bad input raises ``RejectedInputError``."""
        endpoint_id = item.endpoint_id or self._settings.S3_ENDPOINT_ID
        return self._sources.fetch(endpoint_id, item.bucket, item.key, alt_key=item.alt_key)

    async def _prepare_or_reject(self, item: ObjectToProcess,
                                 spec: dict[str, Any]) -> PreparedObject | RejectedInputError:
        loop = asyncio.get_running_loop()
        try:
            fetched = await loop.run_in_executor(self._pool, self.fetch, item)
        except RejectedInputError as exc:
            return exc
        record = StudyRecord.of(item, fetched)
        try:
            image = await loop.run_in_executor(self._decode, self._preparer.prepare, fetched.data, spec)
        except RejectedInputError as exc:
            return RejectedInputError(exc.reason, exc.detail, record.study_uid)
        return PreparedObject(record, image, fetched.fetch_ms)

    async def fetch_many(self, items: list[ObjectToProcess],
                         spec: dict[str, Any]) -> list[PreparedObject | RejectedInputError]:
        """Each object fetched concurrently and decoded with ``spec`` (a ``PreprocessSpec`` as a dict: the
        scoring model's); bad input comes back as its ``RejectedInputError``, in place. Anything else (S3
        down) raises for the whole batch."""
        return list(await asyncio.gather(*(self._prepare_or_reject(item, spec) for item in items)))

    async def check_health(self, endpoint_ids: list[str] | None = None) -> None:
        """Raise unless each named S3 endpoint or the PACS (default: this deployment's own S3 endpoint) answers;
        an unknown id is skipped (its objects are rejected as ``unknown_endpoint``, which is no outage)."""
        ids = set(endpoint_ids or [self._settings.S3_ENDPOINT_ID])
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, self._sources.check, i)
                               for i in ids if self._sources.known(i)))
