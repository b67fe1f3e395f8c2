"""The two classes, one definition: folder names of the Kaggle chest-xray layout, the label index
training uses (0 = NORMAL, 1 = PNEUMONIA), and what the synthetic generator draws."""

from __future__ import annotations

__all__ = ["NORMAL_CLASS", "PNEUMONIA_CLASS", "CLASSES"]

NORMAL_CLASS = "NORMAL"
PNEUMONIA_CLASS = "PNEUMONIA"
CLASSES = (NORMAL_CLASS, PNEUMONIA_CLASS)  # index = label
