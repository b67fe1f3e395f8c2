"""The two classes, one definition: folder names of the Kaggle chest-xray layout, the label index
training uses (0 = NORMAL, 1 = PNEUMONIA), and what the synthetic generator draws; and the verdicts a
doctor records in the review app (the labels the model monitor reads)."""

from __future__ import annotations

__all__ = ["NORMAL_CLASS", "PNEUMONIA_CLASS", "CLASSES", "VERDICT_LABELS", "VERDICT_CLASS"]

NORMAL_CLASS = "NORMAL"
PNEUMONIA_CLASS = "PNEUMONIA"
CLASSES = (NORMAL_CLASS, PNEUMONIA_CLASS)  # index = label

# A doctor's verdict, and the class it stands for (None: the image cannot be read, no label for the monitor).
VERDICT_PNEUMONIA = "Pneumonia"
VERDICT_NORMAL = "Normal"
VERDICT_NOT_DIAGNOSTIC = "Not diagnostic"
VERDICT_LABELS = (VERDICT_PNEUMONIA, VERDICT_NORMAL, VERDICT_NOT_DIAGNOSTIC)
VERDICT_CLASS: dict[str, str | None] = {VERDICT_PNEUMONIA: PNEUMONIA_CLASS, VERDICT_NORMAL: NORMAL_CLASS,
                                        VERDICT_NOT_DIAGNOSTIC: None}
