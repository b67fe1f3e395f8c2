"""Training-only augmentation (the ``Rand*`` steps): small rotations, shifts, zooms and contrast changes.

No horizontal flips: the heart is on one side of a chest radiograph.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_augmenter"]


def build_augmenter(seed: int = 0) -> Any:
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
        layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 1),
        layers.RandomZoom(0.08, fill_mode="constant", seed=seed + 2),
        layers.RandomContrast(0.15, seed=seed + 3),
    ], name="augment")
