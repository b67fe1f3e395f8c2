"""The pipeline step: one object from an S3 event -> fetch -> classify -> write -> an ``Outcome``.

The Ingress runs it for the ingest actor (``Ingress.process``); it talks to the three deployments
through their handles, so it can be tested with stand-ins for them.
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
    """fetch -> classify -> write for one object.

    Bad input (``RejectedInputError`` from any stage) is returned as a ``REJECTED`` outcome with its
    reason, never raised; anything else (a service down, a timeout) is raised, so the caller retries."""

    def __init__(self, fetcher: Any, classifier: Any, writer: Any) -> None:
        self.fetcher = fetcher  # DeploymentHandles (or anything with the same .method.remote(...) calls)
        self.classifier = classifier
        self.writer = writer

    async def __call__(self, item: ObjectToProcess) -> Outcome:
        t0 = time.perf_counter()
        uid = None
        try:
            fetched: FetchedObject = await self.fetcher.fetch.remote(item)
            study = StudyRecord.of(item, fetched)
            uid = study.study_uid
            verdict: Verdict = await self.classifier.classify.remote(fetched.data)
        except Exception as exc:
            rejected = RejectedInputError.behind(exc)
            if rejected is None:
                raise
            log.warning("study %s rejected: %s", uid or "(not fetched)", rejected.reason)
            return Outcome.rejected(rejected.reason, rejected.detail, uid)
        written: WriteResult = await self.writer.write.remote(study, verdict, fetched.fetch_ms)
        return Outcome(OutcomeStatus.WRITTEN if written.created else OutcomeStatus.DUPLICATE, study_uid=uid,
                       study_id=written.study_id, prediction_id=written.prediction_id, verdict=verdict,
                       total_ms=(time.perf_counter() - t0) * 1000)
