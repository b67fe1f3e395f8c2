"""The Grad-CAM colour scale (``xraylab.heatmaps``): one table for the layer, the blended picture and the legend;
and the geometry that lets a map be stretched over the whole picture."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from xraylab.heatmaps import HEAT_COLOURS, HEAT_LEGEND, colour_scale_css, heat_layer_png, heat_rgba, overlay_png
from xraylab.imaging import PreprocessSpec, inference_transforms


def test_the_table_is_turbo_read_only() -> None:
    import matplotlib

    assert HEAT_COLOURS.shape == (256, 3) and HEAT_COLOURS.dtype == np.uint8 and not HEAT_COLOURS.flags.writeable
    assert np.array_equal(HEAT_COLOURS, matplotlib.colormaps["turbo"](np.arange(256), bytes=True)[:, :3])


def test_the_legend_gradient_is_the_same_scale_from_low_to_high() -> None:
    css = colour_scale_css()
    assert css.startswith("linear-gradient(90deg, ") and css.endswith(")")
    assert not set(css) & set(";'\"<>")  # safe inside a style attribute
    stops = re.findall(r"#([0-9a-f]{6}) ([0-9.]+)%", css)
    assert len(stops) == 17 and stops[0] == ("30123b", "0") and stops[-1] == ("7a0402", "100")
    for colour, percent in stops:
        assert bytes(HEAT_COLOURS[round(float(percent) * 255 / 100)]).hex() == colour
    assert "low" in HEAT_LEGEND and "high" in HEAT_LEGEND


def test_the_layer_colours_each_level_and_its_alpha_is_the_heat() -> None:
    heat = np.array([[0.0, 0.5, 1.0], [np.nan, 0.25, 2.0]], np.float32)
    rgba = heat_rgba(heat)
    levels = np.array([[0, 128, 255], [0, 64, 255]], np.uint8)
    assert np.array_equal(rgba[..., 3], levels) and np.array_equal(rgba[..., :3], HEAT_COLOURS[levels])
    layer = Image.open(io.BytesIO(heat_layer_png(heat)))
    assert layer.mode == "RGBA" and layer.size == (3, 2) and np.array_equal(np.asarray(layer), rgba)


def test_the_blended_picture_uses_the_same_scale() -> None:
    picture = Image.new("L", (40, 30), 100)
    heat = np.ones((10, 10), np.float32)
    out = np.asarray(Image.open(io.BytesIO(overlay_png(picture, heat))).convert("RGB")).astype(float)
    want = np.round((100 / 255 * 0.55 + HEAT_COLOURS[255] / 255 * 0.45) * 255)
    assert np.abs(out - want).max() <= 1  # turbo's top colour blended at 0.45 (jet's would be far off)


def test_the_model_sees_the_whole_picture_stretched_so_a_map_lies_edge_to_edge_on_it() -> None:
    """No crop, no padding: a region at a fraction of the picture's width and height is at the same fraction of
    the model's input (and so of its Grad-CAM map, which Grad-CAM brings up to that input's size)."""
    width, height = 300, 120  # far from square
    grey = np.zeros((height, width), np.uint8)
    grey[30:60, 225:300] = 255  # rows 1/4 to 1/2, columns 3/4 to the right edge
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")
    seen = inference_transforms(PreprocessSpec(height=64, width=64))(buf.getvalue())[..., 0]
    assert seen.shape == (64, 64)
    assert seen[18:30, 50:64].min() > 0.9  # inside the region, at the same fractions
    assert seen[:14, :].max() < 0.1 and seen[34:, :].max() < 0.1 and seen[:, :46].max() < 0.1
