"""`make demo`'s main job, `xraylab demo`, end to end in a process of its own (the stack is the test run's)."""

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_pipeline_and_summarises() -> None:
    result = subprocess.run([str(ROOT / ".venv/bin/xraylab"), "demo", "--count", "4", "--pacs", "2",
                             "--no-serve-forever", "--timeout-s", "240"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DICOM studies sent to the PACS by C-STORE: 2" in result.stdout
    assert "predictions stored: 6" in result.stdout
    assert "Review app: http://127.0.0.1:8000/ui" in result.stdout
    assert "synthetic" in result.stdout
