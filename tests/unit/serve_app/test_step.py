"""The pipeline step (fetch -> classify -> write) with stand-ins for the three deployments' handles."""

import asyncio

import pytest
from ray.exceptions import RayTaskError

from serve_app.step import ProcessStep
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import (
    FetchedObject,
    ObjectToProcess,
    OutcomeStatus,
    StudyMetadata,
    StudyRecord,
    Verdict,
    WriteResult,
    study_uid,
)


class Method:
    """``handle.method.remote(*args)`` -> an awaitable of ``fn(*args)``, recording the calls."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, []

    def remote(self, *args):
        self.calls.append(args)

        async def call():
            return self.fn(*args)

        return call()


class Handle:
    def __init__(self, **methods) -> None:
        for name, fn in methods.items():
            setattr(self, name, Method(fn))


def RayTaskErrorLike(cause: BaseException) -> BaseException:  # noqa: N802 (stands for an exception class)
    """What a handle call raises when the replica raised: Ray's ``RayTaskError(<cause's class>)``."""
    return RayTaskError("classify", "Traceback ...", cause).as_instanceof_cause()


ITEM = ObjectToProcess(bucket="b", key="st-mary/x.jpeg", etag="etag-from-event")
FETCHED = FetchedObject(data=b"jpeg bytes", etag="e1", content_type="image/jpeg", endpoint_id="local",
                        metadata=StudyMetadata(hospital="st-mary", patient_name="Ana Silva"), fetch_ms=3.0)
VERDICT = Verdict(score=0.9, band="Pneumonia", model_version="v1", synthetic_model=True, infer_ms=5.0)


def raise_(exc: BaseException):
    def fn(*_):
        raise exc
    return fn


def run(step: ProcessStep, item: ObjectToProcess = ITEM):
    return asyncio.run(step(item))


def test_written_outcome_and_what_the_writer_gets() -> None:
    writer = Handle(write=lambda study, verdict, fetch_ms: WriteResult(7, 11, created=True))
    outcome = run(ProcessStep(Handle(fetch=lambda item: FETCHED), Handle(classify=lambda data: VERDICT), writer))
    assert outcome.status is OutcomeStatus.WRITTEN
    assert (outcome.study_id, outcome.prediction_id, outcome.verdict) == (7, 11, VERDICT)
    [(study, verdict, fetch_ms)] = writer.write.calls
    assert isinstance(study, StudyRecord) and verdict == VERDICT and fetch_ms == 3.0
    assert study.study_uid == outcome.study_uid == study_uid("local", "b", "st-mary/x.jpeg", "e1")
    assert (study.object_key, study.size_bytes, study.metadata.patient_name) == ("st-mary/x.jpeg", 10, "Ana Silva")


def test_redelivery_is_a_duplicate() -> None:
    writer = Handle(write=lambda *_: WriteResult(7, 11, created=False))
    outcome = run(ProcessStep(Handle(fetch=lambda item: FETCHED), Handle(classify=lambda data: VERDICT), writer))
    assert outcome.status is OutcomeStatus.DUPLICATE


@pytest.mark.parametrize("wrap", [lambda e: e, RayTaskErrorLike], ids=["direct", "through-a-handle"])
def test_missing_object_is_rejected_before_classifying(wrap) -> None:
    classifier = Handle(classify=lambda data: VERDICT)
    writer = Handle(write=lambda *_: WriteResult(1, 1, True))
    fetcher = Handle(fetch=raise_(wrap(RejectedInputError(RejectReason.MISSING_OBJECT, "NoSuchKey"))))
    outcome = run(ProcessStep(fetcher, classifier, writer))
    assert (outcome.status, outcome.reason, outcome.detail) == (OutcomeStatus.REJECTED, "missing_object", "NoSuchKey")
    assert outcome.study_uid is None, "not fetched, so no study id"
    assert classifier.classify.calls == [] and writer.write.calls == []


def test_not_an_image_is_rejected_with_its_study_id_and_nothing_written() -> None:
    writer = Handle(write=lambda *_: WriteResult(1, 1, True))
    classifier = Handle(classify=raise_(RayTaskErrorLike(RejectedInputError(RejectReason.NOT_IMAGE, "truncated"))))
    outcome = run(ProcessStep(Handle(fetch=lambda item: FETCHED), classifier, writer))
    assert outcome.status is OutcomeStatus.REJECTED and outcome.reason is RejectReason.NOT_IMAGE
    assert outcome.study_uid == study_uid("local", "b", "st-mary/x.jpeg", "e1")
    assert writer.write.calls == []


def test_transient_failures_are_raised_for_the_caller_to_retry() -> None:
    fetcher = Handle(fetch=raise_(ConnectionError("S3 down")))
    with pytest.raises(ConnectionError):
        run(ProcessStep(fetcher, Handle(classify=lambda d: VERDICT), Handle(write=lambda *_: None)))
    writer = Handle(write=raise_(RayTaskErrorLike(TimeoutError("database locked"))))
    with pytest.raises(TimeoutError):
        run(ProcessStep(Handle(fetch=lambda item: FETCHED), Handle(classify=lambda d: VERDICT), writer))
