"""`xraylab monitor drift` and `xraylab monitor thresholds` as a user runs them: a JSON answer for a folder
of clean or blurred images, one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli import xraylab
from train.bootstrap import train_bootstrap_model
from xraylab.synthetic import apply_drift, encode_jpeg, generate_xray


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, model_key_pair) -> dict[str, str]:
    from xraylab.registry import FolderRegistry

    root = tmp_path_factory.mktemp("state")
    train_bootstrap_model(FolderRegistry(root / "models", keys=model_key_pair), n_train=96, n_test=16, n_val=64,
                          epochs=1, seed=2)  # signed with the tests' key, which the commands below trust
    env = {"XRAYLAB_STATE_DIR": str(root), "XRAYLAB_ENV_FILE": str(root / "none.env"),
           "XRAYLAB_DATABASE_URL": f"sqlite:///{root / 'x.db'}", "XRAYLAB_PROMETHEUS_PORT": "9",
           "XRAYLAB_MODEL_TRUSTED_KEYS": str(model_key_pair.trusted_keys)}
    assert xraylab("db", "upgrade", env=env).returncode == 0
    return env


def _folder(path: Path, n: int, drift: str | None, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = generate_xray(rng, bool(i % 2))
        if drift:
            pixels = apply_drift(pixels, drift, 1.0, rng)
        (path / f"sub{i % 3}").mkdir(parents=True, exist_ok=True)
        (path / f"sub{i % 3}" / f"{i}.jpeg").write_bytes(encode_jpeg(pixels))
    (path / "notes.txt").write_text("not an image")
    return path


def test_clean_folder_is_ok_and_a_blurred_one_critical(state, tmp_path: Path) -> None:
    clean = xraylab("monitor", "drift", "--images", str(_folder(tmp_path / "clean", 60, None, 5)), env=state)
    blurred = xraylab("monitor", "drift", "--images", str(_folder(tmp_path / "blur", 60, "blur", 6)), env=state)
    assert clean.returncode == 0 and blurred.returncode == 0, clean.stderr + blurred.stderr
    ok, bad = json.loads(clean.stdout), json.loads(blurred.stdout)
    assert ok["n_images"] == 60 and ok["status"] == "ok" and ok["image_drift"] < 0.42
    assert bad["status"] == "critical" and bad["image_drift"] > 0.55
    assert "sharpness" in [m["statistic"] for m in bad["moved"]]
    assert bad["most_atypical"][0]["file"].startswith("sub")


def test_stored_thresholds_decide_the_status(state, tmp_path: Path) -> None:
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"image": {"type": "drift", "soft": 0.0, "hard": 0.0}}))
    stored = xraylab("monitor", "thresholds", str(strict), env=state)
    assert stored.returncode == 0, stored.stderr
    assert "Prometheus not reloaded" in stored.stdout
    blurred = xraylab("monitor", "drift", "--images", str(_folder(tmp_path / "blur", 30, "brightness", 7)),
                      env=state)
    assert json.loads(blurred.stdout)["status"] == "critical"
    shown = xraylab("monitor", "thresholds", env=state)
    assert json.loads(shown.stdout) == {"image": {"type": "drift", "soft": 0.0, "hard": 0.0, "direction": "above",
                                                  "breaches": 1}}
    defaults = Path(__file__).resolve().parents[3] / "xraylab" / "monitor" / "default_thresholds.json"
    assert xraylab("monitor", "thresholds", str(defaults), env=state).returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (["monitor", "drift", "--images", "/nonexistent/folder"], "is not a folder"),
    (["monitor", "drift", "--images", "{empty}"], "no JPEG or PNG files"),
    (["monitor", "drift", "--images", "{empty}", "--model", "no-such-model"], "not found"),
    (["monitor", "thresholds", "{bad}"], "soft 0.9 is above hard 0.5"),
])
def test_bad_input_is_one_line_and_exit_2(state, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text(json.dumps({"image": {"type": "drift", "soft": 0.9, "hard": 0.5}}))
    args = [a.format(empty=tmp_path / "empty", bad=tmp_path / "bad.json") for a in args]
    result = xraylab(*args, env=state)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
