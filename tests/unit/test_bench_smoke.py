"""A small run of the serving benchmark's in-process parts (the full benchmark is `make bench`)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "serving.py"


def test_bench_limit_and_seed_parts_run_and_write_json(tmp_path: Path, model_key_pair) -> None:
    out = tmp_path / "serving.json"
    result = subprocess.run([sys.executable, str(BENCH), "--parts", "a,b", "--images", "12", "--batch-sizes", "4,8",
                             "--repeat", "1", "--real", "dicom", "--real-images", "3", "--out", str(out)],
                            capture_output=True, text=True, timeout=300,
                            env={"XRAYLAB_ENV_FILE": str(tmp_path / "none.env"), "XRAYLAB_STATE_DIR": str(tmp_path),
                                 "XRAYLAB_MODEL_SIGNING_KEY": str(model_key_pair.signing_key),
                                 "XRAYLAB_MODEL_TRUSTED_KEYS": str(model_key_pair.trusted_keys),
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["cores"] >= 1 and doc["model"] == "seed-cnn"
    for arch in ("seed-cnn", "xray-resnet"):
        assert doc["limit"][arch]["images_per_s"] > 0 and doc["limit"][arch]["best_batch"] in (4, 8)
    assert doc["seed"]["loaded_once_images_per_s"] > doc["seed"]["reload_per_event_images_per_s"] > 0
    assert "(a) limit seed-cnn" in result.stdout
    real = doc["real_size"]["dicom"]
    assert real["images"] == 3 and real["mean_image_mb"] > 2, "real-size: uncompressed 16-bit radiographs"
    assert real["limit"]["images_per_s"] > 0 and real["limit"]["mb_per_s"] > 0
    assert "real size, dicom" in result.stdout


def test_worklist_bench_times_every_query_on_sqlite(tmp_path: Path, model_key_pair) -> None:
    """The worklist benchmark at 2,000 studies (`make bench-worklist` runs 100,000 on MariaDB and SQLite)."""
    out = tmp_path / "worklist.json"
    result = subprocess.run([sys.executable, str(BENCH.parent / "worklist.py"), "--databases", "sqlite", "--studies",
                             "2000", "--repeat", "3", "--out", str(out)], capture_output=True, text=True, timeout=300,
                            env={"XRAYLAB_ENV_FILE": str(tmp_path / "none.env"), "XRAYLAB_STATE_DIR": str(tmp_path),
                                 "XRAYLAB_MODEL_SIGNING_KEY": str(model_key_pair.signing_key),
                                 "XRAYLAB_MODEL_TRUSTED_KEYS": str(model_key_pair.trusted_keys),
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = json.loads(out.read_text())["results"]
    assert run["database"] == "sqlite" and run["studies"] == 2000
    assert {"first page", "one hospital", "live-refresh poll", "handler (query + table + audit)",
            "a doctor of two hospitals"} <= set(run["timings"])
    assert all(t["median_ms"] > 0 for t in run["timings"].values())
    assert "first page" in result.stdout


def test_delivery_bench_ris_part_runs_and_writes_json(tmp_path: Path, model_key_pair) -> None:
    """The delivery benchmark's RIS part needs no stack: a listener of its own and an SQLite outbox."""
    out = tmp_path / "delivery.json"
    result = subprocess.run([sys.executable, str(BENCH.parent / "deliveries.py"), "--ris", "40", "--pacs", "0",
                             "--out", str(out)], capture_output=True, text=True, timeout=300,
                            env={"XRAYLAB_ENV_FILE": str(tmp_path / "none.env"), "XRAYLAB_STATE_DIR": str(tmp_path),
                                 "XRAYLAB_MODEL_SIGNING_KEY": str(model_key_pair.signing_key),
                                 "XRAYLAB_MODEL_TRUSTED_KEYS": str(model_key_pair.trusted_keys),
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    ris = json.loads(out.read_text())["ris"]
    assert ris["messages"] == ris["received"] == 40 and ris["messages_per_s"] > 0
    assert "RIS:" in result.stdout
