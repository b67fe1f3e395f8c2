"""`xraylab evaluate`, `xraylab models list|promote` and `xraylab train run` input errors, as a user runs them."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import xraylab
from train.bootstrap import train_bootstrap_model
from xraylab.synthetic import write_dataset


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, model_key_pair) -> Iterator[tuple[Path, str]]:
    """A signed bootstrap model, and the keys that signed it in the settings of the commands the tests run."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XRAYLAB_MODEL_SIGNING_KEY", str(model_key_pair.signing_key))
        env.setenv("XRAYLAB_MODEL_TRUSTED_KEYS", str(model_key_pair.trusted_keys))
        root = tmp_path_factory.mktemp("registry")
        card = train_bootstrap_model(root, n_train=32, n_test=8, n_val=32, epochs=1, seed=1, promote=True)
        yield root, card.version


def test_evaluate_any_version_on_a_folder(registry, tmp_path: Path) -> None:
    root, version = registry
    data = tmp_path / "data"
    write_dataset(data, {"test": 24}, size=160, seed=4)
    out = tmp_path / "eval"
    result = xraylab("evaluate", "--model", version, "--data", str(data), "--out", str(out),
                     env={"XRAYLAB_MODEL_DIR": str(root)})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert summary["model_version"] == version and summary["n"] == 24
    assert sum(summary["confusion_matrix"].values()) == 24
    assert set(summary["band_thresholds"]) == {"pneumonia_or_unsure", "pneumonia"}
    assert 0.0 <= summary["band_thresholds"]["pneumonia_or_unsure"]["sensitivity"] <= 1.0
    for name in ("metrics.json", "roc.png", "confusion_matrix.png", "reliability.png"):
        assert (out / name).stat().st_size > 0


def test_evaluate_bad_folder_and_unknown_model(registry, tmp_path: Path) -> None:
    root, version = registry
    bad = xraylab("evaluate", "--model", version, "--data", str(tmp_path), env={"XRAYLAB_MODEL_DIR": str(root)})
    assert bad.returncode == 2 and "missing split folder" in bad.stderr
    unknown = xraylab("evaluate", "--model", "nope", "--data", str(tmp_path), env={"XRAYLAB_MODEL_DIR": str(root)})
    assert unknown.returncode == 2 and "not found" in unknown.stderr


def test_models_list_and_promote(registry) -> None:
    root, version = registry
    listed = xraylab("models", "list", env={"XRAYLAB_MODEL_DIR": str(root)})
    assert listed.returncode == 0 and f"* {version}" in listed.stdout and "trained_on=synthetic" in listed.stdout
    missing = xraylab("models", "promote", "v-missing", env={"XRAYLAB_MODEL_DIR": str(root)})
    assert missing.returncode == 2 and "not found" in missing.stderr
    again = xraylab("models", "promote", version, env={"XRAYLAB_MODEL_DIR": str(root)})
    assert again.returncode == 0 and version in again.stdout


def test_train_run_rejects_a_bad_layout(tmp_path: Path) -> None:
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    result = xraylab("train", "run", "--data", str(tmp_path), env={"XRAYLAB_MODEL_DIR": str(tmp_path / "m")})
    assert result.returncode == 2 and result.stderr.startswith("error: ")


@pytest.mark.parametrize("option, value, message", [("--bands-sensitivity", "0.3", "--bands-sensitivity"),
                                                    ("--lr-schedule", "step", "--lr-schedule"),
                                                    ("--image-size", "8", "--image-size")])
def test_train_run_rejects_bad_options_before_training(tmp_path: Path, option: str, value: str, message: str) -> None:
    write_dataset(tmp_path / "data", {"train": 8, "test": 4}, size=32, seed=1)  # no val/: it would be carved
    result = xraylab("train", "run", "--data", str(tmp_path / "data"), option, value,
                     env={"XRAYLAB_MODEL_DIR": str(tmp_path / "m")})
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / "m").exists()
