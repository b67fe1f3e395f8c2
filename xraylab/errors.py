"""Errors that mean "this input can never be processed": they go to the dead-letter topic.

Anything else raised in the pipeline (a service down, a timeout) is transient: the ingest
actor retries it and does not commit the offset.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RejectReason", "RejectedInputError"]


class RejectReason(StrEnum):
    """Why an input was rejected: the ``reason`` of a dead letter and of a 4xx answer."""

    MALFORMED_EVENT = "malformed_event"
    UNKNOWN_ENDPOINT = "unknown_endpoint"
    MISSING_OBJECT = "missing_object"
    TOO_LARGE = "too_large"
    NOT_IMAGE = "not_image"
    INVALID_NAME = "invalid_name"
    BAD_METADATA = "bad_metadata"
    TOO_MANY_PIXELS = "too_many_pixels"
    NOT_RADIOGRAPH = "not_radiograph"
    TOO_MANY_RECORDS = "too_many_records"
    RETRIES_EXHAUSTED = "retries_exhausted"
    NOT_DICOM = "not_dicom"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    MULTI_FRAME = "multi_frame"
    NOT_IMAGE_DICOM = "not_image_dicom"
    UNSUPPORTED_DICOM = "unsupported_dicom"
    UNDECODABLE = "undecodable"
    FAILS_ALONE = "fails_alone"
    OWN_RESULT = "own_result"
    SOURCE_NOT_ALLOWED = "source_not_allowed"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    RejectReason.SOURCE_NOT_ALLOWED: "the event names a bucket that is not a configured source of its endpoint (the "
                                     "research bucket, the model registry, another site's bucket): never read",
    RejectReason.OWN_RESULT: "an xraylab result (the SR or the Grad-CAM picture delivered to a PACS) came back in",
    RejectReason.MALFORMED_EVENT: "the Kafka message is not an S3 event notification",
    RejectReason.UNKNOWN_ENDPOINT: "the event names an S3 endpoint with no configured credentials",
    RejectReason.MISSING_OBJECT: "the object named by the event does not exist",
    RejectReason.TOO_LARGE: "the object is larger than the configured limit",
    RejectReason.NOT_IMAGE: "the object is not a readable JPEG, PNG or DICOM image",
    RejectReason.INVALID_NAME: "the event names a bucket or key that the S3 client refuses as invalid",
    RejectReason.BAD_METADATA: "the object's study metadata cannot be decoded (e.g. a broken RFC 2047 word)",
    RejectReason.TOO_MANY_PIXELS: "the image would decode to more pixels than XRAYLAB_MAX_IMAGE_PIXELS",
    RejectReason.NOT_RADIOGRAPH: "the image is too small or too uniform to be a radiograph",
    RejectReason.TOO_MANY_RECORDS: "the event carries more object records than XRAYLAB_INGEST_MAX_RECORDS_PER_EVENT",
    RejectReason.RETRIES_EXHAUSTED: "the object failed on every attempt while the pipeline was healthy",
    RejectReason.NOT_DICOM: "its name or media type says DICOM, but it has no DICOM Part 10 header",
    RejectReason.UNSUPPORTED_TRANSFER_SYNTAX: "a DICOM transfer syntax with no pixel data decoder installed",
    RejectReason.MULTI_FRAME: "a DICOM instance with several frames (one radiograph per instance is scored)",
    RejectReason.NOT_IMAGE_DICOM: "a DICOM object with no pixel data (a report, a plan: not an image SOP class)",
    RejectReason.UNSUPPORTED_DICOM: "a DICOM image whose photometric interpretation or bit depth is not handled",
    RejectReason.UNDECODABLE: "the image's decoder failed on it with an error of its own: it would fail the same "
                              "way again",
    RejectReason.FAILS_ALONE: "the object failed twice the same way while the pipeline was healthy and other objects "
                              "went through (or with an error no retry can heal): refused at once, never retried",
}


class RejectedInputError(Exception):
    """A permanent, per-input failure with a machine-readable ``reason``."""

    def __init__(self, reason: RejectReason, detail: str = "", study_uid: str | None = None) -> None:
        super().__init__(RejectReason(reason), detail, study_uid)
        self.reason = RejectReason(reason)
        self.detail = detail
        self.study_uid = study_uid  # where the object was read before it was refused: the study it would have been

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)

    @classmethod
    def behind(cls, exc: BaseException) -> RejectedInputError | None:
        """The rejection behind ``exc``: the ``cause`` of a Ray task error from a handle call (Ray raises a
        ``RayTaskError(RejectedInputError)`` whose ``args`` hold the original), or ``exc`` itself."""
        for candidate in (getattr(exc, "cause", None), exc):
            if isinstance(candidate, RejectedInputError):
                return cls(candidate.reason, candidate.detail, candidate.study_uid)
        return None
