"""The thresholds file: the reference monitor's shape, an explicit direction, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xraylab.monitor.thresholds import METRICS, Thresholds, ThresholdsError, default_thresholds, worst


def test_defaults_are_the_reference_monitors() -> None:
    t = default_thresholds()
    expected = {"image": (0.42, 0.55), "prediction": (0.2, 0.34), "accuracy": (0.8, 0.7), "precision": (0.7, 0.4),
                "recall": (0.8, 0.7), "f1_score": (0.7, 0.4)}
    for name, (soft, hard) in expected.items():
        assert (t.limits[name].soft, t.limits[name].hard) == (soft, hard)
    assert t.limits["image"].direction == "above" and t.limits["accuracy"].direction == "below"
    assert {limit.type for limit in t.limits.values()} == {"drift", "performance", "health"}


@pytest.mark.parametrize(("metric", "value", "status"), [
    ("image", 0.1, "ok"), ("image", 0.42, "ok"), ("image", 0.43, "warning"), ("image", 0.56, "critical"),
    ("accuracy", 0.95, "ok"), ("accuracy", 0.75, "warning"), ("accuracy", 0.69, "critical"),
    ("replicas_alive", 1, "ok"), ("replicas_alive", 0, "critical"), ("image", None, "ok"),
    ("specificity", 0.1, "ok"),  # no limit for it in the defaults
])
def test_status_follows_the_direction(metric: str, value: float | None, status: str) -> None:
    assert default_thresholds().status(metric, value) == status


def test_reference_file_without_direction_loads(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"image": {"type": "drift", "hard": 0.55, "soft": 0.42},
                                "recall": {"type": "performance", "hard": 0.7, "soft": 0.8, "breaches": 3}}))
    t = Thresholds.load(path)
    assert t.limits["recall"].breaches == 3 and t.limits["recall"].direction == "below"
    assert Thresholds.from_json(t.to_json()) == t  # stored and read back alike


@pytest.mark.parametrize(("data", "message"), [
    ({"image": {"type": "drift", "soft": 0.6, "hard": 0.5}}, "soft 0.6 is above hard 0.5"),
    ({"accuracy": {"type": "performance", "soft": 0.6, "hard": 0.7}}, "soft 0.6 is below hard 0.7"),
    ({"image": {"type": "drift", "soft": 0.4, "hard": 1.5}}, "outside [0, 1]"),
    ({"latency": {"type": "health", "soft": 1, "hard": 2}}, "unknown metric 'latency'"),
    ({"image": {"type": "performance", "soft": 0.8, "hard": 0.7}}, "type must be 'drift'"),
    ({"image": {"type": "drift", "soft": 0.4}}, "image: hard: Field required"),
    ({"image": {"type": "drift", "soft": 0.4, "hard": 0.5, "colour": "red"}}, "colour"),
    ({"image": {"type": "drift", "soft": 0.4, "hard": 0.5, "direction": "sideways"}}, "direction"),
    ({"image": 0.5}, "expected an object"),
    ([], "expected a JSON object"),
])
def test_bad_files_are_named(data: object, message: str) -> None:
    with pytest.raises(ThresholdsError) as info:
        Thresholds.parse(data, source="t.json")
    assert message in str(info.value) and str(info.value).startswith("t.json")


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match="not JSON"):
        Thresholds.from_json("{image: 1}")
    with pytest.raises(ThresholdsError, match="No such file"):
        Thresholds.load(tmp_path / "missing.json")


def test_every_known_metric_has_a_kind_and_worst() -> None:
    assert set(METRICS.values()) == {"drift", "performance", "health"}
    assert worst(["ok", "critical", "warning"]) == "critical" and worst([]) == "ok"
