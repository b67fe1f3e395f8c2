"""Decoding at the edge: a study's bytes -> the model's input, where the bytes were read.

A radiograph is 8-18 MB as uncompressed DICOM; the model takes 64 KB (128 x 128 float32). The Fetcher decodes
what it fetched and the Ingress what it was posted, with the chain of the model that will score it
(``inference_transforms(spec)``, the one training and serving share), so that only the model-sized array
crosses the deployments (``ModelInput``), never the study's bytes: no study is too large for a hop, and the
decoding runs beside the model's forward pass in another process instead of inside it.

A decoder's failure is the input's, not the pipeline's: the same bytes fail the same way every time, so it is
refused at once (``RejectedInputError``: the chain's own reason, or ``undecodable``) instead of being retried.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from xraylab.errors import RejectedInputError, RejectReason
from xraylab.imaging import Compose, ImageLimits, InvalidImageError, PreprocessSpec, inference_transforms
from xraylab.messages import ModelInput

__all__ = ["InputPreparer", "SpecChangedError"]


class InputPreparer:
    """Bytes + a spec -> a ``ModelInput``; one chain per spec, built on first use. Thread-safe."""

    def __init__(self, limits: ImageLimits | None) -> None:
        self.limits = limits
        self._chains: dict[str, Compose] = {}
        self._lock = threading.Lock()

    def chain(self, spec: PreprocessSpec) -> Compose:
        key = spec.key()
        with self._lock:
            if key not in self._chains:
                self._chains[key] = inference_transforms(spec, self.limits)
            return self._chains[key]

    def prepare(self, data: bytes, spec: PreprocessSpec | dict[str, Any]) -> ModelInput:
        """The model input of ``data``; raises ``RejectedInputError`` for bytes that cannot be scored. Only
        ``MemoryError`` (the process, not the input) passes through, for the caller to retry."""
        spec = spec if isinstance(spec, PreprocessSpec) else PreprocessSpec.from_dict(spec)
        t0 = time.perf_counter()
        try:
            pixels = self.chain(spec)(data)
        except InvalidImageError as exc:
            raise RejectedInputError(exc.reason, str(exc)) from exc
        except MemoryError:
            raise
        except Exception as exc:  # a decoder's own error on these bytes: it will fail the same way again
            raise RejectedInputError(RejectReason.UNDECODABLE, f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        return ModelInput(pixels, spec.key(), (time.perf_counter() - t0) * 1000)


class SpecChangedError(RuntimeError):
    """The Classifier was sent inputs prepared for a model it no longer serves (a promotion changed the chain):
    ``spec`` is the chain of the model it serves now. The sender prepares them again with it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.spec = spec

    def __str__(self) -> str:
        return f"inputs prepared for another preprocessing chain than the served model's ({self.spec})"

    @classmethod
    def behind(cls, exc: BaseException) -> SpecChangedError | None:
        """The ``SpecChangedError`` behind a handle call's error (Ray's ``RayTaskError.cause``), or None."""
        for candidate in (getattr(exc, "cause", None), exc):
            if isinstance(candidate, SpecChangedError):
                return candidate
        return None
