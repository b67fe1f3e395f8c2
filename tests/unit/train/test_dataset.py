from pathlib import Path

import numpy as np
import pytest

from train.dataset import DatasetLayoutError, load_images, scan_layout
from xraylab.imaging import PreprocessSpec
from xraylab.synthetic import write_dataset


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    write_dataset(tmp_path, {"train": 8, "val": 4, "test": 4}, size=64, seed=1)
    return tmp_path


def test_scan_counts_imbalance_and_weights(root: Path) -> None:
    index = scan_layout(root)
    assert index.counts() == {"train": {"NORMAL": 2, "PNEUMONIA": 6}, "val": {"NORMAL": 1, "PNEUMONIA": 3},
                              "test": {"NORMAL": 1, "PNEUMONIA": 3}}
    weights = index.class_weights()
    assert weights[0] == pytest.approx(8 / 4) and weights[1] == pytest.approx(8 / 12)
    assert len(index.fingerprint()) == 64 and index.fingerprint() == scan_layout(root).fingerprint()


def test_png_is_accepted(root: Path) -> None:
    from PIL import Image

    Image.new("RGB", (90, 70), (50, 60, 70)).save(root / "train" / "NORMAL" / "extra.png")
    index = scan_layout(root)
    assert index.counts()["train"]["NORMAL"] == 3


@pytest.mark.parametrize("remove, message", [("val", "missing split"), ("test/PNEUMONIA", "missing class")])
def test_missing_parts_are_errors(root: Path, remove: str, message: str) -> None:
    import shutil

    shutil.rmtree(root / remove)
    with pytest.raises(DatasetLayoutError, match=message):
        scan_layout(root)


def test_empty_class_folder_is_an_error(root: Path) -> None:
    for p in (root / "val" / "NORMAL").iterdir():
        p.unlink()
    with pytest.raises(DatasetLayoutError, match="no JPEG/PNG images"):
        scan_layout(root)


def test_unreadable_images_are_skipped_and_counted(root: Path) -> None:
    (root / "train" / "NORMAL" / "broken.jpeg").write_bytes(b"not a jpeg")
    index = scan_layout(root)
    images, labels, skipped = load_images(index.files["train"], PreprocessSpec(height=32, width=32))
    assert [Path(s).name for s in skipped] == ["broken.jpeg"]
    assert images.shape == (8, 32, 32, 1) and labels.tolist().count(1.0) == 6
    assert np.all((images >= 0) & (images <= 1))
