"""The pipeline step (fetch -> classify -> write) with stand-ins for the three deployments' handles."""

import asyncio

import pytest
from ray.exceptions import RayTaskError

from serve_app.step import ProcessStep
from tests.unit.serve_app.handles import Handle
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


def each(fn):
    """A ``*_many`` method from a per-object function (a rejection comes back in place, as the replicas do)."""
    def many(items):
        out = []
        for item in items:
            try:
                out.append(fn(item))
            except RejectedInputError as exc:
                out.append(exc)
        return out
    return many


def fetcher(fn=lambda item: fetched_for(item)) -> Handle:
    return Handle(fetch_many=each(fn))


def classifier(fn=lambda data: VERDICT) -> Handle:
    return Handle(classify_many=each(fn))


def writer(created: bool = True) -> Handle:
    return Handle(write_many=lambda rows: [WriteResult(7 + i, 11 + i, created) for i in range(len(rows))])


def fetched_for(item: ObjectToProcess) -> FetchedObject:
    return FetchedObject(data=b"jpeg " + item.key.encode(), etag="e1", content_type="image/jpeg",
                         endpoint_id="local", metadata=StudyMetadata(hospital="st-mary", patient_name="Ana Silva"),
                         fetch_ms=3.0)


ITEM = ObjectToProcess(bucket="b", key="st-mary/x.jpeg", etag="etag-from-event")
VERDICT = Verdict(score=0.9, band="Pneumonia", model_version="v1", synthetic_model=True, infer_ms=5.0)


def run(step: ProcessStep, items: list[ObjectToProcess]):
    return asyncio.run(step.process_batch(items))


def test_written_outcome_and_what_the_writer_gets() -> None:
    w = writer()
    [outcome] = run(ProcessStep(fetcher(), classifier(), w), [ITEM])
    assert outcome.status is OutcomeStatus.WRITTEN
    assert (outcome.study_id, outcome.prediction_id, outcome.verdict) == (7, 11, VERDICT)
    [([(study, verdict, fetch_ms)],)] = w.write_many.calls
    assert isinstance(study, StudyRecord) and verdict == VERDICT and fetch_ms == 3.0
    assert study.study_uid == outcome.study_uid == study_uid("local", "b", "st-mary/x.jpeg", "e1")
    assert (study.object_key, study.metadata.patient_name) == ("st-mary/x.jpeg", "Ana Silva")
    assert study.size_bytes == len(b"jpeg st-mary/x.jpeg")


def test_redelivery_is_a_duplicate() -> None:
    [outcome] = run(ProcessStep(fetcher(), classifier(), writer(created=False)), [ITEM])
    assert outcome.status is OutcomeStatus.DUPLICATE


def test_a_batch_costs_three_calls_and_keeps_its_order() -> None:
    items = [ObjectToProcess(bucket="b", key=f"k{i}.jpeg") for i in range(5)]
    f, c, w = fetcher(), classifier(), writer()
    outcomes = run(ProcessStep(f, c, w), items)
    assert len(f.fetch_many.calls) == len(c.classify_many.calls) == len(w.write_many.calls) == 1
    assert [o.study_uid for o in outcomes] == [study_uid("local", "b", i.key, "e1") for i in items]
    assert [o.prediction_id for o in outcomes] == [11, 12, 13, 14, 15]


def test_rejections_in_a_batch_are_dead_ends_and_the_rest_is_written() -> None:
    def fetch(item):
        if item.key == "missing.jpeg":
            raise RejectedInputError(RejectReason.MISSING_OBJECT, "NoSuchKey")
        return fetched_for(item)

    def classify(data):
        if data.endswith(b"report.jpeg"):
            raise RejectedInputError(RejectReason.NOT_IMAGE, "truncated")
        return VERDICT

    items = [ObjectToProcess(bucket="b", key=k) for k in ("a.jpeg", "missing.jpeg", "report.jpeg", "d.jpeg")]
    c, w = classifier(classify), writer()
    outcomes = run(ProcessStep(fetcher(fetch), c, w), items)
    assert [o.status for o in outcomes] == [OutcomeStatus.WRITTEN, OutcomeStatus.REJECTED, OutcomeStatus.REJECTED,
                                            OutcomeStatus.WRITTEN]
    assert (outcomes[1].reason, outcomes[1].detail, outcomes[1].study_uid) == ("missing_object", "NoSuchKey", None)
    assert outcomes[2].reason is RejectReason.NOT_IMAGE
    assert outcomes[2].study_uid == study_uid("local", "b", "report.jpeg", "e1"), "fetched, so it has a study id"
    [(images,)] = c.classify_many.calls
    assert len(images) == 3, "the missing object is not classified"
    [(rows,)] = w.write_many.calls
    assert [study.object_key for study, _, _ in rows] == ["a.jpeg", "d.jpeg"], "nothing rejected is written"


def test_transient_failures_are_raised_for_the_caller_to_retry() -> None:
    def down(_):
        raise ConnectionError("S3 down")

    with pytest.raises(ConnectionError):
        run(ProcessStep(Handle(fetch_many=down), classifier(), writer()), [ITEM])

    def locked(_):  # what a handle call raises when the replica raised: Ray's RayTaskError(<cause's class>)
        raise RayTaskError("write_many", "Traceback ...", TimeoutError("database locked")).as_instanceof_cause()

    with pytest.raises(TimeoutError):
        run(ProcessStep(fetcher(), classifier(), Handle(write_many=locked)), [ITEM])


def test_rejection_behind_a_ray_task_error() -> None:
    cause = RejectedInputError(RejectReason.NOT_IMAGE, "truncated")
    wrapped = RayTaskError("classify", "Traceback ...", cause).as_instanceof_cause()
    found = RejectedInputError.behind(wrapped)
    assert found is not None and (found.reason, found.detail) == (RejectReason.NOT_IMAGE, "truncated")
    assert RejectedInputError.behind(TimeoutError("x")) is None
