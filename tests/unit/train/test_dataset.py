from pathlib import Path

import numpy as np
import pytest

from train.dataset import DatasetLayoutError, carve_val, load_images, scan_layout
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


@pytest.mark.parametrize("remove, message", [("test", "missing split"), ("test/PNEUMONIA", "missing class")])
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


def test_without_val_a_stratified_seeded_val_split_is_carved_from_train(tmp_path: Path) -> None:
    import shutil

    write_dataset(tmp_path, {"train": 40, "val": 4, "test": 4}, size=32, seed=2)
    shutil.rmtree(tmp_path / "val")
    train_all = scan_layout(tmp_path, ("train",)).files["train"]
    index = scan_layout(tmp_path, val_fraction=0.25, seed=7)
    train, val = index.files["train"], index.files["val"]
    assert sorted(train + val) == sorted(train_all) and not set(train) & set(val)
    n_pos = sum(y for _, y in train_all)
    assert sum(y for _, y in val) == round(0.25 * n_pos)  # stratified: each class's share
    assert sum(1 - y for _, y in val) == round(0.25 * (len(train_all) - n_pos))
    assert index.val_split == {"source": "carved from train (stratified)", "fraction": 0.25, "seed": 7, "n": len(val)}
    again = scan_layout(tmp_path, ("train", "val"), val_fraction=0.25, seed=7)
    assert again.files["val"] == val and again.files["train"] == train  # every worker carves the same split
    assert scan_layout(tmp_path, ("val",), val_fraction=0.25, seed=7).files["val"] == val
    assert scan_layout(tmp_path, val_fraction=0.25, seed=8).files["val"] != val


def test_a_val_folder_is_used_as_it_is(root: Path) -> None:
    index = scan_layout(root, val_fraction=0.5)
    assert len(index.files["val"]) == 4 and index.val_split == {"source": "folder", "n": 4}


def test_carve_refuses_bad_fractions_and_single_images() -> None:
    items = [("a", 0), ("b", 0), ("c", 1), ("d", 1)]
    with pytest.raises(DatasetLayoutError, match="between 0 and 1"):
        carve_val(items, 1.0, 0)
    with pytest.raises(DatasetLayoutError, match="too few NORMAL"):
        carve_val([("a", 0), ("c", 1), ("d", 1)], 0.5, 0)
    train, val = carve_val(items, 0.01, 0)  # at least one of each class, never the last one
    assert len(val) == 2 and {y for _, y in val} == {0, 1} and len(train) == 2
