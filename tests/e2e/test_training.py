"""Ray Train with 2 workers on generated data: a worker is SIGKILLed mid-run and the run resumes from
its checkpoint; the model learns, is evaluated and published; the running Serve app swaps to it
while requests keep flowing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from serve_app.app import AppArgs
from serve_app.classifier import ClassifierConfig
from tests.accounts import new_api_key
from train.distributed import TrainConfig
from xraylab.bands import Bands
from xraylab.db.session import Database, make_engine, upgrade_schema
from xraylab.registry import list_cards, promoted_version
from xraylab.settings import load_settings
from xraylab.synthetic import encode_jpeg, generate_xray, write_dataset

pytestmark = pytest.mark.e2e


def kill_rank1_in_epoch(progress: Path, epoch: int, done: threading.Event, killed: list[int]) -> None:
    while not done.is_set():
        try:
            info = json.loads((progress / "rank1.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            info = {}
        if info.get("epoch", 0) >= epoch and info.get("phase") == "train":
            os.kill(info["pid"], signal.SIGKILL)
            killed.append(info["pid"])
            return
        time.sleep(0.2)


def test_train_kill_resume_publish_and_hot_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_keys) -> None:
    from serve_app.launch import start_pipeline
    from train.bootstrap import train_bootstrap_model
    from train.job import train_and_publish

    monkeypatch.setenv("XRAYLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XRAYLAB_MODEL_DIR", str(tmp_path / "models"))
    settings = load_settings()
    data = tmp_path / "data"
    write_dataset(data, {"train": 192, "val": 48, "test": 80}, seed=5)
    first = train_bootstrap_model(settings.model_dir, n_train=64, n_test=16, epochs=1)
    upgrade_schema(make_engine(settings.DATABASE_URL))  # tests migrate on their own, as the demo does
    key = {"Authorization": f"Bearer {new_api_key(Database(settings.DATABASE_URL))}"}
    args = AppArgs(mount_ui=False, classifier=ClassifierConfig(model_poll_s=1.0))
    pipeline = start_pipeline(settings, args, ingest=False, num_cpus=2)
    try:
        assert requests.get(f"{pipeline.url}/healthz", timeout=60).json()["model_version"] == first.version
        progress = tmp_path / "progress"
        progress.mkdir()
        done, killed = threading.Event(), []
        killer = threading.Thread(target=kill_rank1_in_epoch, args=(progress, 3, done, killed), daemon=True)
        killer.start()
        cfg = TrainConfig(data=str(data), arch="seed-cnn", workers=2, epochs=4, batch_size=16, learning_rate=1e-3,
                          patience=4, storage_path=str(tmp_path / "runs"), progress_dir=str(progress))
        card, outcome = train_and_publish(cfg, registry=settings.model_dir, bands=Bands(), promote=True)
        done.set()

        assert killed, "a worker was killed mid-run"
        assert outcome.resumed_from_epoch is not None and 1 <= outcome.resumed_from_epoch <= 3
        assert [h["epoch"] for h in outcome.history] == [1, 2, 3, 4]
        test = card.metrics["test"]
        assert test["auc"] >= 0.8, f"the model should clearly learn, got test AUC {test['auc']:.3f}"
        assert test["n"] == 80 and sum(test["confusion_matrix"].values()) == 80
        version_dir = settings.model_dir / card.version
        for name in ("model.keras", "card.json", "metrics.json", "roc.png", "confusion_matrix.png", "reference.npz"):
            assert (version_dir / name).exists(), name
        reference = np.load(version_dir / "reference.npz")
        assert reference["embeddings"].shape[0] == reference["intensity"].shape[0] > 0
        assert card.data_fingerprint and card.trained_on == "synthetic"
        assert promoted_version(settings.model_dir) == card.version
        assert [c.version for c in list_cards(settings.model_dir)] == [first.version, card.version]

        # Serving swaps to the promoted version while requests keep coming; none fails.
        image = encode_jpeg(generate_xray(np.random.default_rng(1), True))
        versions, failures = [], []
        deadline = time.time() + 90
        while time.time() < deadline:
            response = requests.post(f"{pipeline.url}/v1/predict", data=image, headers=key, timeout=60)
            if response.status_code != 200:
                failures.append(response.status_code)
            else:
                versions.append(response.json()["model_version"])
            if versions and versions[-1] == card.version and len(versions) >= 5:
                break
        assert not failures
        assert versions[-1] == card.version
        assert requests.get(f"{pipeline.url}/healthz", timeout=30).json()["model_version"] == card.version
    finally:
        pipeline.stop()
