"""The real chest X-rays (Kermany et al., CC BY 4.0) in ``../shared/data/chest-xray``, read where they are and
never copied into the project. Every test here skips, saying why, where that folder is absent (a user's clone);
CI has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from xraylab.settings import project_root

CHEST_XRAY = project_root().parent / "shared" / "data" / "chest-xray"
KAGGLE_224 = CHEST_XRAY / "kaggle-224"
FULL_RESOLUTION = CHEST_XRAY / "full-resolution"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if CHEST_XRAY.is_dir():
        return
    skip = pytest.mark.skip(reason=f"the real chest X-rays are not at {CHEST_XRAY} (a clone without ../shared: "
                                   "get the Kermany set from Kaggle or Mendeley, see README 'A model trained on real "
                                   "X-rays')")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)
