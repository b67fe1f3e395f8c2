"""A model's card: what a version is (architecture, preprocessing, bands, calibration, training data)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from xraylab.imaging import PreprocessSpec

__all__ = ["ModelCard", "ModelNotFoundError", "SYNTHETIC_NOTICE", "CARD_FILE", "MODEL_FILE", "check_version",
           "is_version", "research_notice"]

CARD_FILE = "card.json"
MODEL_FILE = "model.keras"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SYNTHETIC_NOTICE = (
    "Trained on generated (synthetic) images, not real chest X-rays: "
    "scores are not clinically meaningful."
)



def research_notice(trained_on: str) -> str:
    """What every score of a model trained on real X-rays carries: its data, and that it is no medical device."""
    return f"Trained on real X-rays ({trained_on}): for research use only, not a medical device."


class ModelNotFoundError(LookupError):
    """No such model version in the registry (or no model at all)."""


@dataclass
class ModelCard:
    version: str
    architecture: str
    preprocess: dict[str, Any]
    bands: dict[str, float]
    trained_on: str = "synthetic"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    notes: str = ""
    # Platt scaling of the raw model output (xraylab.calibration); identity for uncalibrated models.
    calibration: dict[str, float] = field(default_factory=lambda: {"a": 1.0, "b": 0.0})

    @property
    def synthetic(self) -> bool:
        return self.trained_on == "synthetic"

    @property
    def notice(self) -> str:
        """Shown beside this model's scores (API, review app, demo): the synthetic warning, or the research one."""
        return SYNTHETIC_NOTICE if self.synthetic else research_notice(self.trained_on)

    def preprocess_spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> ModelCard:
        """A card from ``card.json``; a file that is not one raises ``ValueError`` naming ``where``."""
        try:
            data = json.loads(text)
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where} is not a model card: {exc}") from None


def is_version(name: str) -> bool:
    """Whether ``name`` is a valid version name (letters, digits, '.', '_' and '-')."""
    return bool(_VERSION_RE.match(name))


def check_version(version: str) -> str:
    if not is_version(version):
        raise ValueError(f"bad model version {version!r}: letters, digits, '.', '_' and '-' only")
    return version
