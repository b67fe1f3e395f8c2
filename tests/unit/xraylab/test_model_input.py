"""Decoding at the edge: bytes + the served model's chain -> a model input, or a refusal that names why."""

import numpy as np
import pytest

from xraylab.errors import RejectedInputError, RejectReason
from xraylab.imaging import PreprocessSpec, inference_transforms
from xraylab.messages import ModelInput
from xraylab.model_input import InputPreparer, SpecChangedError
from xraylab.settings import Settings
from xraylab.synthetic import encode_jpeg, generate_xray

SPEC = PreprocessSpec(height=96, width=96)
LIMITS = Settings(_env_file=None).image_limits()
JPEG = encode_jpeg(generate_xray(np.random.default_rng(3), True, size=400))


def test_the_input_is_the_chains_output_for_that_spec() -> None:
    prepared = InputPreparer(LIMITS).prepare(JPEG, SPEC.to_dict())
    assert isinstance(prepared, ModelInput) and prepared.spec == SPEC.key() and prepared.decode_ms > 0
    assert prepared.pixels.shape == (96, 96, 1) and prepared.pixels.dtype == np.float32
    assert np.array_equal(prepared.pixels, inference_transforms(SPEC, LIMITS)(JPEG))
    assert PreprocessSpec.from_dict(SPEC.to_dict()).key() == SPEC.key() != PreprocessSpec().key()


def test_bad_bytes_are_refused_with_the_chains_reason() -> None:
    preparer = InputPreparer(LIMITS)
    with pytest.raises(RejectedInputError) as truncated:
        preparer.prepare(JPEG[: len(JPEG) // 3], SPEC)
    assert truncated.value.reason is RejectReason.NOT_IMAGE
    with pytest.raises(RejectedInputError) as small:
        preparer.prepare(encode_jpeg(generate_xray(np.random.default_rng(3), True, size=40)), SPEC)
    assert small.value.reason is RejectReason.NOT_RADIOGRAPH


def test_a_decoders_own_error_is_refused_as_undecodable_and_memory_is_not(monkeypatch) -> None:
    """A decoder that fails with an error of its own fails the same way on every try: refused at once, not
    retried. Running out of memory is the process's trouble, not the input's: raised, for a retry."""
    preparer = InputPreparer(LIMITS)

    def broken(data):
        raise ZeroDivisionError("a decoder bug")

    monkeypatch.setattr(preparer, "chain", lambda spec: broken)
    with pytest.raises(RejectedInputError) as refused:
        preparer.prepare(JPEG, SPEC)
    assert refused.value.reason is RejectReason.UNDECODABLE
    assert "ZeroDivisionError: a decoder bug" in refused.value.detail

    def starved(data):
        raise MemoryError

    monkeypatch.setattr(preparer, "chain", lambda spec: starved)
    with pytest.raises(MemoryError):
        preparer.prepare(JPEG, SPEC)


def test_one_chain_per_spec_is_built_and_kept() -> None:
    preparer = InputPreparer(LIMITS)
    assert preparer.chain(SPEC) is preparer.chain(PreprocessSpec.from_dict(SPEC.to_dict()))
    assert preparer.chain(PreprocessSpec()) is not preparer.chain(SPEC)


def test_spec_changed_survives_ray_wrapping() -> None:
    from ray.exceptions import RayTaskError

    wrapped = RayTaskError("classify_many", "Traceback ...", SpecChangedError(SPEC.to_dict())).as_instanceof_cause()
    found = SpecChangedError.behind(wrapped)
    assert found is not None and found.spec == SPEC.to_dict()
    assert SpecChangedError.behind(TimeoutError("x")) is None
