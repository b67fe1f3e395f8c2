"""The pipeline step: objects from S3 events -> fetch -> classify -> write -> one ``Outcome`` each.

The Ingress runs it for the ingest actor (``Ingress.process_batch``); it talks to the three
deployments through their handles, so it can be tested with stand-ins for them. A batch of objects
costs three handle calls, not three per object: the Fetcher fetches the batch concurrently, the
Classifier decodes it in a pool and batches the forward pass, and the Writer stores it in one
transaction. Per-request overhead, not the model, is what limits a 2-core machine.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from xraylab.errors import RejectedInputError
from xraylab.messages import FetchedObject, ObjectToProcess, Outcome, OutcomeStatus, StudyRecord, Verdict, WriteResult

__all__ = ["ProcessStep"]

log = logging.getLogger("xraylab.step")


class ProcessStep:
    """fetch -> classify -> write for a batch of objects.

    Bad input (a ``RejectedInputError`` that a stage returns for one object) becomes a ``REJECTED``
    outcome with its reason; anything a stage raises (a service down, a timeout) is raised, so the
    caller retries the whole batch (writes are idempotent)."""

    def __init__(self, fetcher: Any, classifier: Any, writer: Any) -> None:
        self.fetcher = fetcher  # DeploymentHandles (or anything with the same .method.remote(...) calls)
        self.classifier = classifier
        self.writer = writer

    async def process_batch(self, items: list[ObjectToProcess]) -> list[Outcome]:
        t0 = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(items)
        fetched: list[FetchedObject | RejectedInputError] = await self.fetcher.fetch_many.remote(items)
        good: list[tuple[int, FetchedObject, StudyRecord]] = []
        for i, (item, got) in enumerate(zip(items, fetched, strict=True)):
            if isinstance(got, RejectedInputError):
                outcomes[i] = self._rejected(got, None)
            else:
                good.append((i, got, StudyRecord.of(item, got)))
        verdicts: list[Verdict | RejectedInputError] = (
            await self.classifier.classify_many.remote([got.data for _, got, _ in good]) if good else [])
        to_write: list[tuple[int, StudyRecord, Verdict, float]] = []
        for (i, got, study), verdict in zip(good, verdicts, strict=True):
            if isinstance(verdict, RejectedInputError):
                outcomes[i] = self._rejected(verdict, study.study_uid)
            else:
                to_write.append((i, study, verdict, got.fetch_ms))
        written: list[WriteResult] = (
            await self.writer.write_many.remote([(s, v, ms) for _, s, v, ms in to_write]) if to_write else [])
        total_ms = (time.perf_counter() - t0) * 1000
        for (i, study, verdict, _), result in zip(to_write, written, strict=True):
            status = OutcomeStatus.WRITTEN if result.created else OutcomeStatus.DUPLICATE
            outcomes[i] = Outcome(status, study_uid=study.study_uid, study_id=result.study_id,
                                  prediction_id=result.prediction_id, verdict=verdict, total_ms=total_ms)
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _rejected(error: RejectedInputError, uid: str | None) -> Outcome:
        log.warning("study %s rejected: %s", uid or "(not fetched)", error.reason)
        return Outcome.rejected(error.reason, error.detail, uid)
