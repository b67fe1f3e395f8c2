"""CNN architectures (Keras 3). One Keras everywhere: training, registry and serving.

Keras 3 (not tf-keras) because it ships with ``tensorflow-cpu`` and the GPU wheel alike;
multi-worker training will use a custom step under the strategy (``model.fit`` under
MultiWorkerMirroredStrategy fails with Keras 3, see shared notes).
"""

from __future__ import annotations

from typing import Any

from xraylab.imaging import PreprocessSpec

__all__ = ["build_model", "ARCHITECTURES"]


def _seed_cnn(spec: PreprocessSpec) -> Any:
    """The seed notebook's CNN: Conv32-BN-Pool, Conv32-Pool, Conv64-Pool, Dense64, Dropout 0.5, sigmoid."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((spec.height, spec.width, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(1, activation="sigmoid"),
    ], name="seed_cnn")


def _tiny_cnn(spec: PreprocessSpec) -> Any:
    """A small fast CNN for the bootstrap model (seconds to train on 2 cores)."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((spec.height, spec.width, 1)),
        layers.AveragePooling2D(2),
        layers.Conv2D(8, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, activation="relu"),
        layers.GlobalMaxPooling2D(),
        layers.Dense(16, activation="relu"),
        layers.Dense(1, activation="sigmoid"),
    ], name="tiny_cnn")


ARCHITECTURES = {"seed-cnn": _seed_cnn, "tiny-cnn": _tiny_cnn}


def build_model(name: str, spec: PreprocessSpec | None = None) -> Any:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](spec or PreprocessSpec())
