"""The pipeline step (fetch -> classify -> write) with stand-ins for the three deployments' handles."""

import asyncio

import numpy as np
import pytest
from ray.exceptions import RayTaskError

from serve_app.step import ProcessStep
from tests.unit.serve_app.handles import Handle
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.imaging import PreprocessSpec
from xraylab.messages import (
    FetchedObject,
    ModelInput,
    ObjectToProcess,
    OutcomeStatus,
    PreparedObject,
    StudyMetadata,
    StudyRecord,
    Verdict,
    WriteResult,
    study_uid,
)
from xraylab.model_input import SpecChangedError


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


SPEC = PreprocessSpec(height=64, width=64)


def fetcher(fn=lambda item: fetched_for(item)) -> Handle:
    many = each(fn)
    return Handle(fetch_many=lambda items, spec: many(items))


def classifier(fn=lambda image: VERDICT, spec=SPEC) -> Handle:
    return Handle(classify_many=each(fn), preprocess_spec=spec.to_dict)


def writer(created: bool = True) -> Handle:
    return Handle(write_many=lambda rows: [WriteResult(7 + i, 11 + i, created) for i in range(len(rows))])


def key_of(image: ModelInput) -> str:
    """The stand-in Fetcher's model input spells its object's key (the real one is the decoded picture)."""
    return bytes(image.pixels.astype(np.uint8)).decode()


def fetched_for(item: ObjectToProcess, spec: PreprocessSpec = SPEC) -> PreparedObject:
    fetched = FetchedObject(data=b"jpeg " + item.key.encode(), etag="e1", content_type="image/jpeg",
                            endpoint_id="local", metadata=StudyMetadata(hospital="st-mary", patient_name="Ana Silva"),
                            fetch_ms=3.0)
    image = ModelInput(np.frombuffer(item.key.encode(), np.uint8).astype(np.float32), spec.key())
    return PreparedObject(StudyRecord.of(item, fetched), image, fetched.fetch_ms)


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

    def classify(image):
        if key_of(image) == "report.jpeg":
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
        run(ProcessStep(Handle(fetch_many=lambda items, spec: down(items)), classifier(), writer()), [ITEM])

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


def test_the_fetcher_decodes_with_the_served_models_chain_asked_once() -> None:
    f, c = fetcher(), classifier()
    step = ProcessStep(f, c, writer())
    run(step, [ITEM])
    run(step, [ITEM])
    assert [spec for _, spec in f.fetch_many.calls] == [SPEC.to_dict()] * 2
    assert len(c.preprocess_spec.calls) == 1, "the chain is asked once, then kept"


def test_a_promotion_that_changes_the_chain_prepares_the_batch_again() -> None:
    """The Classifier refuses inputs of a chain it no longer serves (SpecChangedError, wrapped by Ray); the step
    fetches and decodes the batch again with the new chain, once, and the rows are written."""
    new = PreprocessSpec(height=96, width=96)

    def classify(image):
        if image.spec != new.key():
            cause = SpecChangedError(new.to_dict())
            raise RayTaskError("classify_many", "Traceback ...", cause).as_instanceof_cause()
        return VERDICT

    def classify_many(images):
        return [classify(image) for image in images]

    f = Handle(fetch_many=lambda items, spec: [fetched_for(item, PreprocessSpec.from_dict(spec)) for item in items])
    step = ProcessStep(f, Handle(classify_many=classify_many, preprocess_spec=SPEC.to_dict), writer())
    [outcome] = run(step, [ITEM])
    assert outcome.status is OutcomeStatus.WRITTEN
    assert [spec for _, spec in f.fetch_many.calls] == [SPEC.to_dict(), new.to_dict()] and step.spec == new.to_dict()


def test_http_images_are_decoded_at_the_edge_and_bad_ones_never_reach_the_classifier() -> None:
    from xraylab.settings import Settings
    from xraylab.synthetic import encode_jpeg, generate_xray

    good = encode_jpeg(generate_xray(np.random.default_rng(0), True, size=300))
    seen: list[ModelInput] = []
    c = classifier(lambda image: seen.append(image) or VERDICT)
    step = ProcessStep(fetcher(), c, writer(), Settings(_env_file=None).image_limits())
    verdicts = asyncio.run(step.classify_bytes([good, b"not an image", good]))
    assert verdicts[0] == verdicts[2] == VERDICT
    assert isinstance(verdicts[1], RejectedInputError) and verdicts[1].reason is RejectReason.NOT_IMAGE
    assert [image.pixels.shape for image in seen] == [(64, 64, 1)] * 2 and seen[0].spec == SPEC.key()
    assert np.array_equal(seen[0].pixels, step.preparer.chain(SPEC)(good)), "the one chain, at the edge"
