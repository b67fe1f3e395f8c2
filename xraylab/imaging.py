"""Image preprocessing: the one chain that both training and serving run.

Every transform is a small typed callable (MONAI style): array or bytes in, array out.
``PreprocessSpec`` holds the parameters; it is saved with every model so that serving
rebuilds exactly the chain the model was trained with (``inference_transforms(spec)``).

Contract: the output of the chain is ``float32`` of shape ``(height, width, 1)`` with
values in ``[0, 1]``. Transforms are stateless and thread-safe.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from xraylab.errors import RejectReason

__all__ = [
    "InvalidImageError",
    "ImageLimits",
    "check_size",
    "load_picture",
    "CheckDynamicRange",
    "PreprocessSpec",
    "DecodeImage",
    "ToGrayscale",
    "Resize",
    "ScaleIntensity",
    "AddChannel",
    "Compose",
    "inference_transforms",
    "open_picture",
    "picture_size",
]

# Pillow refuses images above this many pixels (decompression bombs); X-rays are well below.
Image.MAX_IMAGE_PIXELS = 80_000_000


class InvalidImageError(ValueError):
    """The bytes are not an image we can score; ``reason`` says why (``not_image`` by default: not an
    image, truncated, corrupt; ``too_many_pixels``; ``not_radiograph``: too small or uniform)."""

    def __init__(self, message: str, reason: RejectReason = RejectReason.NOT_IMAGE) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageLimits:
    """What an image must be to be scored at all (serving sets them from ``Settings.image_limits()``).

    ``max_pixels`` bounds memory: it counts the pixels that will really be decoded (a JPEG at its reduced
    draft scale), checked from the header before any pixel is decoded. ``min_side`` and
    ``min_dynamic_range`` (grey levels between the 1st and 99th percentile, on 0-255, measured on the
    resized image) refuse tiny, blank and uniform images, which a CNN would otherwise score with confidence."""

    max_pixels: int
    min_side: int
    min_dynamic_range: float


@dataclass(frozen=True)
class PreprocessSpec:
    """Parameters of the preprocessing chain, stored with each model.

    ``version`` is the chain's own: 1 decodes every image at full size; 2 (models from issue 12 on) has
    libjpeg decode a JPEG at the smallest 1/2, 1/4 or 1/8 scale still at least the model's input size,
    in grayscale (DCT scaling, ``Image.draft``): a 512x512 JPEG costs about a third of the decode, a
    3000x2500 PACS export about a thirtieth. A model keeps the version it was trained with."""

    height: int = 150
    width: int = 150
    resample: str = "bilinear"
    scale: float = 255.0
    version: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        """The chain's identity, the same wherever it is computed: two specs with one key give the same pixels."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    """Refuse a ``(width, height)`` with more pixels than ``limits`` allow, or a side under their minimum."""
    width, height = size
    if width * height > limits.max_pixels:
        raise InvalidImageError(f"{width}x{height} pixels to decode ({width * height / 1e6:.1f} MP) "
                                f"> {limits.max_pixels / 1e6:.1f} MP", RejectReason.TOO_MANY_PIXELS)
    if min(width, height) < limits.min_side:
        raise InvalidImageError(f"{width}x{height} pixels: a side under {limits.min_side}",
                                RejectReason.NOT_RADIOGRAPH)


class DecodeImage:
    """Bytes of a JPEG, PNG or DICOM file -> a Pillow image, fully loaded (so truncation fails here), or for a
    DICOM file its grey picture as an array.

    With ``draft_size`` (width, height), a JPEG is decoded at reduced scale in grayscale, never smaller
    than that size (see ``PreprocessSpec.version``); PNGs are always decoded whole. A DICOM file (``DICM`` at
    byte 128) becomes the grey picture its tags describe (``xraylab.dicom.to_grey``: Modality LUT, VOI LUT or
    window, MONOCHROME1 inverted) as a ``float32`` array in [0, 255], so that the rest of the chain treats it
    as it treats an 8-bit JPEG of the same picture (an array, not a Pillow "F" image: at 2,890 x 2,534 each
    conversion between the two costs 25-45 ms)."""

    formats: tuple[str, ...] = ("JPEG", "PNG")

    def __init__(self, draft_size: tuple[int, int] | None = None, limits: ImageLimits | None = None) -> None:
        self.draft_size = draft_size
        self.limits = limits

    def __call__(self, data: bytes) -> Image.Image | np.ndarray:
        if not data:
            raise InvalidImageError("empty object")
        from xraylab.dicom import decode_grey, is_dicom  # here: xraylab.dicom builds on this module

        if is_dicom(data):
            return decode_grey(data, self.limits)
        return load_picture(data, self.formats, self.limits, self.draft_size)


def load_picture(data: bytes, formats: tuple[str, ...], limits: ImageLimits | None,
                 draft_size: tuple[int, int] | None = None) -> Image.Image:
    """A JPEG or PNG (``formats``) fully loaded, held to ``limits`` from its header before any pixel is decoded;
    with ``draft_size``, a JPEG decoded at reduced scale in grayscale (``DecodeImage``)."""
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
        if draft_size and image.format == "JPEG":
            image.draft("L", draft_size)
        if limits:
            check_size(image.size, limits)
        image.load()
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, above any ImageLimits
        raise InvalidImageError(f"more pixels than Pillow decodes: {exc}", RejectReason.TOO_MANY_PIXELS) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not a JPEG, PNG or DICOM Part 10 file") from exc
    except (OSError, SyntaxError) as exc:
        raise InvalidImageError(f"not a readable JPEG, PNG or DICOM image: {exc}") from exc
    return image


class ToGrayscale:
    """Any Pillow mode (RGB, RGBA, I;16, P, ...) -> a float32 2-D array of luminance in [0, 255]; a float
    image ("F") or a grey array (a decoded DICOM) is in [0, 255] already."""

    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        if isinstance(image, np.ndarray):
            return image.astype(np.float32, copy=False)
        if image.mode == "F":
            return np.asarray(image, dtype=np.float32)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(image, dtype=np.float32)
            top = float(arr.max()) or 1.0
            return arr * (255.0 / top)
        return np.asarray(image.convert("L"), dtype=np.float32)


class Resize:
    """A 2-D array -> ``(height, width)`` with the given resampling filter."""

    _filters = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
                "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}

    def __init__(self, height: int, width: int, resample: str = "bilinear") -> None:
        if resample not in self._filters:
            raise ValueError(f"unknown resample {resample!r}; choose from {sorted(self._filters)}")
        self.size = (width, height)
        self.resample = self._filters[resample]

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        if arr.shape[::-1] == self.size:
            return arr.astype(np.float32, copy=False)
        image = Image.fromarray(arr.astype(np.float32, copy=False), mode="F")
        return np.asarray(image.resize(self.size, self.resample), dtype=np.float32)


class ScaleIntensity:
    """Divide by ``scale`` and clip to [0, 1]: ``out = clip(x / scale, 0, 1)``."""

    def __init__(self, scale: float = 255.0) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        return np.clip(arr / np.float32(self.scale), 0.0, 1.0).astype(np.float32)


class CheckDynamicRange:
    """Refuse a blank or uniform image: the grey levels between its 1st and 99th percentile must span at
    least ``min_range`` on the 0-255 scale. Runs on the resized 2-D array, so it costs next to nothing."""

    def __init__(self, min_range: float) -> None:
        self.min_range = min_range

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        low, high = np.percentile(arr, [1, 99])
        if not high - low >= self.min_range:  # NaN (no finite grey levels) is refused too
            raise InvalidImageError(f"grey levels span {high - low:.1f} of 255 (1st-99th percentile), "
                                    f"under {self.min_range:g}: blank or uniform", RejectReason.NOT_RADIOGRAPH)
        return arr


class AddChannel:
    """``(H, W)`` -> ``(H, W, 1)``, the channel-last layout the Keras model takes."""

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        return arr[..., np.newaxis]


class Compose:
    """Apply callables in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, data: Any) -> Any:
        for transform in self.transforms:
            data = transform(data)
        return data


def inference_transforms(spec: PreprocessSpec | None = None, limits: ImageLimits | None = None) -> Compose:
    """The deterministic chain, bytes -> ``float32 (H, W, 1)``. Training adds its own ``Rand*`` steps.

    With ``limits`` (serving), images too large to decode safely or not plausibly radiographs are refused
    with ``InvalidImageError`` and its reason; the pixels of an accepted image are the same either way."""
    spec = spec or PreprocessSpec()
    gate = [CheckDynamicRange(limits.min_dynamic_range)] if limits else []
    return Compose([
        DecodeImage(draft_size=(spec.width, spec.height) if spec.version >= 2 else None, limits=limits),
        ToGrayscale(),
        Resize(spec.height, spec.width, spec.resample),
        *gate,
        ScaleIntensity(spec.scale),
        AddChannel(),
    ])


def open_picture(data: bytes, max_side: int | None = None, limits: ImageLimits | None = None) -> Image.Image:
    """The picture of a JPEG, PNG or DICOM file for people to look at: an 8-bit grey (or the file's own mode,
    for JPEG and PNG) Pillow image, at most ``max_side`` pixels a side when given (a JPEG decodes at a reduced
    scale). A DICOM file shows as the chain sees it, rounded to 8 bits. It decodes through the chain's own
    ``DecodeImage``: with ``limits``, a picture that would decode to more pixels than they allow is refused
    (``InvalidImageError``, ``too_many_pixels``) from its header, before any pixel is decoded, as scoring refuses it."""
    decoded = DecodeImage((max_side, max_side) if max_side else None, limits)(data)
    if isinstance(decoded, np.ndarray):  # a DICOM file's grey picture
        picture = Image.fromarray(np.round(ToGrayscale()(decoded)).astype(np.uint8), mode="L")
    else:
        picture = decoded
    if max_side:
        picture.thumbnail((max_side, max_side))
    return picture


def picture_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a JPEG, PNG or DICOM file, read from its header."""
    from xraylab.dicom import dicom_size, is_dicom, read_dataset

    if is_dicom(data):
        return dicom_size(read_dataset(data, header_only=True))
    try:
        with Image.open(io.BytesIO(data)) as header:
            return header.size
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, above any ImageLimits
        raise InvalidImageError(f"more pixels than Pillow decodes: {exc}", RejectReason.TOO_MANY_PIXELS) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidImageError(f"not a readable JPEG, PNG or DICOM image: {exc}") from exc
