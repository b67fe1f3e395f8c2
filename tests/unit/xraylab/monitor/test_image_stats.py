import numpy as np
import pytest
from scipy import ndimage

from xraylab.monitor.image_stats import READABLE_STATS, readable_statistics, readable_statistics_batch


def _image(seed: int = 0, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + 0.2 * rng.standard_normal(size), 0.0, 1.0)


def test_order_and_values() -> None:
    x = _image()
    v = readable_statistics(x, width=1024, height=768)
    assert v.dtype == np.float64 and v.shape == (len(READABLE_STATS),)
    stats = dict(zip(READABLE_STATS, v, strict=True))
    assert stats["brightness"] == pytest.approx(x.mean())
    assert stats["contrast"] == pytest.approx(x.std())
    assert stats["sharpness"] == pytest.approx(ndimage.laplace(x).var())
    assert (stats["width"], stats["height"]) == (1024, 768)
    assert stats["aspect"] == pytest.approx(1024 / 768)


def test_blur_lowers_sharpness_and_brightening_raises_brightness() -> None:
    x = _image(1)
    base = readable_statistics(x, 100, 100)
    blurred = readable_statistics(ndimage.gaussian_filter(x, 2.0), 100, 100)
    brighter = readable_statistics(np.clip(x + 0.2, 0, 1), 100, 100)
    assert blurred[2] < 0.2 * base[2]
    assert brighter[0] > base[0] + 0.1
    flat = readable_statistics(np.full((32, 32), 0.3), 100, 100)
    assert flat[1] == pytest.approx(0.0) and flat[2] == pytest.approx(0.0)


def test_channel_axis_is_accepted_and_bad_shapes_refused() -> None:
    x = _image(2)
    np.testing.assert_allclose(readable_statistics(x[..., None], 30, 20), readable_statistics(x, 30, 20))
    with pytest.raises(ValueError):
        readable_statistics(np.zeros((4, 4, 3)), 10, 10)
    with pytest.raises(ValueError):
        readable_statistics(x, 0, 10)


def test_batch_matches_single_images() -> None:
    images = np.stack([_image(s) for s in range(5)])
    images[1] = ndimage.gaussian_filter(images[1], 1.5)
    sizes = np.array([[1024, 768], [2000, 2000], [640, 480], [300, 900], [1, 1]])
    batch = readable_statistics_batch(images[..., None], sizes)
    assert batch.shape == (5, 6)
    for i in range(5):
        np.testing.assert_allclose(batch[i], readable_statistics(images[i], *sizes[i]), rtol=1e-12)
    assert readable_statistics_batch(np.zeros((0, 8, 8)), np.zeros((0, 2))).shape == (0, 6)
    with pytest.raises(ValueError):
        readable_statistics_batch(images, sizes[:3])
