"""Grad-CAM heatmaps: where in the X-ray the model found its pneumonia evidence.

Grad-CAM (Selvaraju et al., 2017): the gradients of the score with respect to the feature maps of the
last convolutional stage, averaged over space, weight those maps; the ReLU of their weighted sum, brought
up to the input's size, shows the regions that raised the score. The score differentiated is the logit of
the single sigmoid output when the head is a ``Dense(1, sigmoid)`` (all our architectures): the same map up
to a positive factor per image, which the per-image normalisation removes, but without the vanishing
gradient of a saturated sigmoid (a confident score of exactly 1.0 in float32 has a zero gradient).
The map is most telling for global-pooling heads (tiny-cnn, xray-resnet); behind a Flatten-Dense head
(seed-cnn) the spatially averaged gradients can cancel, and such an image's map falls back to HiResCAM
(the gradient times the activation at each location, summed over channels), which that head makes faithful.

The input is the preprocessing chain's own output (``xraylab.imaging.inference_transforms``); ``explain``
runs that chain on encoded bytes. Maps are ``float32`` in ``[0, 1]``, 0 where nothing raised the score;
``heat_to_png`` / ``heat_from_png`` store one as an 8-bit greyscale PNG. TensorFlow, Keras and matplotlib
are imported inside the functions that need them.
"""

from __future__ import annotations

import io
import threading
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from xraylab.imaging import ImageLimits, ToGrayscale, inference_transforms

if TYPE_CHECKING:
    from xraylab.registry import ModelCard

__all__ = ["last_conv_layer", "grad_cam", "overlay", "heat_to_png", "heat_from_png", "explain"]

# (model -> {layer name: (gradient model, head layer or None)}): building the gradient model walks the graph.
_GRAD_MODELS: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Any]]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _output_rank(layer: Any) -> int | None:
    """Rank of a layer's (single) output in the model's graph, None if it has none or several."""
    try:
        output = layer.output
    except (AttributeError, ValueError):  # a layer never called in a graph
        return None
    shape = getattr(output, "shape", None)
    return len(shape) if shape is not None else None


def last_conv_layer(model: Any) -> str:
    """Name of the last layer (in graph order) whose output is a 4-D ``(batch, h, w, c)`` feature map: the
    layer Grad-CAM explains by default. Works for Sequential and functional models, built or reloaded."""
    import keras

    _ensure_graph(model)
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if _output_rank(layer) == 4:
            return str(layer.name)
    raise ValueError(f"model {getattr(model, 'name', '?')!r} has no layer with a 4-D (batch, h, w, c) output "
                     "to explain: Grad-CAM needs a convolutional feature map")


def _ensure_graph(model: Any, input_shape: tuple[int, ...] | None = None) -> None:
    """A Sequential model made without ``keras.Input`` has no graph (``model.inputs`` raises) until it is
    built: build it for ``input_shape`` (the batch's, any batch size) if one is given."""
    try:
        model.inputs  # noqa: B018 - raises on a model without a graph
        return
    except (AttributeError, ValueError):
        if input_shape is None:
            raise ValueError(f"model {getattr(model, 'name', '?')!r} has no input shape yet: build it "
                             "(or call it once) before asking for its layers' outputs") from None
    model.build((None, *input_shape[1:]))


def _sigmoid_head(model: Any) -> Any:
    """The final ``Dense(1, sigmoid)`` layer, whose logit Grad-CAM differentiates; None for another head."""
    import keras

    head = model.layers[-1] if model.layers else None
    if (isinstance(head, keras.layers.Dense) and head.units == 1
            and head.activation is keras.activations.sigmoid and len(model.outputs) == 1):
        return head
    return None


def _grad_model(model: Any, layer_name: str) -> tuple[Any, Any]:
    """(a model: input -> [feature maps of ``layer_name``, head input or output], sigmoid head or None).

    A Sequential model's graph is rebuilt from ``model.layers`` on a fresh input: in a Sequential reloaded
    from a ``.keras`` file, each layer holds one stale node per layer added during deserialisation, and
    ``layer.output`` (its first node) is not on the path to ``model.outputs``, so the gradient would be None."""
    import keras

    with _LOCK:
        cached = _GRAD_MODELS.get(model, {}).get(layer_name)
    if cached is not None:
        return cached
    _ensure_graph(model)
    layer = model.get_layer(layer_name)  # ValueError naming the layer if there is none
    if _output_rank(layer) != 4:
        raise ValueError(f"layer {layer_name!r} has no 4-D (batch, h, w, c) output to explain")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Grad-CAM explains a model with one input and one output; {model.name!r} has "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    head = _sigmoid_head(model)
    if isinstance(model, keras.Sequential):
        inputs = keras.Input(shape=tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype)
        x, features, target = inputs, None, None
        for each in model.layers:
            if each is head:
                target = x
            x = each(x)
            if each is layer:
                features = x
        outputs = [features, x if target is None else target]
    else:
        inputs = model.inputs
        outputs = [layer.output, head.input if head is not None else model.outputs[0]]
    built = (keras.Model(inputs, outputs, name=f"{model.name}_gradcam"), head)
    with _LOCK:
        _GRAD_MODELS.setdefault(model, {})[layer_name] = built
    return built


def grad_cam(model: Any, batch: np.ndarray, layer_name: str | None = None) -> np.ndarray:
    """Grad-CAM maps of the pneumonia score for a batch ``(N, H, W, 1)`` (the preprocessing chain's output,
    stacked): ``float32 (N, H, W)`` in ``[0, 1]``, each map scaled so that its maximum is 1 (a map with no
    positive evidence stays all zero). ``layer_name`` defaults to ``last_conv_layer(model)``."""
    import tensorflow as tf

    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim != 4:
        raise ValueError(f"expected a batch (N, H, W, C), got shape {batch.shape}")
    _ensure_graph(model, batch.shape)
    name = layer_name or last_conv_layer(model)
    grad_model, head = _grad_model(model, name)
    inputs = tf.convert_to_tensor(batch)
    with tf.GradientTape() as tape:
        features, target = grad_model(inputs, training=False)
        if head is not None:  # the logit of Dense(1, sigmoid): z = h . w + b
            target = tf.matmul(target, tf.cast(head.kernel, target.dtype))
            if head.use_bias:
                target = target + tf.cast(head.bias, target.dtype)
        score = tf.reshape(target, (tf.shape(target)[0], -1))[:, 0]
    # Images are independent at inference (BatchNorm uses its moving statistics), so the gradient of the
    # batch's summed score is each image's own gradient.
    grads = tape.gradient(score, features)
    if grads is None:
        raise ValueError(f"the score does not depend on layer {name!r} (a layer shared by several branches?)")
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (N, 1, 1, C)
    cam = _upsampled(tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True)), batch.shape[1:3])
    top = cam.reshape(len(cam), -1).max(axis=1, initial=0.0)
    if (top <= 1e-12).any():
        # Where the averaged gradients cancel (a Flatten-Dense head), HiResCAM (Draelos & Carin, 2020): the
        # gradient times the activation at each location, which is faithful to such a head.
        hires = _upsampled(tf.nn.relu(tf.reduce_sum(grads * features, axis=-1, keepdims=True)), batch.shape[1:3])
        cam = np.where((top <= 1e-12)[:, None, None], hires, cam)
        top = cam.reshape(len(cam), -1).max(axis=1, initial=0.0)
    scale = np.divide(1.0, top, out=np.zeros_like(top), where=top > 1e-12)
    return np.clip(cam * scale[:, None, None], 0.0, 1.0).astype(np.float32)


def _upsampled(cam: Any, size: tuple[int, ...]) -> np.ndarray:
    import tensorflow as tf

    cam = tf.image.resize(cam, size, method="bilinear")[..., 0]
    return np.maximum(np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0), 0.0)


def _as_map(heat: np.ndarray) -> np.ndarray:
    """One ``(H, W)`` map in ``[0, 1]`` (NaN as 0, a trailing channel of 1 dropped)."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim == 3 and heat.shape[-1] == 1:
        heat = heat[..., 0]
    if heat.ndim != 2:
        raise ValueError(f"expected one (H, W) heatmap, got shape {heat.shape}")
    return np.clip(np.nan_to_num(heat, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.45,
            colours: np.ndarray | None = None) -> Image.Image:
    """The heatmap, resized (bilinear) to ``image``'s full size, blended over the greyscale image as RGB with
    a colour table (``colours``: ``uint8 (256, 3)``, one colour per 8-bit heat level, such as
    ``xraylab.heatmaps.HEAT_COLOURS``; default matplotlib's 'jet'): each pixel weighs the colour by
    ``alpha * heat``, so where the heat is 0 the X-ray shows unchanged. Returns an RGB image of the same size as
    ``image``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if colours is None:
        import matplotlib

        colours = matplotlib.colormaps["jet"](np.arange(256), bytes=True)[:, :3]
    table = np.asarray(colours, np.uint8)
    if table.shape != (256, 3):
        raise ValueError(f"a colour table is uint8 (256, 3), got shape {table.shape}")
    grey = ToGrayscale()(image) / np.float32(255.0)  # any mode, 16-bit included -> [0, 1]
    height, width = grey.shape
    heat = _as_map(heat)
    if heat.shape != (height, width):
        heat = np.asarray(Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR), np.float32)
        heat = np.clip(heat, 0.0, 1.0)
    # The table indexed by the 8-bit heat: uint8 colours, not a float64 copy per pixel.
    levels = np.round(heat * 255.0).astype(np.uint8)
    out = np.empty((height, width, 3), np.uint8)
    weight = alpha * heat
    for channel in range(3):  # one float32 plane at a time
        blended = grey * (1.0 - weight) + (table[levels, channel] / np.float32(255.0)) * weight
        out[..., channel] = np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(out)


def heat_levels(heat: np.ndarray) -> np.ndarray:
    """One ``(H, W)`` map in ``[0, 1]`` as 8-bit heat levels (the cache's, and a colour table's index)."""
    return np.round(_as_map(heat) * 255.0).astype(np.uint8)


def heat_to_png(heat: np.ndarray) -> bytes:
    """One ``(H, W)`` map in ``[0, 1]`` as an 8-bit greyscale PNG (the cache format; within 1/255)."""
    levels = heat_levels(heat)
    buf = io.BytesIO()
    Image.fromarray(levels).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def heat_from_png(data: bytes) -> np.ndarray:
    """The ``(H, W)`` ``float32`` map in ``[0, 1]`` that ``heat_to_png`` stored."""
    with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
        levels = np.asarray(image.convert("L"), dtype=np.float32)
    return levels / np.float32(255.0)


def explain(model: Any, card: ModelCard, image_bytes: bytes, limits: ImageLimits | None = None) -> np.ndarray:
    """Grad-CAM ``(H, W)`` map of one encoded image, preprocessed exactly as serving does (the model's own
    spec, ``inference_transforms``); raises ``InvalidImageError`` for bytes the chain refuses."""
    image = inference_transforms(card.preprocess_spec(), limits)(image_bytes)
    return grad_cam(model, image[np.newaxis])[0]
