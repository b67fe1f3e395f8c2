"""The pipeline step: objects from S3 events -> fetch and decode -> classify -> write -> one ``Outcome`` each.

The Ingress runs it for the ingest actor (``Ingress.process_batch``); it talks to the three
deployments through their handles, so it can be tested with stand-ins for them. A batch of objects
costs three handle calls, not three per object: the Fetcher fetches the batch concurrently and decodes
each object where it read it (``xraylab.model_input``), the Classifier batches the forward pass over the
model-sized arrays, and the Writer stores the batch in one transaction. A study's bytes never cross a
deployment hop: whatever its size, what travels is 64 KB. The HTTP routes decode here, in the Ingress, for
the same reason (``classify_bytes``).

The chain to decode with is the served model's (``Classifier.preprocess_spec``), asked once and kept; when a
promotion changes it, the Classifier refuses inputs prepared for the old one (``SpecChangedError``) and the
step prepares them again with the new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from xraylab.errors import RejectedInputError
from xraylab.imaging import ImageLimits
from xraylab.messages import (
    ModelInput,
    ObjectToProcess,
    Outcome,
    OutcomeStatus,
    PreparedObject,
    StudyRecord,
    Verdict,
    WriteResult,
)
from xraylab.model_input import InputPreparer, SpecChangedError

__all__ = ["ProcessStep"]

log = logging.getLogger("xraylab.step")
T = TypeVar("T")


class ProcessStep:
    """fetch and decode -> classify -> write for a batch of objects.

    Bad input (a ``RejectedInputError`` that a stage returns for one object) becomes a ``REJECTED``
    outcome with its reason; anything a stage raises (a service down, a timeout) is raised, so the
    caller retries the whole batch (writes are idempotent)."""

    def __init__(self, fetcher: Any, classifier: Any, writer: Any, limits: ImageLimits | None = None,
                 decode_threads: int = 2) -> None:
        self.fetcher = fetcher  # DeploymentHandles (or anything with the same .method.remote(...) calls)
        self.classifier = classifier
        self.writer = writer
        self.spec: dict[str, Any] | None = None  # the served model's chain, as the Classifier last said
        self.preparer = InputPreparer(limits)
        self._decode = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")

    async def served_spec(self) -> dict[str, Any]:
        if self.spec is None:
            self.spec = await self.classifier.preprocess_spec.remote()
        return self.spec

    async def _with_spec(self, run: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """``run(spec)``, and once more with the new chain if a promotion changed it meanwhile."""
        try:
            return await run(await self.served_spec())
        except Exception as exc:
            changed = SpecChangedError.behind(exc)
            if changed is None:
                raise
            log.info("the served model's preprocessing changed: preparing again")
            self.spec = changed.spec
            return await run(changed.spec)

    async def process_batch(self, items: list[ObjectToProcess]) -> list[Outcome]:
        t0 = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(items)
        good: list[tuple[int, PreparedObject]] = []
        to_write: list[tuple[int, StudyRecord, Verdict, float]] = []

        async def fetch_and_classify(spec: dict[str, Any]) -> None:
            outcomes[:] = [None] * len(items)
            good.clear()
            to_write.clear()
            fetched: list[PreparedObject | RejectedInputError] = await self.fetcher.fetch_many.remote(items, spec)
            for i, got in enumerate(fetched):
                if isinstance(got, RejectedInputError):
                    outcomes[i] = self._rejected(got)
                else:
                    good.append((i, got))
            verdicts: list[Verdict | RejectedInputError] = (
                await self.classifier.classify_many.remote([got.image for _, got in good]) if good else [])
            for (i, got), verdict in zip(good, verdicts, strict=True):
                if isinstance(verdict, RejectedInputError):
                    outcomes[i] = self._rejected(RejectedInputError(verdict.reason, verdict.detail,
                                                                    got.record.study_uid))
                else:
                    to_write.append((i, got.record, verdict, got.fetch_ms))

        await self._with_spec(fetch_and_classify)
        written: list[WriteResult] = (
            await self.writer.write_many.remote([(s, v, ms) for _, s, v, ms in to_write]) if to_write else [])
        total_ms = (time.perf_counter() - t0) * 1000
        for (i, study, verdict, _), result in zip(to_write, written, strict=True):
            status = OutcomeStatus.WRITTEN if result.created else OutcomeStatus.DUPLICATE
            outcomes[i] = Outcome(status, study_uid=study.study_uid, study_id=result.study_id,
                                  prediction_id=result.prediction_id, verdict=verdict, total_ms=total_ms)
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    async def classify_bytes(self, images: list[bytes]) -> list[Verdict | RejectedInputError]:
        """Images posted to the HTTP API: decoded here, at the edge, and scored in one Classifier call; bad ones
        come back as their ``RejectedInputError``, in place."""
        loop = asyncio.get_running_loop()

        async def prepare(data: bytes, spec: dict[str, Any]) -> ModelInput | RejectedInputError:
            try:
                return await loop.run_in_executor(self._decode, self.preparer.prepare, data, spec)
            except RejectedInputError as exc:
                return exc

        async def run(spec: dict[str, Any]) -> list[Verdict | RejectedInputError]:
            prepared = await asyncio.gather(*(prepare(data, spec) for data in images))
            inputs = [p for p in prepared if isinstance(p, ModelInput)]
            verdicts = iter(await self.classifier.classify_many.remote(inputs) if inputs else [])
            return [next(verdicts) if isinstance(p, ModelInput) else p for p in prepared]

        return await self._with_spec(run)

    @staticmethod
    def _rejected(error: RejectedInputError) -> Outcome:
        log.warning("study %s rejected: %s", error.study_uid or "(not fetched)", error.reason)
        return Outcome.rejected(error.reason, error.detail, error.study_uid)
