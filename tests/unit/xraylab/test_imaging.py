import io

import numpy as np
import pytest
from PIL import Image

from xraylab.imaging import (
    AddChannel,
    DecodeImage,
    ImageLimits,
    InvalidImageError,
    PreprocessSpec,
    Resize,
    ScaleIntensity,
    ToGrayscale,
    inference_transforms,
)


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


class TestDecodeImage:
    def test_jpeg_and_png(self) -> None:
        img = Image.new("RGB", (40, 30), (10, 20, 30))
        for fmt in ("JPEG", "PNG"):
            assert DecodeImage()(encode(img, fmt)).size == (40, 30)

    @pytest.mark.parametrize("data", [b"", b"hello, not an image", b"%PDF-1.4 ..."])
    def test_not_an_image(self, data: bytes) -> None:
        with pytest.raises(InvalidImageError):
            DecodeImage()(data)

    def test_truncated_jpeg(self) -> None:
        data = encode(Image.new("L", (200, 200), 128), "JPEG")
        with pytest.raises(InvalidImageError):
            DecodeImage()(data[: len(data) // 2])

    def test_other_formats_refused(self) -> None:
        with pytest.raises(InvalidImageError):
            DecodeImage()(encode(Image.new("L", (8, 8)), "BMP"))


class TestToGrayscale:
    def test_rgb_to_luminance(self) -> None:
        out = ToGrayscale()(Image.new("RGB", (4, 4), (255, 255, 255)))
        assert out.shape == (4, 4) and out.dtype == np.float32 and np.allclose(out, 255)

    def test_16_bit_is_rescaled(self) -> None:
        arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
        out = ToGrayscale()(Image.fromarray(arr))
        assert out.max() == pytest.approx(255.0) and out.min() == 0.0


class TestResize:
    def test_shape(self) -> None:
        assert Resize(150, 120)(np.zeros((300, 200), np.float32)).shape == (150, 120)

    def test_unknown_filter(self) -> None:
        with pytest.raises(ValueError):
            Resize(10, 10, "lanczos9")


class TestScaleIntensity:
    def test_scale_and_clip(self) -> None:
        out = ScaleIntensity(255.0)(np.array([-10.0, 0.0, 127.5, 300.0], np.float32))
        assert np.allclose(out, [0.0, 0.0, 0.5, 1.0])

    def test_bad_scale(self) -> None:
        with pytest.raises(ValueError):
            ScaleIntensity(0)


def test_add_channel() -> None:
    assert AddChannel()(np.zeros((5, 6))).shape == (5, 6, 1)


def test_chain_output_contract() -> None:
    spec = PreprocessSpec(height=64, width=48)
    out = inference_transforms(spec)(encode(Image.new("RGB", (300, 250), (200, 100, 50)), "PNG"))
    assert out.shape == (64, 48, 1) and out.dtype == np.float32
    assert 0.0 <= out.min() <= out.max() <= 1.0


def test_spec_round_trip_ignores_unknown_keys() -> None:
    spec = PreprocessSpec(height=100, width=120, resample="bicubic")
    assert PreprocessSpec.from_dict({**spec.to_dict(), "future_field": 1}) == spec


def test_version_2_decodes_jpegs_at_reduced_scale_but_never_below_the_input_size() -> None:
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (1200, 1000, 3), dtype=np.uint8), "RGB")
    data = encode(big, "JPEG")
    drafted = DecodeImage(draft_size=(150, 150))(data)
    assert drafted.mode == "L" and drafted.size == (250, 300), "1/4 scale: the smallest still >= 150x150"
    assert DecodeImage()(data).size == (1000, 1200), "without a draft size, decoded whole"
    png = DecodeImage(draft_size=(150, 150))(encode(big, "PNG"))
    assert png.size == (1000, 1200), "PNGs have no reduced-scale decode"


def test_version_2_chain_stays_close_to_full_decode_and_version_1_is_kept() -> None:
    y, x = np.mgrid[0:512, 0:512]
    smooth = Image.fromarray(((np.sin(x / 40) + np.cos(y / 55)) * 60 + 128).astype(np.uint8), "L")
    data = encode(smooth, "JPEG")
    v1, v2 = (inference_transforms(PreprocessSpec(version=v))(data) for v in (1, 2))
    assert v1.shape == v2.shape == (150, 150, 1)
    assert float(np.abs(v1 - v2).mean()) < 0.01, "the same picture, within JPEG and resampling noise"
    assert PreprocessSpec.from_dict({"height": 150, "width": 150, "version": 1}).version == 1


class TestImageLimits:
    limits = ImageLimits(max_pixels=1_000_000, min_side=64, min_dynamic_range=12)

    def reason(self, data: bytes) -> str:
        with pytest.raises(InvalidImageError) as info:
            inference_transforms(PreprocessSpec(), self.limits)(data)
        return info.value.reason

    def test_too_many_pixels_is_refused_before_decoding_but_a_jpeg_counts_at_its_draft_size(self) -> None:
        noise = np.random.default_rng(0).integers(0, 255, (1600, 1600), dtype=np.uint8)
        assert self.reason(encode(Image.fromarray(noise), "PNG")) == "too_many_pixels"
        # The same picture as JPEG decodes at 1/8 scale (200x200), well under the limit.
        out = inference_transforms(PreprocessSpec(), self.limits)(encode(Image.fromarray(noise), "JPEG"))
        assert out.shape == (150, 150, 1)

    def test_tiny_blank_and_uniform_images_are_not_radiographs(self) -> None:
        assert self.reason(encode(Image.new("L", (1, 1), 128), "PNG")) == "not_radiograph"
        assert self.reason(encode(Image.new("L", (512, 512), 128), "JPEG")) == "not_radiograph"
        assert self.reason(encode(Image.new("RGB", (300, 300), (0, 0, 0)), "PNG")) == "not_radiograph"

    def test_a_generated_radiograph_passes_and_scores_the_same_pixels_as_without_limits(self) -> None:
        from xraylab.synthetic import encode_jpeg, generate_xray

        data = encode_jpeg(generate_xray(np.random.default_rng(1), True))
        gated = inference_transforms(PreprocessSpec(), self.limits)(data)
        assert np.array_equal(gated, inference_transforms(PreprocessSpec())(data))


def test_open_picture_holds_a_picture_to_the_chains_pixel_limit_before_decoding(monkeypatch) -> None:
    from PIL import ImageFile

    from xraylab.errors import RejectReason
    from xraylab.imaging import open_picture, picture_size

    limits = ImageLimits(max_pixels=130 * 130, min_side=1, min_dynamic_range=0.0)
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1)), "L")
    jpeg, png = encode(gradient, "JPEG"), encode(gradient, "PNG")
    # A JPEG counts the pixels it really decodes: at most 128 a side it decodes at 1/2 scale, under the limit.
    assert open_picture(jpeg, 128, limits).size == (128, 128)
    assert open_picture(png).size == (256, 256)  # no limits: as before
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    for data, side in ((jpeg, None), (png, None), (png, 128)):
        with pytest.raises(InvalidImageError) as refused:
            open_picture(data, side, limits)
        assert refused.value.reason is RejectReason.TOO_MANY_PIXELS
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(InvalidImageError):  # only what the chain reads: JPEG, PNG, DICOM
        open_picture(encode(gradient, "BMP"), limits=limits)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own ceiling is twice this
    with pytest.raises(InvalidImageError) as bomb:
        picture_size(png)
    assert bomb.value.reason is RejectReason.TOO_MANY_PIXELS
