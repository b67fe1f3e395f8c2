"""Errors that mean "this input can never be processed": they go to the dead-letter topic.

Anything else raised in the pipeline (a service down, a timeout) is transient: the ingest
actor retries it and does not commit the offset.
"""

from __future__ import annotations

__all__ = ["RejectedInputError", "REASONS"]

REASONS = {
    "malformed_event": "the Kafka message is not an S3 event notification",
    "unknown_endpoint": "the event names an S3 endpoint with no configured credentials",
    "missing_object": "the object named by the event does not exist",
    "too_large": "the object is larger than the configured limit",
    "not_image": "the object is not a readable JPEG/PNG image",
}


class RejectedInputError(Exception):
    """A permanent, per-input failure with a machine-readable ``reason`` (a key of ``REASONS``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason
