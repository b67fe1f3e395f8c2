"""Risk bands: how a pneumonia score becomes what the worklist shows."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bands", "PNEUMONIA", "UNSURE", "NORMAL"]

PNEUMONIA = "Pneumonia"
UNSURE = "Unsure"
NORMAL = "Normal"


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
