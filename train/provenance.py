"""What a model learnt from, as its card says it: the known real data sets and their attribution and limits.

``xraylab train run --trained-on kermany`` fills the card from here; any other text is taken as the
description of the data (and ``synthetic`` marks generated images, as the bootstrap model's card does).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Provenance", "KNOWN_DATASETS", "provenance_of"]


@dataclass(frozen=True)
class Provenance:
    trained_on: str  # the card's trained_on: short, shown in the notice beside every score
    notes: str  # the card's notes: attribution, what the data is, the model's limits


KERMANY = Provenance(
    trained_on="Kermany et al. 2018 paediatric chest X-rays, CC BY 4.0",
    notes=(
        "Trained on the chest X-ray images of Kermany D, Zhang K, Goldbaum M (2018), 'Labeled Optical Coherence "
        "Tomography (OCT) and Chest X-Ray Images for Classification', Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, "
        "licensed CC BY 4.0 (Kaggle's 'chest-xray-pneumonia' layout; the train split at 224 x 224, a stratified "
        "validation split carved from it, figures on the 624-image test split). "
        "Limits: paediatric (1-5 years) anterior-posterior films from one centre (Guangzhou Women and Children's "
        "Medical Center), labelled NORMAL or PNEUMONIA only; not validated on adults, other centres, devices or "
        "projections, nor for other findings. For research use only, not a medical device: a triage aid, never a "
        "diagnosis."
    ),
)

KNOWN_DATASETS = {"kermany": KERMANY}


def provenance_of(trained_on: str) -> Provenance:
    """The provenance for ``--trained-on``: a known data set by name, else the text as given (no notes)."""
    return KNOWN_DATASETS.get(trained_on.strip().lower(), Provenance(trained_on=trained_on.strip(), notes=""))
