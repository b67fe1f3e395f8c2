"""``xraylab predict``: files scored through the serving chain, refusals with their reason, exit codes."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli import xraylab
from xraylab.imaging import ImageLimits, PreprocessSpec
from xraylab.registry import FolderRegistry, ModelCard
from xraylab.synthetic import encode_jpeg, generate_xray

SPEC = PreprocessSpec(height=64, width=64)
pytestmark = pytest.mark.usefixtures("model_keys")  # publishing signs (tests/conftest.py's key pair)


def publish_model(root: Path) -> FolderRegistry:
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((64, 64, 1)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")])
    registry = FolderRegistry(root)
    registry.publish(model, ModelCard(version="m1", architecture="t", preprocess=SPEC.to_dict(),
                                      bands={"pneumonia": 0.8, "unsure": 0.5}, calibration={"a": 2.0, "b": -0.1}),
                     promote_it=True)
    return registry


def test_files_score_as_serving_scores_them_and_bad_ones_are_refused(tmp_path: Path) -> None:
    from serve_app.classifier import load_active, score_batch
    from xraylab.file_scoring import score_files

    registry = publish_model(tmp_path / "models")
    rng = np.random.default_rng(0)
    good = []
    for i in range(3):
        path = tmp_path / f"x{i}.jpeg"
        path.write_bytes(encode_jpeg(generate_xray(rng, bool(i % 2))))
        good.append(path)
    png = tmp_path / "x.png"
    Image.open(io.BytesIO(good[0].read_bytes())).save(png)
    text, grey, missing = tmp_path / "notes.jpeg", tmp_path / "grey.png", tmp_path / "missing.jpeg"
    text.write_text("not an image")
    Image.new("L", (256, 256), 128).save(grey)
    limits = ImageLimits(max_pixels=40_000_000, min_side=64, min_dynamic_range=12.0)

    results = list(score_files(registry, [good[0], text, good[1], grey, missing, png, good[2]], limits=limits))
    assert [r["file"] for r in results] == [str(p) for p in (good[0], text, good[1], grey, missing, png, good[2])]
    assert [r.get("reason") for r in results] == [None, "not_image", None, "not_radiograph", "unreadable", None, None]
    active = load_active(registry, "m1", limits)
    expected = score_batch([active.transform(p.read_bytes()) for p in good], [active] * 3)
    scored = [r for r in results if "score" in r]
    np.testing.assert_allclose([r["score"] for r in scored if r["file"] != str(png)], expected, atol=1e-5)
    assert all(r["model_version"] == "m1" and r["band"] == active.bands.band(r["score"]) for r in scored)
    assert abs(scored[2]["score"] - scored[0]["score"]) < 0.02, "a PNG of the same picture scores alike"


def test_the_command_prints_one_json_line_per_file_and_refuses_bad_arguments(tmp_path: Path) -> None:
    publish_model(tmp_path / "models")
    image = tmp_path / "a.jpeg"
    image.write_bytes(encode_jpeg(generate_xray(np.random.default_rng(1), True)))
    (tmp_path / "b.jpeg").write_text("nope")
    env = {"XRAYLAB_MODEL_DIR": str(tmp_path / "models"), "XRAYLAB_MODEL_REGISTRY": ""}
    done = xraylab("predict", str(image), str(tmp_path / "b.jpeg"), env=env)
    assert done.returncode == 0, done.stderr[-500:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["file"] == str(image) and 0 <= lines[0]["score"] <= 1 and lines[0]["model_version"] == "m1"
    assert lines[1] == {"file": str(tmp_path / "b.jpeg"), "error": lines[1]["error"], "reason": "not_image"}
    assert "note: Trained on generated (synthetic) images" in done.stderr  # the card's notice, beside stdout
    unknown = xraylab("predict", str(image), "--model", "nope", env=env)
    assert unknown.returncode == 2 and "not found" in unknown.stderr
    assert xraylab("predict", env=env).returncode == 2  # no file


def test_dicom_files_score_as_their_jpeg_does_and_unsupported_ones_are_refused(tmp_path: Path) -> None:
    from datetime import date

    import pydicom

    from ingest.dicom_files import ModalityStudy, dicom_bytes

    publish_model(tmp_path / "models")
    env = {"XRAYLAB_MODEL_DIR": str(tmp_path / "models"), "XRAYLAB_MODEL_REGISTRY": ""}
    study = ModalityStudy("P1", "Ana Okafor", date(2026, 11, 4), "st-mary")
    pixels = generate_xray(np.random.default_rng(4), True)
    files = {"chest.jpeg": encode_jpeg(pixels),
             "chest.dcm": dicom_bytes(pixels, study, syntax="jpeg2000-lossless", bits=16, photometric="MONOCHROME1"),
             "chest-rle.dcm": dicom_bytes(pixels, study, syntax="rle"),
             "renamed.dcm": encode_jpeg(pixels),
             "plan.dcm": (Path(pydicom.__file__).parent / "data" / "test_files" / "rtplan.dcm").read_bytes()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = xraylab("predict", *(str(tmp_path / name) for name in files), env=env)
    assert done.returncode == 0, done.stderr[-500:]
    lines = {Path(d["file"]).name: d for d in map(json.loads, done.stdout.splitlines())}
    assert abs(lines["chest.dcm"]["score"] - lines["chest.jpeg"]["score"]) < 0.01
    assert lines["chest-rle.dcm"]["score"] == lines["chest.dcm"]["score"], "lossless: the same input"
    assert lines["renamed.dcm"]["reason"] == "not_dicom"
    assert lines["plan.dcm"]["reason"] == "not_image_dicom" and "RT Plan" in lines["plan.dcm"]["error"]
