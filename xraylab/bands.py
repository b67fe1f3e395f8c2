"""Risk bands: how a pneumonia score becomes what the worklist shows.

The bands of a model live in its card: training writes ``Settings.bands()`` (``XRAYLAB_BAND_*``) into
the card, and both evaluation and serving read the card of the model that scored (``Bands.from_card``),
so a band table in a model's metrics is exactly what serving shows for that model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Bands", "DEFAULT_BANDS", "PNEUMONIA", "UNSURE", "NORMAL", "BAND_ORDER"]

PNEUMONIA = "Pneumonia"
UNSURE = "Unsure"
NORMAL = "Normal"
BAND_ORDER = (PNEUMONIA, UNSURE, NORMAL)  # highest risk first


@dataclass(frozen=True)
class Bands:
    """``score > pneumonia`` -> Pneumonia; ``unsure <= score <= pneumonia`` -> Unsure; else Normal."""

    pneumonia: float = 0.80
    unsure: float = 0.60

    def __post_init__(self) -> None:
        if not 0.0 <= self.unsure <= self.pneumonia <= 1.0:
            raise ValueError(f"bands need 0 <= unsure <= pneumonia <= 1, got {self.unsure}, {self.pneumonia}")

    def band(self, score: float) -> str:
        if score > self.pneumonia:
            return PNEUMONIA
        if score >= self.unsure:
            return UNSURE
        return NORMAL

    def to_dict(self) -> dict[str, float]:
        return {"pneumonia": self.pneumonia, "unsure": self.unsure}

    @classmethod
    def from_card(cls, bands: Mapping[str, float]) -> Bands:
        """The bands stored in a model card (``{"pneumonia": .., "unsure": ..}``)."""
        return cls(pneumonia=float(bands["pneumonia"]), unsure=float(bands["unsure"]))


DEFAULT_BANDS = Bands()
