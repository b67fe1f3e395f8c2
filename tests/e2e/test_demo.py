"""`make demo`'s main job, `xraylab demo`, end to end in a process of its own (the stack is the test run's): it
installs the shipped model trained on real X-rays and, where ../shared has them, uploads real test X-rays."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.realdata.conftest import KAGGLE_224
from xraylab.registry import FolderRegistry

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_pipeline_with_the_real_model_and_summarises(tmp_path: Path) -> None:
    # a registry of its own: the demo promotes the shipped model, and the other e2e modules serve the bootstrap one
    env = {**os.environ, "XRAYLAB_MODEL_DIR": str(tmp_path / "models")}
    result = subprocess.run([str(ROOT / ".venv/bin/xraylab"), "demo", "--count", "6", "--pacs", "2",
                             "--no-serve-forever", "--timeout-s", "240"], capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DICOM studies sent to the PACS by C-STORE: 2" in result.stdout
    assert "predictions stored: 8" in result.stdout
    assert "Review app: http://127.0.0.1:8000/ui" in result.stdout
    shipped = FolderRegistry(ROOT / "models")
    registry = FolderRegistry(tmp_path / "models")
    assert registry.promoted_version() == shipped.promoted_version()  # installed and promoted, nothing trained
    assert "research use only, not a medical device" in result.stdout and "synthetic" not in result.stdout
    if (KAGGLE_224 / "test").is_dir():
        assert f"images uploaded: 6 real X-rays from {KAGGLE_224 / 'test'}" in result.stdout
        assert "agreement of the uploaded images with their NORMAL/PNEUMONIA labels: score > 0.5 " in result.stdout
        assert "band (Pneumonia or Unsure for pneumonia) " in result.stdout
    else:
        assert "generated X-rays (no real X-rays at hand" in result.stdout
