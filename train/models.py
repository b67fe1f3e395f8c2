"""CNN architectures (Keras 3). One Keras everywhere: training, registry and serving.

Keras 3 (not tf-keras) because it ships with ``tensorflow-cpu`` and the GPU wheel alike;
multi-worker training uses a custom step under the strategy (``train/distributed.py``), because
Keras 3 ``model.fit`` fails under MultiWorkerMirroredStrategy.
"""

from __future__ import annotations

from typing import Any

from xraylab.imaging import PreprocessSpec
from xraylab.monitor.features import embedding_layer_name

__all__ = ["build_model", "ARCHITECTURES", "embedding_layer_name"]


def _seed_cnn(spec: PreprocessSpec) -> Any:
    """The seed notebook's CNN: Conv32-BN-Pool, Conv32-Pool, Conv64-Pool, Dense64, Dropout 0.5, sigmoid.

    BatchNorm momentum is 0.9 (Keras' default 0.99 leaves the moving statistics far from the batch
    statistics after the few hundred steps a small data set gives, which biases every inference score)."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((spec.height, spec.width, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.BatchNormalization(momentum=0.9),
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


def _xray_resnet(spec: PreprocessSpec) -> Any:
    """A stronger from-scratch model: residual blocks of separable convolutions, BN, global pooling."""
    import keras
    from keras import layers

    def block(x: Any, filters: int) -> Any:
        shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        return layers.Activation("relu")(layers.add([x, shortcut]))

    inputs = keras.Input((spec.height, spec.width, 1))
    x = layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.Activation("relu")(x)
    for filters in (32, 64, 128):
        x = block(x, filters)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="xray_resnet")


def _xray_cnn(spec: PreprocessSpec) -> Any:
    """The model trained on real X-rays (the promoted one): a strided stem (a full-resolution layer is the
    costliest on a CPU), three VGG-style stages of two 3x3 convolutions with BN (32, 64, 128 filters), a 192-filter
    convolution, global average pooling, dropout. About 0.5 M parameters, about 2 MB saved. Plain convolutions
    rather than separable ones: on 2 CPU cores they learn more per second here (measured in the issue 26 note)."""
    import keras
    from keras import layers

    def conv(x: Any, filters: int, strides: int = 1) -> Any:
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        return layers.Activation("relu")(x)

    inputs = keras.Input((spec.height, spec.width, 1))
    x = conv(inputs, 24, strides=2)
    for filters in (32, 64, 128):
        x = layers.MaxPooling2D()(conv(conv(x, filters), filters))
    x = layers.GlobalAveragePooling2D()(conv(x, 192))
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="xray_cnn")


ARCHITECTURES = {"seed-cnn": _seed_cnn, "xray-resnet": _xray_resnet, "xray-cnn": _xray_cnn, "tiny-cnn": _tiny_cnn}


def build_model(name: str, spec: PreprocessSpec | None = None) -> Any:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](spec or PreprocessSpec())
