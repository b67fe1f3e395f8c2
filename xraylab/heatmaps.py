"""Grad-CAM maps of scored studies, computed once per (study, model version) and cached in the ``heatmaps`` table,
so that the review app, its replicas and the deliverer (``delivery/``: the picture stored back into the PACS)
share each map; the last two models loaded stay in memory.

The colour scale of a map, wherever the review app shows one, is defined here once (``HEAT_COLOURS``, Google's
'turbo': dark blue for little of the model's evidence, through green and yellow, to dark red for the most): the
map as a layer of its own for the viewer (``heat_layer_png``: RGBA, its alpha the heat itself, so a map laid over
the film at opacity ``a`` is the film blended with ``overlay(alpha=a)``'s weights), the map blended over the film
(``overlay_png``) and the legend under the viewer (``colour_scale_css``, ``HEAT_LEGEND``).

Geometry: the model sees the whole picture, resized (stretched, aspect ratio not kept) to its input size with no
crop and no padding (``xraylab.imaging.inference_transforms``), and Grad-CAM brings its map up to that input size:
a map's corners are the picture's corners. Stretched over the whole picture, edge to edge, it lies where the model
looked.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from xraylab.db.review import cached_heatmap, store_heatmap
from xraylab.db.session import Database
from xraylab.gradcam import heat_levels
from xraylab.imaging import ImageLimits, open_picture
from xraylab.registry import RegistryLike

__all__ = ["HeatmapCache", "OVERLAY_MAX_SIDE", "overlay_base", "overlay_png", "HEAT_COLOURS", "HEAT_LEGEND",
           "colour_scale_css", "heat_rgba", "heat_layer_png"]

log = logging.getLogger("xraylab.heatmaps")
OVERLAY_MAX_SIDE = 2048  # a map's detail is the model's input size: a 3,000-pixel film need not be blended whole

# The colour of each 8-bit heat level: Google's 'turbo' (Mikhailov, 2019; Apache 2.0), 256 RGB entries, as
# matplotlib ships it. Read at import, so no request imports matplotlib.
_TURBO_HEX = (
    "30123b31154232184a341b51351e5836215f37236538266c3929723a2c793b2f7f3c32853c358b3d37913e3a963f3d9c"
    "4040a14043a64145ab4148b0424bb5434eba4350be4353c24456c74458cb455bce455ed24560d64563d94666dd4668e0"
    "466be3466de64670e84673eb4675ed4678f0467af2467df4467ff64682f84584f94587fb4589fc448cfd438efd4291fe"
    "4193fe4096fe3f98fe3e9bfe3c9dfd3ba0fc39a2fc38a5fb36a8f934aaf833acf631aff52fb1f32db4f12bb6ef2ab9ed"
    "28bbeb26bde925c0e623c2e421c4e120c6df1ec9dc1dcbda1ccdd71bcfd41ad1d219d3cf18d5cc18d7ca17d9c717dac4"
    "17dcc217debf18e0bd18e1ba19e3b81ae4b61be5b41de7b11ee8af20e9ac22eba924eca627eda329eea02cef9d2ff09a"
    "32f19735f39438f4913bf48d3ff58a42f68746f7834af8804df97c51f97955fa7659fb725dfb6f61fc6c65fc6869fd65"
    "6dfd6271fd5f74fe5c78fe597cfe5680fe5384fe5087fe4d8bfe4b8efe4892fe4695fe4498fe429bfd409efd3ea1fc3d"
    "a4fc3ba6fb3aa9fb39acfa37aef937b1f836b3f835b6f735b9f534bbf434bef334c0f233c3f133c5ef33c8ee33caed33"
    "cdeb34cfea34d1e834d4e735d6e535d8e335dae236dde036dfde36e1dc37e3da37e5d838e7d738e8d538ead339ecd139"
    "edcf39efcd39f0cb3af2c83af3c63af4c43af6c23af7c039f8be39f9bc39f9ba38fab737fbb537fbb336fcb035fcae34"
    "fdab33fda932fda631fda330fea12ffe9e2efe9b2dfe982cfd952bfd9229fd8f28fd8c27fc8926fc8624fb8323fb8022"
    "fa7d20fa7a1ff9771ef8741cf7711bf76e1af66b18f56817f46516f36315f26014f15d13ef5a11ee5810ed550fec520e"
    "ea500de94d0de84b0ce6490be5460ae3440ae24209e04008de3e08dd3c07db3a07d93806d73606d63405d43205d23005"
    "d02f04ce2d04cb2b03c92903c72803c52602c32402c02302be2102bb1f01b91e01b61c01b41b01b11901ae1801ac1601"
    "a91501a61401a31201a011019d10019a0e01970d01940c01910b018e0a018b09018708018407018106027d05027a0402"
)
HEAT_COLOURS: np.ndarray = np.frombuffer(bytes.fromhex("".join(_TURBO_HEX)), np.uint8).reshape(256, 3)
HEAT_COLOURS.setflags(write=False)
_LEGEND_STOPS = 17  # colours of the legend's gradient: every 16th level, and the last
HEAT_LEGEND = ("Grad-CAM: where the model found its pneumonia evidence, from low (blue, see-through) to high "
               "(red). It shows where the model looked, not a finding.")


def colour_scale_css() -> str:
    """``HEAT_COLOURS`` as a CSS ``linear-gradient`` from low (left) to high (right), for the legend's bar."""
    levels = [round(i * 255 / (_LEGEND_STOPS - 1)) for i in range(_LEGEND_STOPS)]
    stops = ", ".join(f"#{bytes(HEAT_COLOURS[level]).hex()} {level / 255 * 100:.4g}%" for level in levels)
    return f"linear-gradient(90deg, {stops})"


def heat_rgba(heat: np.ndarray) -> np.ndarray:
    """A ``(H, W)`` map in [0, 1] as ``uint8 (H, W, 4)``: the scale's colour of each level, and an alpha that is the
    heat itself (0 where the model found nothing: the film shows through; 255 at the map's maximum)."""
    levels = heat_levels(heat)
    out = np.empty((*levels.shape, 4), np.uint8)
    out[..., :3] = HEAT_COLOURS[levels]
    out[..., 3] = levels
    return out


def heat_layer_png(heat: np.ndarray) -> bytes:
    """``heat_rgba`` as an RGBA PNG at the map's own size (the model's input size), for the browser to stretch
    over the whole film, edge to edge, at the opacity the reader chooses."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(heat_rgba(heat), "RGBA").save(out, "PNG", compress_level=3)
    return out.getvalue()


class HeatmapCache:
    def __init__(self, db: Database, registry: RegistryLike, limits: ImageLimits | None = None) -> None:
        self.db = db
        self.registry = registry
        self.limits = limits
        self._models: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, version: str) -> tuple[Any, Any]:
        """The model and its card (``xraylab.registry.load_model``)."""
        from xraylab.registry import load_model

        with self._lock:
            if version not in self._models:
                self._models[version] = load_model(self.registry, version)
                while len(self._models) > 2:
                    self._models.popitem(last=False)
            self._models.move_to_end(version)
            return self._models[version]

    def warm(self, version: str = "") -> str:
        """Load the model ``version`` (default: the registry's promoted one) and run Grad-CAM once on a blank
        input, so that the first map asked for pays neither the model's load nor the building of its gradient
        model. Returns the version warmed."""
        from xraylab.gradcam import grad_cam
        from xraylab.registry import resolve_version

        version = version or resolve_version(self.registry)
        model, card = self.model(version)
        spec = card.preprocess_spec()
        with self._lock:
            grad_cam(model, np.zeros((1, spec.height, spec.width, 1), np.float32))
        return version

    def cached(self, study_id: int, version: str) -> np.ndarray | None:
        """The study's map under ``version`` if one is cached, else None."""
        from xraylab.gradcam import heat_from_png

        with self.db.session() as session:
            png = cached_heatmap(session, study_id, version)
        return heat_from_png(png) if png is not None else None

    def heat(self, study_id: int, version: str, original: bytes, *, study_uid: str = "") -> np.ndarray:
        """The study's map (2-D, in [0, 1]) under the model ``version``, from the cache or computed from the
        study's stored bytes ``original`` through that model's own preprocessing."""
        from xraylab.gradcam import explain, heat_to_png

        cached = self.cached(study_id, version)
        if cached is not None:
            return cached
        model, card = self.model(version)
        with self._lock:  # one Grad-CAM at a time per process: it is CPU-bound and the model is shared
            cached = self.cached(study_id, version)  # made meanwhile (the precomputer, another request)?
            if cached is not None:
                return cached
            heat = explain(model, card, original, self.limits)
        with self.db.session() as session:
            store_heatmap(session, study_id, version, heat_to_png(heat))
        log.info("study %s: Grad-CAM map computed under model %s", study_uid or study_id, version)
        return heat


def overlay_base(original: bytes, limits: ImageLimits | None = None) -> Any:
    """The study's picture to lay a map over (Pillow), at most ``OVERLAY_MAX_SIDE`` pixels a side: a JPEG decodes
    at a reduced size; a picture (DICOM too) with more pixels than ``limits`` allow is refused
    (``InvalidImageError``) before any map is computed for it."""
    return open_picture(original, OVERLAY_MAX_SIDE, limits)


def overlay_png(picture: Any, heat: np.ndarray) -> bytes:
    """The map over ``picture`` (``overlay_base``), in ``HEAT_COLOURS``, as a PNG."""
    from xraylab.gradcam import overlay

    out = io.BytesIO()
    overlay(picture, heat, colours=HEAT_COLOURS).save(out, "PNG", optimize=False, compress_level=3)
    return out.getvalue()
